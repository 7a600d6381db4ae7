"""One spelling for multi-word flags: hyphens (`--data-dir`), as in the rest of the CLI.

Scripts written for the underscore spelling (`--data_dir`, `--num-processes`)
keep working: `add_flag` registers that spelling too, as a hidden alias that
stores into the same destination and is left out of `--help`.
"""
import argparse


def add_flag(parser, flag: str, **kwargs) -> None:
  """parser.add_argument(flag, **kwargs) for a hyphenated `flag`, plus its hidden underscore
  alias. Not for required flags: argparse would demand the visible spelling alone."""
  if kwargs.get("required"):
    raise ValueError(f"{flag}: a required flag cannot have an alias")
  dest = flag.lstrip("-").replace("-", "_")
  parser.add_argument(flag, dest=dest, **kwargs)
  # SUPPRESS as its default: the alias never overwrites the visible flag's default.
  alias = {k: v for k, v in kwargs.items() if k not in ("help", "default", "metavar")}
  parser.add_argument("--" + dest, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                      **alias)
