"""`jaxmm inspect --input`: the host cores that feed a train step, from a measured rate per core."""
import json
import pathlib

import pytest

from jaxmm.commands import cli
from jaxmm.commands import input_plan
from conftest import cli_error_line

SPEC = "configs/siglip_shapes.py"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])


def test_cores_are_the_images_per_second_a_process_needs_over_the_rate_per_core():
  # 4096 images over 4 processes in 0.25 s: 4096 images/s each; at 150 a core, 27.3 -> 28 cores.
  plan = input_plan.cores_needed(4096, 0.25, 150.0, processes=4)
  assert plan["images_per_s_per_process"] == 4096 and plan["cores_per_process"] == 28
  # Exactly the rate of 10 cores needs 10, not 11.
  assert input_plan.cores_needed(1000, 1.0, 100.0)["cores_per_process"] == 10


def test_cli_plans_each_batch_and_the_configs_by_default(capsys):
  cli.main(["inspect", "--input", "--config", SPEC, "--step-time", "0.5", "--images-per-core-s",
            "100", "--batch-sizes", "512,2048", "--processes", "2"])
  out = capsys.readouterr().out
  assert "global batch 512 over 2 processes: 512 images/s per process, 6 cores per process" in out
  assert "global batch 2048 over 2 processes: 2048 images/s per process, 21 cores per" in out
  cli.main(["inspect", "--input", "--json", "--config", SPEC, "--config.batch_size=64",
            "--step-time", "0.1", "--images-per-core-s", "50"])
  [row] = json.loads(capsys.readouterr().out)["rows"]
  assert (row["batch_size"], row["images_per_s_per_process"], row["cores_per_process"]) == (
      64, 640, 13)


@pytest.mark.parametrize("args,expected", [
    (["--input", "--config", SPEC, "--step-time", "1"],
     "--input needs --images-per-core-s: measure it with `.venv-peers/bin/python "
     "benchmarks/input_pipeline.py`"),
    (["--input", "--config", SPEC, "--step-time", "0", "--images-per-core-s", "9"],
     "--step-time 0.0: give a number > 0"),
    (["--input", "--config", SPEC, "--step-time", "1", "--images-per-core-s", "9", "--processes",
      "3"], "global batch 256 does not split over --processes 3"),
    (["--config", SPEC, "--step-time", "1"], "--step-time goes with --input"),
    (["--input", "--memory", "--config", SPEC], "--input plans a config's host cores"),
])
def test_bad_input_plans_fail_in_one_line(capsys, args, expected):
  line = cli_error_line(capsys, ["inspect"] + args)
  assert line.startswith("jaxmm inspect: error: ") and expected in line
