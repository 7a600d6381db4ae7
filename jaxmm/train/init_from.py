"""Start a new run's parameter subtrees from another run's checkpoint (LiT, Zhai et al. 2022).

`config.init_from`: `workdir` (the source run; None: nothing to do), `step`
(None: its latest checkpoint) and `subtrees`, a mapping {target path: source
path} of '/'-joined keys under the parameters, e.g. {'image_tower':
'image_tower'}. Orbax reads only those arrays of the source checkpoint, each
straight into the shards of the parameter it replaces, so no host holds a
whole tower. The loop applies this once, to a freshly initialised state:
a resumed run already holds the copied (and since trained) values.
"""
import contextlib
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxmm.errors import UserError
from jaxmm.runs import run_files
from jaxmm import storage
from jaxmm.runs import checkpoints


def _subtree(tree: Any, path: str, what: str) -> Any:
  """tree['a']['b'] for path 'a/b'; `UserError` naming the keys there when it is missing."""
  node = tree
  for key in path.split("/"):
    if not hasattr(node, "keys") or key not in node:
      keys = sorted(node.keys()) if hasattr(node, "keys") else []
      raise UserError(f"init_from.subtrees: {path!r} is not a subtree of {what}; at {key!r} "
                      f"the keys are {keys}")
    node = node[key]
  return node


@contextlib.contextmanager
def _source_manager(workdir: str):
  """`run_files.read_only_manager` of the source run; a missing run or checkpoint names
  init_from.workdir and, for a relative path, the folder it was looked for in."""
  try:
    with run_files.read_only_manager(workdir) as manager:
      yield manager
  except run_files.NoRun as e:
    path = storage.absolute(workdir)
    where = "" if path == workdir else f" (looked for in {path}, from the current folder)"
    raise UserError(f"init_from.workdir={workdir!r}{where}: {e}") from e


def _nest(path: str, value: Any) -> dict:
  """{'a': {'b': value}} for path 'a/b'."""
  for key in reversed(path.split("/")):
    value = {key: value}
  return value


def _merge(a: dict, b: dict) -> dict:
  """The union of two nested dicts of disjoint leaves."""
  merged = dict(a)
  for key, value in b.items():
    merged[key] = _merge(merged[key], value) if key in merged else value
  return merged


def _shapes(tree: Any) -> Any:
  """The tree of its leaves' shapes: equal for two trees of the same structure and shapes."""
  return jax.tree.map(lambda a: tuple(a.shape), tree)


def _replace(tree: dict, path: str, value: Any) -> dict:
  """A copy of the nested dict `tree` with the subtree at `path` replaced by `value`."""
  key, _, rest = path.partition("/")
  return dict(tree, **{key: _replace(tree[key], rest, value) if rest else value})


def _read_subtrees(manager, step: int, *, workdir: str, mapping: dict, params: Any,
                   shardings: Any) -> dict:
  """The source subtrees of `mapping` from checkpoint `step` of the source run, each read in
  the dtype of the target subtree of `params` and into its shards."""
  source_params = checkpoints.state_metadata(manager, step)["params"]
  target = {}
  for to, source in mapping.items():
    target_params = _subtree(params, to, "this run's parameters")
    saved = _subtree(source_params, source, f"the parameters of {workdir!r} at step {step}")
    if _shapes(target_params) != _shapes(saved):
      raise UserError(f"init_from.subtrees: {to!r} and {source!r} of {workdir!r} differ in "
                      "structure or shapes; map subtrees of the same architecture")
    wanted = jax.tree.map(lambda p, s: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s),
                          target_params, _subtree(shardings.params, to, "the shardings"))
    target = _merge(target, _nest(source, wanted))
  state_dir = os.path.join(checkpoints.step_path(manager, step), "state")
  return checkpoints.read_arrays(state_dir, {"params": target})["params"]


def apply(state: Any, init_from: ml_collections.ConfigDict | None, shardings: Any) -> Any:
  """`state` with each target subtree of its params replaced by the source run's subtree.

  `shardings` is the state's tree of shardings: each array is read into its
  target's sharding and dtype. Raises `UserError` (one line) when the source
  run has no checkpoint (at `step`), a path is missing on either side, or the
  two subtrees differ in structure or shapes. The source run is read as
  `run_files.read_checkpoint` reads it: it may be training, and a damaged
  checkpoint of it is passed over with a warning.
  """
  if init_from is None or init_from.workdir is None:
    return state
  workdir, mapping = init_from.workdir, dict(init_from.subtrees)
  if not mapping:
    raise UserError(f"init_from.workdir={workdir!r} names no subtrees; set "
                    "init_from.subtrees={target path: source path}, e.g. {'image_tower': "
                    "'image_tower'}")
  read = functools.partial(_read_subtrees,
                           workdir=workdir,
                           mapping=mapping,
                           params=state.params,
                           shardings=shardings)
  with _source_manager(workdir) as manager:
    _, restored = run_files.read_checkpoint(manager, workdir, init_from.step, read)

  def copied_into(tree):
    # Each tree gets its own buffers: the train step donates params and averages separately.
    for to, source in mapping.items():
      arrays = _subtree(restored, source, "the arrays read")
      tree = _replace(tree, to, jax.tree.map(jnp.copy, arrays))
    return tree

  # The averages start from the copied values too, as `ema.init` starts them from the params.
  return state.replace(params=copied_into(state.params),
                       ema={name: copied_into(average) for name, average in state.ema.items()})
