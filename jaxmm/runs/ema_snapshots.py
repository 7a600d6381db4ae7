"""EMA-only snapshots of a run's power EMAs, the raw material of post-hoc EMA.

With `config.ema.snapshot_every=N` the train loop writes every power EMA
(`sigma_rel_*`) every N steps and at the last step as one orbax step under
`workdir/ema_snapshots/STEP/`, sharded like the params and never rotated out.
They are written like checkpoints (asynchronously, by the manager of
`jaxmm.runs.checkpoints`, so a killed process leaves no partial step) and a
damaged one is set aside to `workdir/damaged_ema_snapshots/`.
"""
from typing import Any

import orbax.checkpoint as ocp

from jaxmm.runs import checkpoints

SNAPSHOT_DIR = "ema_snapshots"
DAMAGED_DIR = "damaged_ema_snapshots"
# The one item of a snapshot: {name: params-shaped tree} of the power EMAs.
ITEM = "ema"


def make_manager(workdir: str, *, read_only: bool = False) -> ocp.CheckpointManager:
  """A manager of workdir/ema_snapshots that keeps every step."""
  return checkpoints.make_folder_manager(workdir,
                                         SNAPSHOT_DIR, {ITEM: ocp.StandardCheckpointHandler()},
                                         max_to_keep=None,
                                         read_only=read_only)


def unreadable(manager: ocp.CheckpointManager, step: int) -> Exception | None:
  """`checkpoints.unreadable` for snapshot `step`: its error, None if every array reads back."""
  return checkpoints.unreadable(manager, step, arrays=ITEM, json_items=())


def set_aside(manager: ocp.CheckpointManager, step: int, error: BaseException) -> str:
  """Moves damaged snapshot `step` to workdir/damaged_ema_snapshots/; returns its new path."""
  return checkpoints.set_aside(manager, step, error, damaged_dir=DAMAGED_DIR, what="EMA snapshot")


def save(manager: ocp.CheckpointManager, step: int, averages: dict[str, Any]) -> None:
  """Starts writing `averages` ({name: params}) as snapshot `step` (asynchronously).

  A run resumed from an earlier checkpoint finds the snapshots its killed
  process wrote after it: one that reads back is kept (an exact resume would
  write the same bits), a damaged one is set aside and written again. Raises
  `checkpoints.SaveFailed` if this or an earlier write fails.
  """
  if step in manager.all_steps():
    checkpoints.finish(manager)
    damage = unreadable(manager, step)
    if damage is None:
      return
    set_aside(manager, step, damage)
  try:
    # force: orbax passes over, silently, a step below the newest one saved, such as a damaged
    # snapshot set aside before a newer intact one.
    manager.save(step,
                 args=ocp.args.Composite(**{ITEM: ocp.args.StandardSave(averages)}),
                 force=True)
  except checkpoints.WRITE_ERRORS as e:
    raise checkpoints.save_failed(manager, e) from e
