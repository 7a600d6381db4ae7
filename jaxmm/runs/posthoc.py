"""Post-hoc EMA of a run: the power EMA of any σ_rel rebuilt from its EMA snapshots, and the
averages `jaxmm ema` writes from them.

`reconstruct` weighs every power EMA of every snapshot up to the chosen step
by the least-squares coefficients of EDM2's Algorithm 3
(`jaxmm.train.posthoc_ema.coefficients`) and sums them, one snapshot in
memory at a time. A damaged snapshot is passed over with a warning, as a
damaged checkpoint is by `load_run`.

`write` keeps a reconstruction as a named average, 'posthoc_sigma_rel_0.05',
under workdir/posthoc_ema/STEP/NAME/; `load_run` at that step lists it in
`Run.ema` beside the tracked averages, so sampling and judging take it by name.
"""
import contextlib
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxmm import errors
from jaxmm import storage
from jaxmm.runs import checkpoints
from jaxmm.runs import ema_snapshots
from jaxmm.runs import run_files
from jaxmm.train import ema as ema_lib
from jaxmm.train import posthoc_ema

log = logging.getLogger("jaxmm")

POSTHOC_DIR = "posthoc_ema"


def average_name(sigma_rel: float) -> str:
  """The name of a reconstructed average, e.g. 'posthoc_sigma_rel_0.05'."""
  return f"posthoc_sigma_rel_{sigma_rel:g}"


class _Damaged(Exception):
  """Snapshot `step` does not read back: `problem` is what reading it raised."""

  def __init__(self, step: int, problem: BaseException):
    super().__init__(step, problem)
    self.step, self.problem = step, problem


@contextlib.contextmanager
def _snapshots(workdir: str):
  """A read-only manager of workdir's snapshots and their steps; a `UserError` if none."""
  folder = os.path.join(storage.absolute(workdir), ema_snapshots.SNAPSHOT_DIR)
  with run_files.quiet():
    manager = (ema_snapshots.make_manager(workdir, read_only=True)
               if storage.is_dir(folder) else None)
    try:
      steps = sorted(manager.all_steps()) if manager else []
      if not steps:
        raise errors.UserError(f"{workdir!r} has no EMA snapshots ({folder} holds none); "
                               "post-hoc EMA needs a run trained with "
                               "--config.ema.snapshot_every=N")
      yield manager, steps
    finally:
      if manager:
        manager.close()


def snapshots_up_to(workdir: str, steps: list[int], step: int | None) -> list[int]:
  """The snapshot `steps` at or before `step` (None: all); a `UserError` unless there are two."""
  used = [s for s in steps if step is None or s <= step]
  if len(used) < 2:
    at = steps[-1] if step is None and steps else step
    raise errors.UserError(f"post-hoc EMA at step {at} needs two EMA snapshots up to it, and "
                           f"{workdir!r} has {used or 'none'} (intact snapshots at {steps}); "
                           "pass a step at or after the second")
  return used


def snapshot_steps(workdir: str) -> list[int]:
  """The steps of workdir's EMA snapshots, ascending; a `UserError` if there are none."""
  with _snapshots(workdir) as (_, steps):
    return steps


@jax.jit
def _add_scaled(total, weight, tree):
  """total + weight·tree, leaf by leaf; compiled once, and run where `tree` lies."""
  return jax.tree.map(lambda t, p: t + weight.astype(p.dtype) * p, total, tree)


def read_target(params: Any) -> Any:
  """A target that reads arrays like `params`: host numpy leaves for numpy ones, and
  `jax.ShapeDtypeStruct`s with their shardings for jax Arrays."""

  def like(leaf):
    if isinstance(leaf, jax.Array):
      return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    return np.zeros(leaf.shape, leaf.dtype)

  return jax.tree.map(like, params)


def _read(manager, step: int, names: list[str], target: Any) -> dict[str, Any]:
  """{name: params} of snapshot `step`, read as `target` (`read_target`) says."""
  item_dir = os.path.join(checkpoints.step_path(manager, step), ema_snapshots.ITEM)
  try:
    return checkpoints.read_arrays(item_dir, {name: target for name in names})
  except Exception as error:  # pylint: disable=broad-except
    problem = ema_snapshots.unreadable(manager, step)
    if problem is None:
      raise
    raise _Damaged(step, problem) from error


def _combine(manager, steps: list[int], names: list[str], weights: np.ndarray, target: Any):
  """Σ weights · (the averages `names` of snapshots `steps`, in that order), float32."""
  total, weights = None, iter(weights.astype(np.float32))
  for step in steps:
    averages = _read(manager, step, names, target)
    for name in names:
      if total is None:
        total = jax.tree.map(lambda p: p * 0, averages[name])
      total = _add_scaled(total, next(weights), averages[name])
  return total


def reconstruct(workdir: str,
                config,
                sigma_rel: float,
                params: Any,
                *,
                step: int | None = None,
                profiles: list[str] | None = None) -> Any:
  """The params of the power EMA with `sigma_rel` after `step` updates, from the snapshots.

  Args:
    workdir, config: the run and its config (whose ema.sigma_rels name the
      snapshots' averages).
    sigma_rel: the wanted profile's relative std, in (0, 0.28).
    params: the run's params, host numpy or sharded jax Arrays: the result
      is of the same kind and sharding.
    step: the time t of the wanted average (default: the latest snapshot's);
      the snapshots up to it are used, and there must be two.
    profiles: the snapshots' averages to combine (default: every power EMA),
      e.g. ['sigma_rel_0.05', 'sigma_rel_0.1'].

  Raises:
    UserError: σ_rel out of range, no snapshots, fewer than two up to `step`,
      or a profile the run does not track.
  """
  ema_lib.check_sigma_rel(sigma_rel, "sigma_rel")
  sigma_rels = ema_lib.power_sigma_rels(config.ema)
  names = list(sigma_rels) if profiles is None else list(profiles)
  unknown = sorted(set(names) - set(sigma_rels))
  if unknown or not names:
    raise errors.UserError(f"profiles {names} must be some of the run's power EMAs "
                           f"{list(sigma_rels)}")
  target = read_target(params)
  if step is not None:
    errors.integer_at_least("step", step, 1)
  with _snapshots(workdir) as (manager, steps):
    damaged = set()
    while True:
      used = snapshots_up_to(workdir, [s for s in steps if s not in damaged], step)
      t = used[-1] if step is None else step
      weights = posthoc_ema.coefficients([s for s in used for _ in names],
                                         [ema_lib.power_gamma(sigma_rels[n]) for _ in used
                                          for n in names], t, ema_lib.power_gamma(sigma_rel))
      try:
        total = _combine(manager, used, names, weights, target)
      except _Damaged as e:
        log.warning("EMA snapshot %d of %s is damaged, reconstructing without it: %s", e.step,
                    workdir, checkpoints.damage(checkpoints.step_path(manager, e.step), e.problem))
        damaged.add(e.step)
        continue
      on_host = not isinstance(jax.tree.leaves(params)[0], jax.Array)
      return jax.device_get(total) if on_host else total


def write(workdir: str, step: int, name: str, params: Any) -> str:
  """Saves `params` as the average `name` of checkpoint `step`; returns its folder."""
  path = os.path.join(storage.absolute(workdir), POSTHOC_DIR, str(step), name)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, params, force=True)
    checkpointer.wait_until_finished()
  return path


def read_written(workdir: str, step: int, params: Any) -> dict[str, Any]:
  """{name: average} of the averages `write` saved at `step`, each read like `params` (host
  numpy arrays, or sharded jax Arrays whose shardings it takes)."""
  folder = os.path.join(storage.absolute(workdir), POSTHOC_DIR, str(step))
  if not storage.is_dir(folder):
    return {}
  target = read_target(params)
  with ocp.StandardCheckpointer() as checkpointer:
    return {
        name: checkpointer.restore(os.path.join(folder, name), target)
        for name in sorted(storage.list_dir(folder))
    }
