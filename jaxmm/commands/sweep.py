"""The `jaxmm sweep` command: run a config's `get_sweep()` points, or summarize a sweep.

  jaxmm sweep --config FILE.py[:ARG] --workdir DIR [--config.KEY=VALUE ...] [--dry-run]
              [--launcher local|slurm|tpu] [--tpu NAME --zone ZONE [--project P]]
  jaxmm sweep --summarize DIR

Every point becomes `jaxmm train --config FILE.py[:ARG] --workdir DIR/<name>`
with the command line's overrides and then the point's (`jaxmm.sweeps.plan`);
the launchers are in `jaxmm.sweeps.launch`, the table in `jaxmm.sweeps.summary`.
"""
import argparse
import sys

from jaxmm.errors import UserError
from jaxmm.sweeps import launch
from jaxmm.sweeps import plan
from jaxmm.sweeps import summary

USAGE = ("(--config FILE.py[:ARG] --workdir DIR [--dry-run] [--launcher local|slurm|tpu] "
         "[--tpu NAME --zone ZONE] [--config.KEY=VALUE ...] | --summarize DIR)")
_SLURM_DEFAULTS = dict(slurm_nodes=1, slurm_gpus=1, slurm_time="24:00:00", slurm_args="")
_TPU_FLAGS = ("tpu", "zone", "project")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of `jaxmm sweep` (besides --config.KEY=VALUE overrides)."""
  parser.add_argument("--config",
                      metavar="FILE.py[:ARG]",
                      help="config file whose get_sweep(ARG) lists the points")
  parser.add_argument("--workdir", metavar="DIR", help="each point runs into DIR/<name>")
  parser.add_argument("--summarize",
                      metavar="DIR",
                      help="print a table of the sweep in DIR and write DIR/summary.csv")
  parser.add_argument("--dry-run",
                      action="store_true",
                      help="print the commands (slurm: write the job files) and run nothing")
  parser.add_argument("--launcher",
                      choices=("local", "slurm", "tpu"),
                      default="local",
                      help="local: one point after another here (default); slurm: an sbatch "
                      "array job; tpu: this sweep, run by every worker of a TPU VM or pod slice "
                      "(started by tpu/launch.sh)")
  parser.add_argument("--python",
                      metavar="PATH",
                      help="the Python that runs each point's `-m jaxmm.commands.cli train` "
                      "(default: this one; with --launcher tpu, the workers' .venv)")
  slurm = parser.add_argument_group("--launcher slurm")
  slurm.add_argument("--slurm-nodes",
                     type=int,
                     metavar="N",
                     help=f"nodes per point (default {_SLURM_DEFAULTS['slurm_nodes']})")
  slurm.add_argument("--slurm-gpus",
                     type=int,
                     metavar="N",
                     help=f"GPUs per node, 0 for none (default {_SLURM_DEFAULTS['slurm_gpus']})")
  slurm.add_argument("--slurm-time",
                     metavar="T",
                     help=f"time limit per point (default {_SLURM_DEFAULTS['slurm_time']})")
  slurm.add_argument("--slurm-args",
                     metavar="'OPTIONS'",
                     help="more #SBATCH options, e.g. --slurm-args='--partition=gpu -A lab'")
  tpu = parser.add_argument_group("--launcher tpu")
  tpu.add_argument("--tpu", metavar="NAME", help="the TPU VM or pod slice")
  tpu.add_argument("--zone", metavar="ZONE", help="its zone")
  tpu.add_argument("--project", metavar="P", help="its Google Cloud project (default: gcloud's)")


def run(args: argparse.Namespace, overrides: list[str]) -> None:
  """Runs `jaxmm sweep` as parsed into `args`, with 'KEY=VALUE' config `overrides`."""
  if args.summarize is not None:
    if args.config or args.workdir or overrides:
      raise UserError("--summarize DIR takes no --config, --workdir or --config.KEY overrides")
    summary.summarize(args.summarize)
    return
  _check_flags(args)
  sweep = plan.plan(args.config, args.workdir, overrides)
  if args.launcher == "tpu":  # the workers run the sweep, and record it there
    launch.launch_on_tpu(sweep, args.python, args.tpu, args.zone, args.project, args.dry_run)
    return
  # A slurm dry run writes the job files, so that the sbatch command it prints can be run as is.
  if not args.dry_run or args.launcher == "slurm":
    plan.write_record(sweep)
  else:
    plan.check_record(sweep)
  python = args.python or sys.executable
  if args.launcher == "slurm":
    launch.submit_slurm(sweep, python, _sbatch_options(args), args.dry_run)
    return
  try:
    launch.run_in_turn(sweep, lambda point: sweep.train_command(point, python), args.dry_run)
  except launch.Stopped as e:
    sys.stderr.write(f"jaxmm sweep: {e}\n")
    sys.exit(128 + e.signum)


def _sbatch_options(args: argparse.Namespace) -> list[str]:
  """The #SBATCH options of the --slurm-* flags, with defaults for those not given."""
  value = {
      name: default if getattr(args, name) is None else getattr(args, name)
      for name, default in _SLURM_DEFAULTS.items()
  }
  return launch.sbatch_options(nodes=value["slurm_nodes"],
                                     gpus_per_node=value["slurm_gpus"],
                                     time=value["slurm_time"],
                                     extra=value["slurm_args"])


def _check_flags(args: argparse.Namespace) -> None:
  """Fails unless the flags fit together (before anything is loaded or run)."""
  if not args.config or not args.workdir:
    raise UserError("give --config FILE.py[:ARG] and --workdir DIR to run a sweep, or "
                    "--summarize DIR to see one")
  if args.launcher == "tpu" and not (args.tpu and args.zone):
    raise UserError("--launcher tpu needs --tpu NAME and --zone ZONE (the TPU VM or pod slice)")
  for launcher, names in (("slurm", _SLURM_DEFAULTS), ("tpu", _TPU_FLAGS)):
    given = [name for name in names if getattr(args, name) is not None]
    if given and args.launcher != launcher:
      flags = ", ".join("--" + name.replace("_", "-") for name in given)
      raise UserError(f"only --launcher {launcher} takes {flags}")
