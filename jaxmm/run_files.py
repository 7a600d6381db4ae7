"""A run's workdir read without restoring any array: its checkpoint steps, the config saved
with each, and the metrics the train loop logged; and, for a path that holds no run, an
error that says what to pass instead."""
import contextlib
import difflib
import json
import logging
import math
import numbers
import os
import warnings
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxmm import config_loading
from jaxmm import errors
from jaxmm import storage
from jaxmm.train import checkpoints
from jaxmm.train.metrics import METRICS_FILE


class NoRun(errors.UserError, FileNotFoundError):
  """A path that holds no run, or no checkpoint at the step asked for; the message says what to
  pass instead."""


def _runs_in(folder: str) -> list[str]:
  """The subfolders of `folder` that hold a run's checkpoints/, sorted."""
  return [
      name for name in storage.list_dir(folder)
      if storage.is_dir(os.path.join(folder, name, checkpoints.CHECKPOINT_DIR))
  ]


def _no_run(workdir: str) -> NoRun:
  """The error for a `workdir` without a checkpoints/ folder."""
  path = storage.absolute(workdir)
  if storage.is_file(path):
    problem = "it is a file"
  elif not storage.exists(path):
    problem = "there is no such folder"
  else:
    problem = f"it has no {checkpoints.CHECKPOINT_DIR}/ folder"
  return NoRun(f"no run in {workdir!r}: {problem}; {_what_to_pass(workdir)}")


def _what_to_pass(workdir: str) -> str:
  """What to pass instead of `workdir`, which holds no run: the run it lies in, the runs it
  holds, a run with a similar name beside it, or else what a run's workdir is."""
  path = storage.absolute(workdir)
  for folder in (path, os.path.dirname(path)):  # <run>/checkpoints or <run>/checkpoints/<step>
    if os.path.basename(folder) == checkpoints.CHECKPOINT_DIR:
      run_dir = os.path.dirname(folder)
      keep = os.path.isabs(workdir) or not storage.is_local(workdir)
      run_dir = run_dir if keep else os.path.relpath(run_dir)
      return f"pass the run's workdir, {run_dir!r}, not a folder inside it"
  inside = [os.path.join(workdir, name) for name in _runs_in(path)]
  if inside:
    return f"it holds the runs {', '.join(map(repr, inside))}: pass one of them"
  near = difflib.get_close_matches(os.path.basename(path), _runs_in(os.path.dirname(path)), n=1)
  if near:
    return f"did you mean {os.path.join(os.path.dirname(workdir), near[0])!r}?"
  return "pass the workdir of a run (the --workdir of `jaxmm train`)"


@contextlib.contextmanager
def _quiet():
  """Holds back library notes (orbax's read-only notes, jax's platform notes, Python
  warnings) while a checkpoint is read; errors still show, and exceptions propagate."""
  loggers = [logging.getLogger(name) for name in ("absl", "jax")]
  levels = [logger.level for logger in loggers]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for logger in loggers:
      logger.setLevel(logging.ERROR)
    try:
      yield
    finally:
      for logger, level in zip(loggers, levels):
        logger.setLevel(level)


@contextlib.contextmanager
def read_only_manager(workdir: str):
  """A read-only orbax manager of workdir's checkpoints; library notes are held back while it
  is open. Raises `NoRun` if `workdir` has no checkpoints/ folder."""
  if not storage.is_dir(os.path.join(workdir, checkpoints.CHECKPOINT_DIR)):
    raise _no_run(workdir)
  with _quiet():
    manager = checkpoints.make_manager(workdir, read_only=True)
    try:
      yield manager
    finally:
      manager.close()


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps with a complete checkpoint in `workdir`, ascending."""
  with read_only_manager(workdir) as manager:
    return sorted(manager.all_steps())


def checkpoint_step(manager, workdir: str, step: int | None) -> int:
  """`step` if workdir has a checkpoint there, the latest one if `step` is None."""
  if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Integral)):
    raise TypeError(f"step must be an int or None, got {step!r}")
  steps = sorted(manager.all_steps())
  if not steps:
    raise NoRun(f"no run in {workdir!r}: its {checkpoints.CHECKPOINT_DIR}/ folder holds no "
                "complete checkpoint (training stopped, or is still running, before its first "
                f"save); resume it with `jaxmm train --config ... --workdir {workdir}`, or pass "
                "a workdir with a saved checkpoint")
  if step is None:
    return steps[-1]
  if step not in steps:
    raise NoRun(f"no checkpoint at step {step} in {workdir!r}; steps saved: {steps}; pass one of "
                "them, or no step for the latest")
  return int(step)


def saved_config(manager, step: int) -> ml_collections.ConfigDict:
  """The config saved with checkpoint `step`."""
  return config_loading.config_from_json(json.dumps(checkpoints.restore_config(manager, step)))


def run_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
  """The config saved with `workdir`'s checkpoint `step` (default: the latest), no arrays read.

  Raises `NoRun` as `jaxmm.analysis.load_run` does."""
  with read_only_manager(workdir) as manager:
    return saved_config(manager, checkpoint_step(manager, workdir, step))


def read_metrics(workdir: str) -> dict[str, np.ndarray]:
  """Every scalar the train loop logged to workdir/metrics.jsonl, as a table of columns.

  Returns {'step': int64 [R], name: float64 [R], ...} (names such as
  'train/loss' or 'eval/zero_shot/shape'): one row per logged step, steps
  ascending, NaN where a metric was not logged at that step. A step logged
  again after a resume keeps the values written last; a line cut short by a
  killed process is skipped. Without the file, the table has no rows.
  """
  if not storage.is_dir(workdir):
    raise _no_run(workdir)
  rows = {}
  path = os.path.join(workdir, METRICS_FILE)
  lines = storage.read_text(path).splitlines() if storage.is_file(path) else []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    rows.setdefault(int(record.pop("step")), {}).update(record)
  steps = sorted(rows)
  names = sorted({name for row in rows.values() for name in row})
  table = {"step": np.asarray(steps, np.int64)}
  for name in names:
    table[name] = np.asarray([rows[step].get(name, np.nan) for step in steps], np.float64)
  return table


def latest_metrics(table: dict[str, np.ndarray],
                   step: int | None = None) -> dict[str, tuple[int, float]]:
  """name -> (step, value): each metric's last value in `table` (`read_metrics`) logged at or
  before `step` (default: at any step); metrics not logged by then are left out."""
  rows = np.ones(len(table["step"]), bool) if step is None else table["step"] <= step
  latest = {}
  for name, column in table.items():
    logged = np.flatnonzero(rows & ~np.isnan(column))
    if name != "step" and logged.size:
      latest[name] = (int(table["step"][logged[-1]]), float(column[logged[-1]]))
  return latest


def run_summary(workdir: str, step: int | None = None) -> dict[str, Any]:
  """What `jaxmm inspect --run` shows, read without restoring any array.

  Returns {'workdir', 'step' (the checkpoint: `step`, default the latest),
  'steps' (every checkpoint saved), 'config' (the ConfigDict saved with it),
  'num_params', 'ema' (the averages' names), 'metrics' (`latest_metrics` at
  or before that step)}. Raises `NoRun` as `load_run` does.
  """
  with read_only_manager(workdir) as manager:
    step = checkpoint_step(manager, workdir, step)
    steps = sorted(manager.all_steps())
    config = saved_config(manager, step)
    metadata = checkpoints.state_metadata(manager, step)
  return dict(workdir=workdir,
              step=step,
              steps=steps,
              config=config,
              num_params=sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(metadata["params"])),
              ema=sorted(metadata.get("ema") or {}),
              metrics=latest_metrics(read_metrics(workdir), step))
