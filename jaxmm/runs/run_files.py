"""A run's workdir read without restoring any array: its checkpoint steps, the config saved
with each, and the metrics the train loop logged; and, for a path that holds no run, an
error that says what to pass instead.

Every reader of a checkpoint goes through `read_checkpoint`, which copes with the two ways
a checkpoint can fail under a reader: a run still training rotates it out mid-read, or its
files are damaged.
"""
from collections.abc import Callable
import contextlib
import difflib
import json
import logging
import math
import numbers
import os
import warnings
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np

from jaxmm import config_loading
from jaxmm import errors
from jaxmm import storage
from jaxmm.runs import checkpoints

log = logging.getLogger("jaxmm")

# The train loop's log of every scalar, one JSON object per logged step.
METRICS_FILE = "metrics.jsonl"

# How many times in a row `read_checkpoint` starts again on a newer checkpoint when a run
# that is training rotates out the one being read.
READ_TRIES = 5

Read = TypeVar("Read")


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
def quiet():
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
  with quiet():
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


def _step_to_read(manager, workdir: str, step: int | None, damaged: set[int]) -> int:
  """`checkpoint_step`, passing over the checkpoints found `damaged` when `step` is None."""
  chosen = checkpoint_step(manager, workdir, step)
  if step is not None:
    return chosen
  intact = [saved for saved in sorted(manager.all_steps()) if saved not in damaged]
  if not intact:
    raise errors.UserError(f"every checkpoint of {workdir!r} is damaged (steps {sorted(damaged)}, "
                           "as warned above); `jaxmm train` with this --workdir moves them to "
                           f"{checkpoints.DAMAGED_DIR}/ and trains afresh")
  return intact[-1]


def _rotated_out(manager, chosen: int, step: int | None, damaged: set[int]) -> bool:
  """Whether checkpoint `chosen` is gone from the manager's reloaded list, or (reading the
  newest, `step` None) a newer one than it has appeared: the run is still training."""
  manager.reload()
  steps = set(manager.all_steps())
  return chosen not in steps or (step is None and max(steps - damaged) > chosen)


def read_checkpoint(manager, workdir: str, step: int | None,
                    read: Callable[[Any, int], Read]) -> tuple[int, Read]:
  """(the step read, `read(manager, step)`) for workdir's checkpoint `step` (default: the
  newest one that reads back); `manager` is a `read_only_manager` of workdir.

  A run still training may rotate the checkpoint out while it is read: `read`
  then starts again on the newest one (a `step` that is gone is a `NoRun`
  naming the steps saved now). When `read` fails and the checkpoint's own
  files do not read back (`checkpoints.unreadable`), the newest older one is
  read instead, with a warning; a damaged `step` is a `UserError` naming the
  file. Nothing is moved: only `jaxmm train`, which holds the workdir, sets a
  damaged checkpoint aside. Anything else `read` raises, a `UserError` or a
  failure on an intact checkpoint, is raised as it is.
  """
  damaged, rotations = set(), 0
  while True:
    chosen = _step_to_read(manager, workdir, step, damaged)
    try:
      return chosen, read(manager, chosen)
    except errors.UserError:
      raise
    except Exception as error:  # pylint: disable=broad-except
      rotated = _rotated_out(manager, chosen, step, damaged)
      if not rotated:
        problem = checkpoints.unreadable(manager, chosen)
        if problem is None:
          raise
        # A second look, since a checkpoint half deleted reads as damaged.
        rotated = _rotated_out(manager, chosen, step, damaged)
      if rotated:
        rotations += 1
        if rotations == READ_TRIES:
          raise errors.UserError(
              f"the checkpoints of {workdir!r} were rotated out {READ_TRIES} times while being "
              "read: the run training there saves faster than they can be read; read it once it "
              "stops, or have it keep more (--config.keep_checkpoints)") from error
        continue
      what = checkpoints.damage(checkpoints.step_path(manager, chosen), problem)
      if step is not None:
        others = sorted(set(manager.all_steps()) - {chosen})
        raise errors.UserError(f"checkpoint {chosen} of {workdir!r} is damaged: {what}; pass "
                               f"another step (saved: {others}), or none for the newest intact "
                               "one") from error
      log.warning("checkpoint %d of %s is damaged, reading the one before: %s", chosen, workdir,
                  what)
      damaged.add(chosen)


def saved_config(manager, step: int) -> ml_collections.ConfigDict:
  """The config saved with checkpoint `step`."""
  return config_loading.config_from_json(json.dumps(checkpoints.restore_config(manager, step)))


def run_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
  """The config saved with `workdir`'s checkpoint `step` (default: the latest), no arrays read.

  Raises `NoRun` as `jaxmm.analysis.load_run` does."""
  with read_only_manager(workdir) as manager:
    return read_checkpoint(manager, workdir, step, saved_config)[1]


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


def _summary_parts(manager, step: int) -> tuple[list[int], ml_collections.ConfigDict, Any]:
  """(every step saved, the config, the state's metadata) of checkpoint `step`."""
  return sorted(manager.all_steps()), saved_config(manager, step), checkpoints.state_metadata(
      manager, step)


def run_summary(workdir: str, step: int | None = None) -> dict[str, Any]:
  """What `jaxmm inspect --run` shows, read without restoring any array.

  Returns {'workdir', 'step' (the checkpoint: `step`, default the latest),
  'steps' (every checkpoint saved), 'config' (the ConfigDict saved with it),
  'num_params', 'ema' (the averages' names), 'metrics' (`latest_metrics` at
  or before that step)}. Raises `NoRun` as `load_run` does.
  """
  with read_only_manager(workdir) as manager:
    step, (steps, config, metadata) = read_checkpoint(manager, workdir, step, _summary_parts)
  return dict(workdir=workdir,
              step=step,
              steps=steps,
              config=config,
              num_params=sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(metadata["params"])),
              ema=sorted(metadata.get("ema") or {}),
              metrics=latest_metrics(read_metrics(workdir), step))
