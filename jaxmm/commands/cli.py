"""The `jaxmm` command: train an experiment, sample a run, inspect, sweep or filter.

  jaxmm train   --config configs/NAME.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]
  jaxmm sample  --run DIR [--num N] [--guidance W] [--labels I,J ...] --out FILE.png|FILE.npz
  jaxmm ema     --run DIR (--sigma-rel S [S ...] | --sweep LO:HI:N) [--step N]
  jaxmm caption --run DIR (--split NAME | --images FILE.npz) [--num N] [--beam K]
  jaxmm inspect --config configs/NAME.py[:ARG] [--json] [--config.KEY=VALUE ...]
  jaxmm inspect --run DIR [--step N] [--json]
  jaxmm inspect --memory --config FILE.py[:ARG] [--devices N,...] [--batch-sizes B,...] [--json]
  jaxmm inspect --input --config FILE.py[:ARG] --step-time S --images-per-core-s R [--json]
  jaxmm sweep   --config configs/NAME.py[:ARG] --workdir DIR [--dry-run] [--launcher ...]
  jaxmm sweep   --summarize DIR
  jaxmm filter  --run DIR --dataset NAME --split S --keep F --out DIR [...]
  jaxmm data    export --dataset NAME --split S --format wds|parquet --out DIR [...]
  jaxmm data    stats --files GLOB [...]
  jaxmm import  open_clip --arch ARCH --weights FILE.safetensors --out DIR
  jaxmm export  open_clip --run DIR [--step N] --out FILE.safetensors

Each subcommand is a module of `jaxmm.commands`. Overrides are parsed here
rather than with absl's config_flags so that an unknown key fails before
anything runs, with the nearest existing key named. The CPU-only process
settings (`jaxmm.host.configure`) are made once, before any JAX computation.

A user mistake (`jaxmm.errors.UserError`) ends in the one line
`jaxmm <command>: error: <message>` and exit status 2; `--traceback` or
JAXMM_TRACEBACK=1 prints the traceback too. A run stopped by SIGTERM or
Ctrl-C exits with 128 + the signal number after saving its checkpoint; before
its first step, at once, with one line.
"""
import argparse
import os
import sys
import traceback

from jaxmm import config_loading
from jaxmm import errors
from jaxmm import host
from jaxmm.commands import caption
from jaxmm.commands import data as data_command
from jaxmm.commands import ema as ema_command
from jaxmm.commands import export_weights
from jaxmm.commands import filter as filter_command
from jaxmm.commands import import_weights
from jaxmm.commands import inspect as inspect_command
from jaxmm.commands import sample
from jaxmm.commands import sweep
from jaxmm.commands import train

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

  train.add_arguments(
      add_command("train", "Train an experiment, resuming from DIR's latest checkpoint.",
                  "--config FILE.py[:ARG] --workdir DIR"))
  inspect_parser = add_command(
      "inspect", "Print a config resolved with its overrides, or a trained run's summary: its "
      "config, checkpoints and latest metrics, (--memory) the per-device memory of a "
      "config's train step, or (--input) the host cores that keep it fed.",
      inspect_command.USAGE,
      takes_config=False)
  inspect_parser.epilog = _OVERRIDES_HELP
  inspect_command.add_arguments(inspect_parser)
  sample.add_arguments(
      add_command("sample",
                  "Sample a trained diffusion run into a PNG grid or an .npz of arrays.",
                  sample.USAGE,
                  takes_config=False))
  ema_command.add_arguments(
      add_command("ema",
                  "Reconstruct a diffusion run's power EMA of any σ_rel from its EMA snapshots "
                  "(post-hoc EMA), or judge a range of them.",
                  ema_command.USAGE,
                  takes_config=False))
  caption.add_arguments(
      add_command("caption",
                  "Caption images with a trained captioning run (CapPa, CoCa).",
                  caption.USAGE,
                  takes_config=False))
  sweep_parser = add_command(
      "sweep",
      "Run every point of a config's get_sweep() as a run, or summarize a sweep.",
      sweep.USAGE,
      takes_config=False)
  sweep_parser.epilog = _OVERRIDES_HELP
  sweep.add_arguments(sweep_parser)
  filter_parser = add_command(
      "filter", "Keep the image-text pairs of a dataset split that a trained two-tower "
      "scores highest, as a new dataset (data filtering, Fang et al. 2023).",
      filter_command.USAGE,
      takes_config=False)
  filter_parser.epilog = filter_command.EPILOG
  filter_command.add_arguments(filter_parser)
  data_command.add_arguments(
      add_command("data",
                  "Write a TFDS split as webdataset or parquet shards, or say what shards hold.",
                  data_command.USAGE,
                  takes_config=False))
  import_weights.add_arguments(
      add_command("import",
                  "Write a checkpoint trained elsewhere (open_clip, big_vision) as a jaxmm run.",
                  import_weights.USAGE,
                  takes_config=False))
  export_weights.add_arguments(
      add_command("export",
                  "Write a jaxmm run's parameters as a checkpoint of another library (open_clip, "
                  "big_vision).",
                  export_weights.USAGE,
                  takes_config=False))
  return parser


def _fail(prog: str, error: BaseException, show_traceback: bool) -> None:
  """Exits with status 2 after printing `error` as one line (and its traceback if asked)."""
  if show_traceback:
    traceback.print_exception(error)
  sys.stderr.write(f"{prog}: error: {' '.join(str(error).split())}\n")
  sys.exit(2)


def main(argv=None) -> None:
  """Entry point of the `jaxmm` console script; `argv` excludes the program name."""
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = _parser()
  try:
    rest, overrides = config_loading.split_overrides(argv)
  except config_loading.ConfigError as e:
    parser.error(str(e))
  args = parser.parse_args(rest)
  host.configure()
  show_traceback = args.traceback or os.environ.get("JAXMM_TRACEBACK", "0") not in ("", "0")
  # The commands that read no config of their own making: why each refuses overrides.
  without_config = {
      "sample": (sample.run, ": it samples the run's own config"),
      "ema": (ema_command.run, ": it reads the run's own config"),
      "caption": (caption.run, ": it captions with the run's own config"),
      "filter": (filter_command.run, ": it scores with the run's own config"),
      "data": (data_command.run, ""),
      "import": (import_weights.run, ": the architecture sets the config"),
      "export": (export_weights.run, ": the architecture sets the config"),
  }
  if args.command in without_config and overrides:
    parser.error(f"jaxmm {args.command} takes no --config.KEY overrides"
                 f"{without_config[args.command][1]}")
  try:
    if args.command in without_config:
      without_config[args.command][0](args)
      return
    if args.command == "sweep":
      sweep.run(args, overrides)
      return
    if args.command == "inspect":
      inspect_command.run(args, overrides)
      return
    with train.ExitOnSignal(args.parser.prog):
      config = config_loading.load_config(args.config)
      config_loading.apply_overrides(config, overrides)
      train.run(config, args, show_traceback)
  except errors.UserError as e:
    _fail(args.parser.prog, e, show_traceback)
  except errors.Interrupted as e:
    sys.stderr.write(f"{args.parser.prog}: {e}\n")
    sys.exit(128 + e.signum)
  except BrokenPipeError:
    # The reader went away (`jaxmm inspect ... | head`): stop quietly, as other tools do,
    # with stdout pointed at /dev/null so that the interpreter's final flush cannot fail too.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)


if __name__ == "__main__":
  main()
