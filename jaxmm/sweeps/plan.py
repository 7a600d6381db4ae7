"""What a sweep runs: a config file's `get_sweep(arg)` points, checked, named and recorded.

`plan(spec, workdir, base_overrides)` loads the config and its sweep, checks
every point's overrides against the config before anything runs, and names
each point's run folder `workdir/<name>` after its overrides
(`lr=0.001_seed=0`). `workdir/sweep.json` records the plan for reruns and
`jaxmm sweep --summarize`:

  {"config": "configs/siglip_shapes.py", "arg": null, "base_overrides": ["total_steps=100"],
   "points": {"lr=0.001_seed=0": {"optim.lr": 0.001, "seed": 0}, ...}}

A rerun of the sweep must give the same command-line overrides (in effect) and
the same overrides under each recorded point name (`check_record`): finished
points are skipped, so they would not match the rest. Each point's folder gets
`sweep_outcome.json`, how its latest run by the sweep ended
(`record_outcome`), which tells a diverged or failed point from one that
was stopped and resumes:

  {"outcome": "diverged", "exit_status": 2,
   "error": "training diverged at step 1: non-finite loss=nan, ...; stopped without ..."}
"""
import copy
import dataclasses
import json
import os
import re
import shlex
from typing import Any

import ml_collections

from jaxmm import config_loading
from jaxmm.errors import UserError
from jaxmm import storage

SWEEP_FILE = "sweep.json"
CONFIG_FILE = "config.json"  # written by `jaxmm train` into every run folder
MAX_NAME_LENGTH = 80  # longer names are cut, after an index prefix that keeps them unique

OUTCOME_FILE = "sweep_outcome.json"  # in each point's folder

FINISHED, PARTIAL, NOT_STARTED = "finished", "partial", "not started"
# How a point's run by the sweep ended (`record_outcome`); RUNNING until it ends.
RUNNING, DONE, STOPPED, DIVERGED, FAILED = "running", "done", "stopped", "diverged", "failed"


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep."""
  name: str  # the run folder's name under the sweep's workdir
  overrides: dict[str, Any]  # dotted config key -> value
  total_steps: int  # of the resolved config: the run is finished once this step is saved


@dataclasses.dataclass(frozen=True)
class Sweep:
  """The points of a config's get_sweep(), each to run into `workdir/<point.name>`."""
  spec: str  # FILE.py[:ARG] as given to --config
  workdir: str
  base_overrides: list[str]  # 'KEY=VALUE' from the command line, applied before each point's
  points: list[Point]

  def point_dir(self, point: Point) -> str:
    return os.path.join(self.workdir, point.name)

  def train_command(self, point: Point, python: str) -> list[str]:
    """The `jaxmm train` command line of `point`: base overrides first, then the point's."""
    overrides = self.base_overrides + override_args(point.overrides)
    return ([
        python, "-m", "jaxmm.commands.cli", "train", "--config", self.spec, "--workdir",
        self.point_dir(point)
    ] + [config_loading.OVERRIDE_PREFIX + o for o in overrides])


def plan(spec: str, workdir: str, base_overrides: list[str]) -> Sweep:
  """The sweep of config `spec` ('FILE.py[:ARG]') into `workdir`, every point checked."""
  config = config_loading.load_config(spec)
  config_loading.apply_overrides(config, base_overrides)
  path, arg = config_loading.split_spec(spec)
  overrides = _load_points(path, arg)
  names = point_names(overrides)
  points = [
      Point(name, point, _total_steps(config, number, name, point))
      for number, (name, point) in enumerate(zip(names, overrides), start=1)
  ]
  return Sweep(spec, workdir, list(base_overrides), points)


def _load_points(path: str, arg: str | None) -> list[dict[str, Any]]:
  """`get_sweep(arg)` of the config file at `path` (no argument when `arg` is None)."""
  module = config_loading.import_config_file(path)
  if not hasattr(module, "get_sweep"):
    raise UserError(f"config file {path!r} defines no get_sweep(); define get_sweep(arg) "
                    "returning a list of override dicts, e.g. "
                    "jaxmm.sweeps.product({'optim.lr': [1e-3, 3e-4]}, seed=[0, 1])")
  points = config_loading.call_in_file(path, module.get_sweep, arg)
  if (not isinstance(points, list) or not points or
      not all(isinstance(p, dict) and all(isinstance(k, str) for k in p) for p in points)):
    raise UserError(f"get_sweep() of {path!r} returned {points!r:.200}; return a non-empty list "
                    "of dicts of dotted config key -> value (see jaxmm.sweeps)")
  return points


def _total_steps(config: ml_collections.ConfigDict, number: int, name: str,
                 overrides: dict[str, Any]) -> int:
  """The point's total_steps, after checking its overrides as `jaxmm train` will read them."""
  point_config = copy.deepcopy(config)  # deepcopy keeps field references (data.max_len)
  try:
    config_loading.apply_overrides(point_config, override_args(overrides))
  except UserError as e:
    raise UserError(f"sweep point {number} ({name}): {e}") from e
  return point_config.total_steps


def override_args(overrides: dict[str, Any]) -> list[str]:
  """{'optim.lr': 0.001, 'mesh.shape': (1, 2)} -> ['optim.lr=0.001', 'mesh.shape=(1, 2)'].

  `str` gives text that `config_loading.apply_overrides` reads back as the same value.
  """
  return [f"{key}={value}" for key, value in overrides.items()]


def point_names(points: list[dict[str, Any]]) -> list[str]:
  """Short, unique, filesystem-safe names of the points, in order: 'lr=0.001_seed=0'.

  Each key is shortened to its last dotted parts that no other key of the
  sweep ends in (`optim.lr` -> `lr`; `model.image.width` and
  `model.text.width` stay `image.width` and `text.width`). When two names
  would be equal, or one longer than MAX_NAME_LENGTH, every name gets its
  index as a prefix ('03_lr=0.001_...') and is cut to that length.
  """
  keys = list(dict.fromkeys(key for point in points for key in point))
  short = _short_keys(keys)
  names = [
      "_".join(f"{short[key]}={_safe(str(value))}"
               for key, value in point.items()) or "base"
      for point in points
  ]
  if len(set(names)) == len(names) and max(map(len, names)) <= MAX_NAME_LENGTH:
    return names
  width = len(str(len(points) - 1))
  return [f"{i:0{width}d}_{name}"[:MAX_NAME_LENGTH] for i, name in enumerate(names)]


def _short_keys(keys: list[str]) -> dict[str, str]:
  """Each dotted key -> its shortest tail of dotted parts that no other key ends with."""
  short = {}
  for key in keys:
    parts = key.split(".")
    for size in range(1, len(parts) + 1):
      tail = ".".join(parts[-size:])
      if not any(other != key and (other == tail or other.endswith("." + tail)) for other in keys):
        break
    short[key] = tail
  return short


def _safe(text: str) -> str:
  """`text` with every run of characters other than letters, digits, '.', '+', '-' as '-'."""
  return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "-"


def point_status(point_dir: str, total_steps: int | None) -> str:
  """FINISHED (a checkpoint at total_steps or later), else DIVERGED or FAILED (the outcome of
  its latest run by the sweep), PARTIAL (launched) or NOT_STARTED.

  `total_steps` is None when the point has no config.json, so it cannot be finished.
  """
  # Imported here so that planning a sweep, and its errors, need no JAX start-up.
  from jaxmm.runs import run_files  # pylint: disable=import-outside-toplevel
  try:
    steps = run_files.checkpoint_steps(point_dir)
  except FileNotFoundError:
    steps = []
  if steps and total_steps is not None and steps[-1] >= total_steps:
    return FINISHED
  outcome = read_outcome(point_dir)
  if outcome is not None and outcome["outcome"] in (DIVERGED, FAILED):
    return outcome["outcome"]
  if steps or storage.exists(os.path.join(point_dir, CONFIG_FILE)):
    return PARTIAL
  return NOT_STARTED


def record_outcome(point_dir: str,
                   outcome: str,
                   exit_status: int | None = None,
                   error: str | None = None) -> None:
  """Writes `point_dir/sweep_outcome.json`: how the point's latest run by the sweep ended (one
  of RUNNING ... FAILED), its exit status and, for DIVERGED and FAILED, what went wrong."""
  record = dict(outcome=outcome, exit_status=exit_status, error=error)
  storage.write_text(os.path.join(point_dir, OUTCOME_FILE), json.dumps(record) + "\n")


def read_outcome(point_dir: str) -> dict[str, Any] | None:
  """The record of `record_outcome`, or None if the sweep never ran the point."""
  path = os.path.join(point_dir, OUTCOME_FILE)
  return json.loads(storage.read_text(path)) if storage.is_file(path) else None


def check_record(sweep: Sweep) -> None:
  """Fails if `workdir/sweep.json` records another sweep: other command-line overrides (by their
  effect on the config), or other overrides under a recorded point name."""
  if not _has_record(sweep.workdir):
    return
  record, path = read_record(sweep.workdir), os.path.join(sweep.workdir, SWEEP_FILE)
  recorded = record["base_overrides"]
  if not _same_config(sweep.spec, recorded, sweep.base_overrides):
    raise UserError(f"{path} records this sweep with {_flags(recorded)}, but this command gives "
                    f"{_flags(sweep.base_overrides)}; its points were trained with the recorded "
                    "overrides, so give those to continue the sweep, or another --workdir for a "
                    "changed sweep")
  for point in sweep.points:
    before = record["points"].get(point.name)
    if before is not None and before != _as_json(point.overrides):
      raise UserError(f"{path} records point {point.name} with overrides {before}, now "
                      f"{point.overrides}; use another --workdir for a changed sweep")


def _same_config(spec: str, recorded: list[str], given: list[str]) -> bool:
  """Whether overrides `recorded` and `given` make the same config of `spec` (they may be spelled
  or ordered differently); False if the recorded ones no longer apply."""
  if recorded == given:
    return True
  try:
    configs = [config_loading.apply_overrides(config_loading.load_config(spec), overrides)
               for overrides in (recorded, given)]
  except UserError:
    return False
  return config_loading.config_to_json(configs[0]) == config_loading.config_to_json(configs[1])


def _flags(overrides: list[str]) -> str:
  """'the overrides --config.a=1 --config.b=2', as the command line gives them."""
  if not overrides:
    return "no overrides"
  return "the overrides " + shlex.join(config_loading.OVERRIDE_PREFIX + o for o in overrides)


def write_record(sweep: Sweep) -> None:
  """Writes `workdir/sweep.json` after `check_record`."""
  check_record(sweep)
  path, arg = config_loading.split_spec(sweep.spec)
  record = dict(config=path,
                arg=arg,
                base_overrides=sweep.base_overrides,
                points={point.name: _as_json(point.overrides) for point in sweep.points})
  storage.write_text(os.path.join(sweep.workdir, SWEEP_FILE), json.dumps(record, indent=2) + "\n")


def _as_json(overrides: dict[str, Any]) -> dict[str, Any]:
  """`overrides` as sweep.json holds them: tuples as lists, other types as their text."""
  return json.loads(json.dumps(overrides, default=str))


def _has_record(workdir: str) -> bool:
  return storage.is_file(os.path.join(workdir, SWEEP_FILE))


def read_record(workdir: str) -> dict[str, Any]:
  """The contents of `workdir/sweep.json` (see the module docstring)."""
  if not _has_record(workdir):
    raise UserError(f"no {SWEEP_FILE} in {workdir!r}: give the --workdir of a `jaxmm sweep`")
  return json.loads(storage.read_text(os.path.join(workdir, SWEEP_FILE)))
