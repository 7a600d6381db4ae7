"""The `jaxmm` command: train an experiment, or print its resolved config.

  jaxmm train   --config configs/NAME.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]
  jaxmm inspect --config configs/NAME.py[:ARG] [--json] [--config.KEY=VALUE ...]

Overrides are parsed here rather than with absl's config_flags so that an
unknown key fails before anything runs, with the nearest existing key named.
"""
import argparse
import importlib
import sys

from absl import flags
from absl import logging
import logging as std_logging

from jaxmm import config_loading
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

  def add_command(name, help_text, usage):
    command = commands.add_parser(name,
                                  help=help_text,
                                  description=help_text,
                                  epilog=_OVERRIDES_HELP,
                                  usage=f"jaxmm {name} {usage} [--config.KEY=VALUE ...]",
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  allow_abbrev=False)
    command.set_defaults(parser=command)  # for errors that name the subcommand
    command.add_argument("--config",
                         required=True,
                         metavar="FILE.py[:ARG]",
                         help="config file and the argument to its get_config()")
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
  return parser


def main(argv=None) -> None:
  """Entry point of the `jaxmm` console script; `argv` excludes the program name."""
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = _parser()
  try:
    rest, overrides = config_loading.split_overrides(argv)
  except config_loading.ConfigError as e:
    parser.error(str(e))
  args = parser.parse_args(rest)
  try:
    config = config_loading.load_config(args.config)
    config_loading.apply_overrides(config, overrides)
  except config_loading.ConfigError as e:
    args.parser.error(str(e))

  if args.command == "inspect":
    text = config_loading.config_to_json(config) if args.json else str(config)
    print(text.rstrip("\n"))
    return

  host_memory.keep_freed_memory()
  # Libraries that read absl flags (grain's worker processes) need them parsed.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["jaxmm"])
  # jaxmm's own progress at INFO; libraries (orbax, grain) only at WARNING.
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger("jaxmm").setLevel(std_logging.INFO)
  try:
    experiment = importlib.import_module(f"experiments.{config.experiment}")
  except ModuleNotFoundError as e:
    if e.name != f"experiments.{config.experiment}":
      raise
    args.parser.error(f"no trainer experiments/{config.experiment}.py for "
                      f"config.experiment={config.experiment!r}")
  experiment.train(config, args.workdir)


if __name__ == "__main__":
  main()
