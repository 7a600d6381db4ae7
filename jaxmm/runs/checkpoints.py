"""Orbax checkpoints of a run: the train state, the input position and the config.

A checkpoint is one orbax step directory under `workdir/checkpoints/` with
three items: `state` (the TrainState, sharded arrays), `data` (the input
iterator's position, JSON) and `config` (the run's config, JSON). Saving is
asynchronous; orbax writes each step to a temporary directory and renames it
when complete, so a process killed mid-save leaves the previous checkpoint as
the latest.

Whether a checkpoint is damaged is decided by its files, not by what a failed
restore raised (orbax re-raises tensorstore's errors as bare Exceptions, and a
restore also fails on a target of other shapes): `unreadable` reads every item
back as it was saved. A checkpoint that cannot be read (a truncated, deleted
or overwritten file) is moved to `workdir/damaged_checkpoints/` by `set_aside`,
never deleted, so that a run resumes from the newest intact one.
"""
from collections.abc import Iterator
import json
import logging
import math
import os
import re
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxmm import host
from jaxmm import storage
from jaxmm.errors import UserError

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"
# Bytes of arrays that `unreadable` holds in host memory at a time.
CHECK_BYTES = 1 << 30
# What a failed write raises: tensorstore's and orbax's ValueErrors, OSErrors, or a
# RuntimeError from orbax's background threads.
WRITE_ERRORS = (ValueError, OSError, RuntimeError)

log = logging.getLogger("jaxmm")


def _drop_closed_loop_callbacks() -> None:
  """Makes `sys.unraisablehook` (once) pass over tensorstore's late callbacks into orbax's
  closed event loop, and hand everything else on.

  When one array of a restore cannot be read, orbax ends its event loop while
  tensorstore still reads the others; each of those reads then reports
  RuntimeError('Event loop is closed') as unraisable, dozens of tracebacks that
  say nothing about the failure, which is raised (or handled) on its own.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_closed_loop_callbacks", False):
    return

  def hook(unraisable):
    if not (unraisable.exc_type is RuntimeError and
            str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)

  hook.drops_closed_loop_callbacks = True
  sys.unraisablehook = hook


def make_manager(workdir: str,
                 *,
                 max_to_keep: int | None = 3,
                 async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over workdir/checkpoints keeping the last `max_to_keep` steps."""
  handlers = {
      "state": ocp.StandardCheckpointHandler(),
      "data": ocp.JsonCheckpointHandler(),
      "config": ocp.JsonCheckpointHandler()
  }
  return make_folder_manager(workdir,
                             CHECKPOINT_DIR,
                             handlers,
                             max_to_keep=max_to_keep,
                             async_save=async_save,
                             read_only=read_only)


def make_folder_manager(workdir: str, folder: str, handlers: dict[str, Any], *,
                        max_to_keep: int | None, async_save: bool = True,
                        read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager of the items `handlers` names over workdir/`folder` (local or gs://),
  keeping the last `max_to_keep` steps (None: all)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                         create=not read_only,
                                         enable_async_checkpointing=async_save,
                                         read_only=read_only)
  directory = os.path.join(storage.absolute(workdir), folder)
  _drop_closed_loop_callbacks()  # before any read through this manager can fail
  host.configure_saves()
  if storage.is_file(directory):
    raise UserError(f"{directory} is a file, but the run keeps its {folder} there; move the "
                    "file away or choose another --workdir")
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


class SaveFailed(UserError):
  """Writing a checkpoint failed (disk full, permissions, a file where a folder should be)."""


def save_failed(manager: ocp.CheckpointManager, error: BaseException) -> SaveFailed:
  """The `SaveFailed` for `error`, raised writing through `manager`: what failed, what is kept."""
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
    raise save_failed(manager, e) from e


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
    raise save_failed(manager, e) from e


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


def state_metadata(manager: ocp.CheckpointManager, step: int, item: str = "state") -> Any:
  """The saved `item`'s tree of array metadata (shape, dtype), with no data read."""
  metadata = manager.item_metadata(step)[item]
  if metadata is None:  # orbax's answer when state/_METADATA is missing
    raise FileNotFoundError(f"{manager.directory}/{step}/{item}/_METADATA is missing")
  return metadata


def step_path(manager: ocp.CheckpointManager, step: int) -> str:
  """The folder of checkpoint `step`."""
  return os.path.join(str(manager.directory), str(step))


def read_arrays(state_dir: str, target: Any) -> Any:
  """The arrays of `target` from the saved state in `state_dir`.

  `target` is the saved tree or part of it: leaves as in `restore`, or
  `ocp.PLACEHOLDER` for arrays left unread.
  """
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
    return checkpointer.restore(state_dir,
                                args=ocp.args.PyTreeRestore(
                                    item=target,
                                    restore_args=ocp.checkpoint_utils.construct_restore_args(
                                        target),
                                    partial_restore=True))


def _host_targets(metadata: Any, max_bytes: int) -> Iterator[Any]:
  """Trees like `metadata` (the saved state's) that cover its arrays in turn, about
  `max_bytes` at a time: host numpy leaves for the arrays to read, `ocp.PLACEHOLDER` for
  the others."""
  leaves, treedef = jax.tree.flatten(metadata)
  groups, group, size = [], 0, 0  # groups[i]: the tree that reads leaf i
  for meta in leaves:
    if size >= max_bytes:
      group, size = group + 1, 0
    groups.append(group)
    size += math.prod(meta.shape) * np.dtype(meta.dtype).itemsize
  for reading in range(group + 1):
    yield treedef.unflatten([
        np.zeros(meta.shape, meta.dtype) if leaf_group == reading else ocp.PLACEHOLDER
        for meta, leaf_group in zip(leaves, groups)
    ])


def unreadable(manager: ocp.CheckpointManager,
               step: int,
               *,
               arrays: str = "state",
               json_items: tuple[str, ...] = ("config", "data")) -> Exception | None:
  """The error that reading checkpoint `step` back as saved raises, or None if all of it reads.

  Every item is read: the JSON items (the config, the input position) and
  each array of the `arrays` item (the state), into host memory `CHECK_BYTES`
  at a time, with targets taken from the checkpoint itself. So an error here
  is the files' (truncated, missing, overwritten), never a reader's target or
  mesh: a restore that failed on an intact checkpoint failed on what it asked
  for.
  """
  try:
    if json_items:
      restores = {item: ocp.args.JsonRestore() for item in json_items}
      manager.restore(step, args=ocp.args.Composite(**restores))
    state_dir = os.path.join(step_path(manager, step), arrays)
    for target in _host_targets(state_metadata(manager, step, arrays).tree, CHECK_BYTES):
      read_arrays(state_dir, target)
  except MemoryError:
    raise  # the host's limit, not the files'
  except Exception as e:  # pylint: disable=broad-except
    return e
  return None


# The JSON files of a checkpoint; a decoding error names none of them.
_JSON_FILES = ("metadata", "_METADATA", "_sharding", "_CHECKPOINT_METADATA")


def damaged_file(step_dir: str, error: BaseException) -> str:
  """The file under `step_dir` that `error` names (the longest such path), else the first of
  its JSON files that does not parse, else `step_dir`."""
  paths = re.findall(re.escape(step_dir) + r"[^\s\"'\\,]*", str(error))
  if paths:
    return max(paths, key=len)
  for path in storage.files_under(step_dir):
    if os.path.basename(path) in _JSON_FILES:
      try:
        json.loads(storage.read_text(path))
      except ValueError:
        return path
  return step_dir


def damage(step_dir: str, error: BaseException) -> str:
  """What `error` (from `unreadable`) says is wrong with the checkpoint in `step_dir`, in one
  line: the file that cannot be read and the error, cut short."""
  message = " ".join(str(error).split())
  return (f"cannot read {damaged_file(step_dir, error)} ({type(error).__name__}: "
          f"{message[:300]})")


def set_aside(manager: ocp.CheckpointManager,
              step: int,
              error: BaseException,
              *,
              damaged_dir: str = DAMAGED_DIR,
              what: str = "checkpoint") -> str:
  """Moves checkpoint `step` to workdir/`damaged_dir`/ with a warning; returns the new path.

  The manager is reloaded so that it no longer lists the step. `what` names the kind of
  checkpoint in the warning.
  """
  step_dir = step_path(manager, step)
  target_root = os.path.join(os.path.dirname(str(manager.directory)), damaged_dir)
  storage.make_dirs(target_root)
  target, n = os.path.join(target_root, str(step)), 1
  while storage.exists(target):
    target, n = os.path.join(target_root, f"{step}.{n}"), n + 1
  problem = damage(step_dir, error)
  storage.move(step_dir, target)
  manager.reload()
  log.warning("%s %d is damaged and was moved to %s: %s", what, step, target, problem)
  return target
