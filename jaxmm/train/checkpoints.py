"""Orbax checkpoints of a run: the train state, the input position and the config.

A checkpoint is one orbax step directory under `workdir/checkpoints/` with
three items: `state` (the TrainState, sharded arrays), `data` (the input
iterator's position, JSON) and `config` (the run's config, JSON). Saving is
asynchronous; orbax writes each step to a temporary directory and renames it
when complete, so a process killed mid-save leaves the previous checkpoint as
the latest.
"""
import os
from typing import Any

import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


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
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  handlers = {
      "state": ocp.StandardCheckpointHandler(),
      "data": ocp.JsonCheckpointHandler(),
      "config": ocp.JsonCheckpointHandler()
  }
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_position: dict,
         config_json: dict) -> None:
  """Starts saving (asynchronously) `state` and the input position as checkpoint `step`."""
  manager.save(step,
               args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                       data=ocp.args.JsonSave(data_position),
                                       config=ocp.args.JsonSave(config_json)))


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
  return manager.item_metadata(step)["state"]
