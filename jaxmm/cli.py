"""The `jaxmm` command: train an experiment, or print its resolved config.

  jaxmm train   --config configs/NAME.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]
  jaxmm inspect --config configs/NAME.py[:ARG] [--json] [--config.KEY=VALUE ...]

Overrides are parsed here rather than with absl's config_flags so that an
unknown key fails before anything runs, with the nearest existing key named.

A user mistake (`jaxmm.errors.UserError`) ends in the one line
`jaxmm <command>: error: <message>` and exit status 2; `--traceback` or
JAXMM_TRACEBACK=1 prints the traceback too. A run stopped by SIGTERM or
Ctrl-C exits with 128 + the signal number after saving its checkpoint.
"""
import argparse
import os
import sys
import traceback

from absl import flags
from absl import logging
import logging as std_logging

from jaxmm import config_loading
from jaxmm import errors
from jaxmm import host_memory

_OVERRIDES_HELP = """\
config overrides:
  --config.KEY=VALUE    set a dotted config key, e.g. --config.optim.lr=3e-4
                        --config.mesh.fsdp=4 --config.data.data_dir=None;
                        VALUE is read as the type of the field it replaces.
"""


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxmm",
                                   description="Contrastive and diffusion pretraining in JAX/Flax.",
                                   allow_abbrev=False)
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def add_command(name, help_text, usage, takes_config=True):
    command = commands.add_parser(name,
                                  help=help_text,
                                  description=help_text,
                                  epilog=_OVERRIDES_HELP if takes_config else None,
                                  usage=f"jaxmm {name} {usage}" +
                                  (" [--config.KEY=VALUE ...]" if takes_config else ""),
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  allow_abbrev=False)
    command.set_defaults(parser=command)  # for errors that name the subcommand
    if takes_config:
      command.add_argument("--config",
                           required=True,
                           metavar="FILE.py[:ARG]",
                           help="config file and the argument to its get_config()")
    command.add_argument("--traceback",
                         action="store_true",
                         help="on an error, print the traceback too (or set JAXMM_TRACEBACK=1)")
    return command

  train = add_command("train", "Train an experiment, resuming from DIR's latest checkpoint.",
                      "--config FILE.py[:ARG] --workdir DIR")
  train.add_argument("--workdir",
                     required=True,
                     metavar="DIR",
                     help="where checkpoints, config.json and metrics go")
  inspect = add_command("inspect", "Print the resolved config and exit.",
                        "--config FILE.py[:ARG] [--json]")
  inspect.add_argument("--json", action="store_true", help="print JSON instead of YAML")
  sample = add_command("sample",
                       "Sample a trained diffusion run into a PNG grid or an .npz of arrays.",
                       "--run DIR [--step N] [--ema NAME] [--num N] [--sampler NAME] [--steps N] "
                       "[--guidance W] [--labels I,J ...] [--seed S] --out FILE.png|FILE.npz",
                       takes_config=False)
  sample.add_argument("--run", required=True, metavar="DIR", help="the run's workdir")
  sample.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  sample.add_argument("--ema",
                      metavar="NAME",
                      help="parameter average to sample with, or 'none' for the raw "
                      "parameters (default: the run's first average)")
  sample.add_argument("--num", type=int, default=64, help="number of samples (default 64)")
  sample.add_argument("--sampler", default="heun", help="jaxmm.diffusion sampler (default heun)")
  sample.add_argument("--steps", type=int, default=18, help="sampler steps (default 18)")
  sample.add_argument("--guidance",
                      type=float,
                      default=1.0,
                      help="classifier-free guidance scale w (1: conditional, default)")
  sample.add_argument("--labels",
                      nargs="+",
                      metavar="I,J",
                      help="one label per label key for each sample, cycled to --num "
                      "(default: a grid over the classes, one row per class)")
  sample.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
  sample.add_argument("--out", required=True, metavar="FILE", help="a .png grid or an .npz")
  return parser


def _fail(prog: str, error: BaseException, show_traceback: bool) -> None:
  """Exits with status 2 after printing `error` as one line (and its traceback if asked)."""
  if show_traceback:
    traceback.print_exception(error)
  sys.stderr.write(f"{prog}: error: {' '.join(str(error).split())}\n")
  sys.exit(2)


def _train(config, workdir) -> None:
  # Imported here so that `jaxmm inspect` and config errors need no JAX start-up.
  from jaxmm import train as train_lib  # pylint: disable=import-outside-toplevel
  from jaxmm.experiments import EXPERIMENTS  # pylint: disable=import-outside-toplevel
  errors.one_of("experiment", config.experiment, EXPERIMENTS)
  host_memory.keep_freed_memory()
  # Libraries that read absl flags (grain's worker processes) need them parsed.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["jaxmm"])
  # jaxmm's own progress at INFO; libraries (orbax, grain) only at WARNING.
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger("jaxmm").setLevel(std_logging.INFO)
  # A failed checkpoint write leaves orbax's asyncio tasks with unretrieved
  # errors; the loop reports the failure itself, in one line.
  std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
  train_lib.train(config, workdir, EXPERIMENTS[config.experiment])


def _parse_labels(value: str) -> tuple[int, ...]:
  """'2,5' -> (2, 5)."""
  try:
    return tuple(int(part) for part in value.split(","))
  except ValueError:
    raise errors.UserError(f"--labels {value}: give one integer per label key, comma-separated, "
                           "e.g. --labels 2,5") from None


def _sample(args) -> None:
  # Imported here so that the other commands need no diffusion start-up.
  from jaxmm import analysis  # pylint: disable=import-outside-toplevel
  from jaxmm.experiments import diffusion  # pylint: disable=import-outside-toplevel
  if not args.out.endswith((".png", ".npz")):
    raise errors.UserError(f"--out {args.out}: end it in .png (a grid) or .npz (the arrays)")
  try:
    run = analysis.load_run(args.run, args.step)
  except (FileNotFoundError, ValueError) as e:
    raise errors.UserError(f"--run {args.run}: {e}") from e
  labels = None if args.labels is None else [_parse_labels(value) for value in args.labels]
  images, used_labels = diffusion.sample_run(run,
                                             ema=args.ema,
                                             num=args.num,
                                             sampler=args.sampler,
                                             num_steps=args.steps,
                                             guidance=args.guidance,
                                             labels=labels,
                                             seed=args.seed)
  diffusion.write_samples(args.out, images, used_labels, run.config)
  print(f"wrote {len(images)} samples of {args.run} (step {run.step}) to {args.out}")


def main(argv=None) -> None:
  """Entry point of the `jaxmm` console script; `argv` excludes the program name."""
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = _parser()
  try:
    rest, overrides = config_loading.split_overrides(argv)
  except config_loading.ConfigError as e:
    parser.error(str(e))
  args = parser.parse_args(rest)
  show_traceback = args.traceback or os.environ.get("JAXMM_TRACEBACK", "0") not in ("", "0")
  if args.command == "sample" and overrides:
    parser.error("jaxmm sample takes no --config.KEY overrides: it samples the run's own config")
  try:
    if args.command == "sample":
      _sample(args)
      return
    config = config_loading.load_config(args.config)
    config_loading.apply_overrides(config, overrides)
    if args.command == "inspect":
      text = config_loading.config_to_json(config) if args.json else str(config)
      print(text.rstrip("\n"))
    else:
      _train(config, args.workdir)
  except errors.UserError as e:
    _fail(args.parser.prog, e, show_traceback)
  except errors.Interrupted as e:
    sys.stderr.write(f"{args.parser.prog}: {e}\n")
    sys.exit(128 + e.signum)


if __name__ == "__main__":
  main()
