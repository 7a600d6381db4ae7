"""Multi-word flags are spelled with hyphens; the underscore spellings are hidden aliases."""
import re

import pytest

from jaxmm.commands import cli

TRAIN = ["train", "--config", "c.py", "--workdir", "w"]
FILTER = ["filter", "--run", "r", "--dataset", "d", "--split", "s", "--keep", "0.5", "--out", "o"]


def _subcommands():
  parser = cli._parser()  # pylint: disable=protected-access
  return parser, parser._subparsers._group_actions[0].choices  # pylint: disable=protected-access


@pytest.mark.parametrize("name", sorted(_subcommands()[1]))
def test_help_shows_only_hyphenated_flags(name):
  help_text = _subcommands()[1][name].format_help()
  assert not re.findall(r"--[a-z]+_[a-z_]+", help_text)


@pytest.mark.parametrize("command, hyphenated, expected", [
    (TRAIN, ["--coordinator-address", "h:1", "--num-processes", "2", "--process-id", "1",
             "--distributed-timeout", "9"],
     dict(coordinator_address="h:1", num_processes=2, process_id=1, distributed_timeout=9)),
    (FILTER, ["--data-dir", "dd", "--batch-size", "64"], dict(data_dir="dd", batch_size=64)),
])
def test_underscore_spellings_set_the_same_values(command, hyphenated, expected):
  underscored = ["--" + a[2:].replace("-", "_") if a.startswith("--") else a for a in hyphenated]
  for flags in (hyphenated, underscored):
    args = _subcommands()[0].parse_args(command + flags)
    assert {key: getattr(args, key) for key in expected} == expected


def test_defaults_survive_the_alias():
  args = _subcommands()[0].parse_args(TRAIN)
  assert args.distributed_timeout == 300 and args.coordinator_address is None
  args = _subcommands()[0].parse_args(FILTER)
  assert args.batch_size > 0 and args.data_dir is None
