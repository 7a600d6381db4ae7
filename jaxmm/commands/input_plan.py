"""`jaxmm inspect --input`: the host cores that keep a config's train step fed.

  jaxmm inspect --input --config FILE.py[:ARG] --step-time SECONDS --images-per-core-s RATE
                [--batch-sizes B[,B ...]] [--processes P] [--json] [--config.KEY=VALUE ...]

A step of `step_time` seconds over a global batch B read by P processes
(hosts) needs B / (P · step_time) images per second from each host's input
pipeline; at RATE images per second per core that takes

  cores = ceil(B / (P · step_time · RATE))

cores on each host. RATE is the user's: the per-core rate jaxmm's pipeline
reaches on that host's CPU and images, as `benchmarks/input_pipeline.py`
measures it ("images_per_core_s" of its --json, for 224 x 224 random-resized
crops of JPEG photographs). A config with data.views makes data.num_views
views of every image on the host too: measure RATE with them.
"""
import argparse
import json
import math

from jaxmm import config_loading
from jaxmm.commands import flag_checks
from jaxmm.commands import flag_spelling
from jaxmm.commands import memory
from jaxmm.errors import UserError

MEASURE = ("measure it with `.venv-peers/bin/python benchmarks/input_pipeline.py` "
           "(images_per_core_s of jaxmm)")


def add_arguments(inspect: argparse.ArgumentParser) -> None:
  """The options of `jaxmm inspect --input` (it shares --batch-sizes with --memory)."""
  group = inspect.add_argument_group(
      "input plan", "With --input and --config: the host cores per process that decode and "
      "crop a step's images in its step time, at a measured rate per core.")
  group.add_argument("--input",
                     action="store_true",
                     help="plan the host cores that feed the config's train step")
  flag_spelling.add_flag(group,
                         "--step-time",
                         type=flag_checks.finite_float,
                         metavar="SECONDS",
                         help="the accelerator's seconds per train step")
  flag_spelling.add_flag(group,
                         "--images-per-core-s",
                         type=flag_checks.finite_float,
                         metavar="RATE",
                         help="images per second one host core prepares (" + MEASURE + ")")
  group.add_argument("--processes",
                     type=int,
                     default=1,
                     metavar="P",
                     help="processes (hosts) that share each global batch (default 1)")


def check_flags(args: argparse.Namespace) -> None:
  """Raises `UserError` for an input option without --input, or --input with --memory or
  --run."""
  if args.input and (args.memory or args.run is not None):
    raise UserError("--input plans a config's host cores: give --config FILE.py[:ARG], without "
                    "--memory or --run")
  for flag, value in (("--step-time", args.step_time),
                      ("--images-per-core-s", args.images_per_core_s),
                      ("--processes", None if args.processes == 1 else args.processes)):
    if value is not None and not args.input:
      raise UserError(f"{flag} goes with --input (the plan of the host cores)")


def cores_needed(batch_size: int, step_time: float, images_per_core_s: float,
                 processes: int = 1) -> dict:
  """The plan of one global batch: images per second each process must prepare, and the cores
  that takes (the module docstring's formula)."""
  per_process = batch_size / processes / step_time
  return dict(batch_size=batch_size, processes=processes, step_time=step_time,
              images_per_core_s=images_per_core_s, images_per_s_per_process=per_process,
              cores_per_process=math.ceil(per_process / images_per_core_s))


def _positive(flag: str, value: float | None, hint: str) -> float:
  if value is None:
    raise UserError(f"--input needs {flag}: {hint}")
  if not value > 0:
    raise UserError(f"{flag} {value}: give a number > 0")
  return value


def run(args: argparse.Namespace, overrides: list[str]) -> None:
  """Prints the host cores per process for each batch of --batch-sizes (default: the config's
  batch_size); JSON with --json."""
  step_time = _positive("--step-time", args.step_time, "the accelerator's seconds per step")
  rate = _positive("--images-per-core-s", args.images_per_core_s, MEASURE)
  if args.processes < 1:
    raise UserError(f"--processes {args.processes}: give a number >= 1")
  config = config_loading.load_config(args.config)
  config_loading.apply_overrides(config, overrides)
  batch_sizes = memory.positive_integers("--batch-sizes", args.batch_sizes) or [config.batch_size]
  for batch in batch_sizes:
    if batch % args.processes:
      raise UserError(f"global batch {batch} does not split over --processes {args.processes}; "
                      f"give --batch-sizes that are multiples of {args.processes}")
  rows = [cores_needed(batch, step_time, rate, args.processes) for batch in batch_sizes]
  if args.json:
    print(json.dumps(dict(config=args.config, overrides=overrides, rows=rows), indent=2))
    return
  print(f"input of {args.config}: {step_time:g} s a step, {rate:g} images/s per host core")
  for row in rows:
    processes = f"{row['processes']} process" + ("es" if row["processes"] > 1 else "")
    print(f"  global batch {row['batch_size']} over {processes}: "
          f"{row['images_per_s_per_process']:.0f} images/s per process, "
          f"{row['cores_per_process']} cores per process")
