"""Restore any run for a notebook: its config, step and parameters as host numpy.

  run = jaxmm.analysis.load_run("runs/siglip_shapes")
  run.config.model, run.step, run.params["img"]...

No mesh is needed: arrays come back whole, in host memory, whatever mesh the
run was trained on.
"""
import contextlib
import dataclasses
import json
import logging
import numbers
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxmm import config_loading
from jaxmm.train import checkpoints


@dataclasses.dataclass(frozen=True)
class Run:
  config: ml_collections.ConfigDict
  step: int
  params: Any  # pytree of np.ndarray
  opt_state: Any  # pytree of np.ndarray
  ema: dict[str, Any]  # EMA name -> params-shaped pytree of np.ndarray; {} if none
  model_state: dict[str, Any]  # e.g. {'batch_stats': ...}; {} if none
  data_position: dict
  workdir: str


@contextlib.contextmanager
def _read_only_manager(workdir: str):
  """A read-only manager of workdir's checkpoints, without orbax's notes about read-only mode."""
  if not os.path.isdir(os.path.join(workdir, checkpoints.CHECKPOINT_DIR)):
    raise FileNotFoundError(f"no run in {workdir!r}: it has no {checkpoints.CHECKPOINT_DIR}/ "
                            "folder")
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    manager = checkpoints.make_manager(workdir, read_only=True)
  finally:
    absl_logger.setLevel(level)
  try:
    yield manager
  finally:
    manager.close()


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps with a complete checkpoint in `workdir`, ascending."""
  with _read_only_manager(workdir) as manager:
    return sorted(manager.all_steps())


def load_run(workdir: str, step: int | None = None) -> Run:
  """The run in `workdir` at checkpoint `step` (an int; default: the latest)."""
  if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Integral)):
    raise TypeError(f"step must be an int or None, got {step!r}")
  with _read_only_manager(workdir) as manager:
    steps = sorted(manager.all_steps())
    if not steps:
      raise FileNotFoundError(f"no complete checkpoint in {workdir!r}")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise ValueError(f"no checkpoint at step {step} in {workdir!r}; steps saved: {steps}")
    target = jax.tree.map(lambda meta: np.zeros(meta.shape, meta.dtype),
                          checkpoints.state_metadata(manager, step))
    state, position = checkpoints.restore(manager, step, target)
    config = config_loading.config_from_json(json.dumps(checkpoints.restore_config(manager, step)))
  return Run(config=config,
             step=int(state["step"]),
             params=state["params"],
             opt_state=state["opt_state"],
             ema=state.get("ema", {}),
             model_state=state.get("model_state", {}),
             data_position=position,
             workdir=workdir)
