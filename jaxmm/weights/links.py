"""A table of links between a peer's tensors and jaxmm's parameters, and both conversions.

Each `Link` names a few tensors of the peer's checkpoint (by the peer's keys)
and the jaxmm parameters they become (by '/'-joined paths), with the two maps
between them. Most links are one tensor to one parameter (a transpose, a
reshape); a few are not: a fused q/k/v projection is three parameters, and a
position embedding may be folded together with a class token. One table
serves both directions, so an import and an export cannot disagree; and a
mismatch names both sides (the peer's key and jaxmm's path).

A peer format's module (e.g. `open_clip`) writes its table from the model's
config; this module checks a checkpoint against it and converts. The shapes a
checkpoint must have are those that `to_peer` gives jaxmm's parameter shapes,
worked out with `jax.eval_shape`, so `to_peer` is written with `jax.numpy`.
"""
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxmm.errors import UserError


@dataclasses.dataclass(frozen=True)
class Link:
  """Peer tensors `peer` <-> jaxmm parameters `params` ('/'-joined paths).

  to_peer(*params) -> the peer tensors, in `peer`'s order (jax.numpy, traceable).
  from_peer(*tensors, shapes=...) -> the parameters, in `params`' order, given
  their shapes; the tensors are float32 NumPy arrays.
  """
  peer: tuple[str, ...]
  params: tuple[str, ...]
  to_peer: Callable[..., tuple]
  from_peer: Callable[..., tuple]


def same(peer: str, param: str) -> Link:
  """One tensor as it is (reshaped to the parameter's shape, e.g. [1] <-> [])."""
  return Link((peer,), (param,), lambda p: (p,), lambda t, shapes: (t.reshape(shapes[0]),))


def _leaf(tree: Any, path: str) -> Any:
  for key in path.split("/"):
    tree = tree[key]
  return tree


def _nest(flat: dict[str, Any]) -> dict:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree = {}
  for path, value in flat.items():
    *parents, name = path.split("/")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[name] = value
  return tree


def peer_shapes(links: Sequence[Link], abstract_params: Any) -> dict[str, tuple[int, ...]]:
  """The peer key -> shape that a checkpoint of the model whose parameters (ShapeDtypeStructs)
  are `abstract_params` holds, in the table's order."""
  shapes = {}
  for link in links:
    tensors = jax.eval_shape(link.to_peer, *(_leaf(abstract_params, p) for p in link.params))
    shapes.update({key: tuple(t.shape) for key, t in zip(link.peer, tensors)})
  return shapes


def check_checkpoint(links: Sequence[Link], abstract_params: Any, shapes: dict[str, tuple],
                     what: str) -> None:
  """Raises `UserError` unless a checkpoint's tensors (key -> shape) are those of the model.

  The message names the first tensor, in the table's order, whose shape
  differs (both shapes, and the jaxmm parameter it becomes), else the first
  missing tensor, else the tensors the model has no place for; `what` is the
  checkpoint and the architecture it was read as, e.g. "x.safetensors (read
  as ViT-B-32)".
  """
  wanted = peer_shapes(links, abstract_params)
  for link in links:
    for key in link.peer:
      if key in shapes and shapes[key] != wanted[key]:
        raise UserError(f"{what}: tensor {key!r} has shape {list(shapes[key])}, the "
                        f"architecture's is {list(wanted[key])} (jaxmm's "
                        f"{', '.join(link.params)}); the file holds another architecture: pass "
                        "the one it was trained as")
  missing = [key for key in wanted if key not in shapes]
  if missing:
    held = ", ".join(repr(key) for key in list(shapes)[:3])
    raise UserError(f"{what}: tensor {missing[0]!r} is missing ({len(missing)} of the "
                    f"architecture's {len(wanted)} are; the file holds {held}, ...); the file "
                    "holds another architecture: pass the one it was trained as")
  extra = [key for key in shapes if key not in wanted]
  if extra:
    raise UserError(f"{what}: tensor {extra[0]!r} has no place in the architecture ({len(extra)} "
                    "such); the file holds another architecture: pass the one it was trained as")


def params_from_peer(links: Sequence[Link], abstract_params: Any,
                     tensors: dict[str, np.ndarray]) -> dict:
  """jaxmm's parameters (a nested dict of float32 NumPy arrays shaped as `abstract_params`) from
  a checkpoint's tensors that `check_checkpoint` accepted."""
  flat = {}
  for link in links:
    shapes = [tuple(_leaf(abstract_params, path).shape) for path in link.params]
    arrays = (np.asarray(tensors[key], np.float32) for key in link.peer)
    values = link.from_peer(*arrays, shapes=shapes)
    flat.update({path: np.asarray(value, np.float32) for path, value in zip(link.params, values)})
  return _nest(flat)


def peer_from_params(links: Sequence[Link], params: Any) -> dict[str, np.ndarray]:
  """The peer's tensors (key -> float32 NumPy array, in the table's order) of jaxmm `params`."""
  tensors = {}
  for link in links:
    values = link.to_peer(*(_leaf(params, path) for path in link.params))
    tensors.update({key: np.asarray(value, np.float32) for key, value in zip(link.peer, values)})
  return tensors
