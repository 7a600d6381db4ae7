"""Orbax checkpoints of a run: the train state, the input position and the config.

A checkpoint is one orbax step directory under `workdir/checkpoints/` with
three items: `state` (the TrainState, sharded arrays), `data` (the input
iterator's position, JSON) and `config` (the run's config, JSON). Saving is
asynchronous; orbax writes each step to a temporary directory and renames it
when complete, so a process killed mid-save leaves the previous checkpoint as
the latest.

A checkpoint that cannot be read (a truncated, deleted or overwritten file)
is moved to `workdir/damaged_checkpoints/` by `set_aside`, never deleted, so
that a run resumes from the newest intact one.
"""
import json
import logging
import os
import re
from typing import Any

import orbax.checkpoint as ocp

from jaxmm import storage
from jaxmm.errors import UserError

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"
# What reading a damaged checkpoint raises: tensorstore and orbax errors are
# ValueErrors (so are JSON and UTF-8 decoding errors), missing files OSErrors.
DAMAGE_ERRORS = (ValueError, OSError)
# What a failed write raises: the same, or a RuntimeError from orbax's background threads.
WRITE_ERRORS = (ValueError, OSError, RuntimeError)

log = logging.getLogger("jaxmm")


def make_manager(workdir: str,
                 *,
                 max_to_keep: int | None = 3,
                 async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over workdir/checkpoints keeping the last `max_to_keep` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                         create=not read_only,
                                         enable_async_checkpointing=async_save,
                                         read_only=read_only)
  directory = os.path.join(storage.absolute(workdir), CHECKPOINT_DIR)
  if storage.is_file(directory):
    raise UserError(f"{directory} is a file, but the run keeps its checkpoints there; move the "
                    "file away or choose another --workdir")
  handlers = {
      "state": ocp.StandardCheckpointHandler(),
      "data": ocp.JsonCheckpointHandler(),
      "config": ocp.JsonCheckpointHandler()
  }
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


class SaveFailed(UserError):
  """Writing a checkpoint failed (disk full, permissions, a file where a folder should be)."""


def _save_failed(manager: ocp.CheckpointManager, error: BaseException) -> SaveFailed:
  message = " ".join(str(error).split())[:500] or type(error).__name__
  kept = manager.latest_step()
  kept = ("no checkpoint was written"
          if kept is None else f"checkpoint {kept} is the newest intact one")
  return SaveFailed(f"saving a checkpoint under {manager.directory} failed: {message}; {kept}. "
                    "Free space or fix the permissions there, then run the same command to resume")


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_position: dict,
         config_json: dict) -> None:
  """Starts saving (asynchronously) `state` and the input position as checkpoint `step`.

  Raises `SaveFailed` if this or an earlier save fails.
  """
  try:
    manager.save(step,
                 args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         data=ocp.args.JsonSave(data_position),
                                         config=ocp.args.JsonSave(config_json)))
  except WRITE_ERRORS as e:
    raise _save_failed(manager, e) from e


def raise_if_save_failed(manager: ocp.CheckpointManager) -> None:
  """Raises `SaveFailed` if a background save has finished with an error; never blocks.

  Called after every step, so that a failed save stops the run at once
  rather than at the next checkpoint (or, on several hosts, in a collective
  that never completes).
  """
  if not manager.is_saving_in_progress():
    finish(manager)


def finish(manager: ocp.CheckpointManager) -> None:
  """Waits for the save in progress; raises `SaveFailed` if it (or an earlier one) failed."""
  try:
    manager.wait_until_finished()
  except WRITE_ERRORS as e:
    raise _save_failed(manager, e) from e


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> tuple[Any, dict]:
  """(state, input position) of checkpoint `step`.

  `target` is a pytree like the state whose leaves say where each array goes:
  `jax.ShapeDtypeStruct(shape, dtype, sharding=...)` onto any mesh, or numpy
  arrays for host memory.
  """
  restored = manager.restore(step,
                             args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                     data=ocp.args.JsonRestore()))
  return restored["state"], restored["data"]


def restore_config(manager: ocp.CheckpointManager, step: int) -> dict:
  """The config saved with checkpoint `step`, as a JSON dict."""
  return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def state_metadata(manager: ocp.CheckpointManager, step: int) -> Any:
  """The saved state's tree of array metadata (shape, dtype), with no data read."""
  metadata = manager.item_metadata(step)["state"]
  if metadata is None:  # orbax's answer when state/_METADATA is missing
    raise FileNotFoundError(f"{manager.directory}/{step}/state/_METADATA is missing")
  return metadata


# The JSON files of a checkpoint; a decoding error names none of them.
_JSON_FILES = ("metadata", "_METADATA", "_sharding", "_CHECKPOINT_METADATA")


def damaged_file(step_dir: str, error: BaseException) -> str:
  """The file under `step_dir` that `error` names (the longest such path), else the first of
  its JSON files that does not parse, else `step_dir`."""
  paths = re.findall(re.escape(step_dir) + r"[^\s\"',]*", str(error))
  if paths:
    return max(paths, key=len)
  for path in storage.files_under(step_dir):
    if os.path.basename(path) in _JSON_FILES:
      try:
        json.loads(storage.read_text(path))
      except ValueError:
        return path
  return step_dir


def set_aside(manager: ocp.CheckpointManager, step: int, error: BaseException) -> str:
  """Moves checkpoint `step` to workdir/damaged_checkpoints/ with a warning; returns the new path.

  The manager is reloaded so that it no longer lists the step.
  """
  step_dir = os.path.join(str(manager.directory), str(step))
  where = damaged_file(step_dir, error)
  target_root = os.path.join(os.path.dirname(str(manager.directory)), DAMAGED_DIR)
  storage.make_dirs(target_root)
  target, n = os.path.join(target_root, str(step)), 1
  while storage.exists(target):
    target, n = os.path.join(target_root, f"{step}.{n}"), n + 1
  storage.move(step_dir, target)
  manager.reload()
  message = " ".join(str(error).split())
  log.warning("checkpoint %d is damaged and was moved to %s: cannot read %s (%s: %s)", step, target,
              where,
              type(error).__name__, message[:300])
  return target
