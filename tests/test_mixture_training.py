"""A run on a data.mixture: its mistakes end in one line before training, a crashed run resumes
to the uninterrupted run's parameters, and the loop logs each source's examples."""
import os
import pathlib

import jax
import numpy as np
import pytest

from jaxmm import analysis

from conftest import cli_error_line
from conftest import crash_and_resume

REPO = pathlib.Path(__file__).resolve().parents[1]
TOTAL = 4
# 'whole': the shapes test split, three quarters of the stream; 'part': its first 40 examples.
MIXTURE = ("data.mixture={'whole': {'weight': 3.0, 'data': {}}, "
           "'part': {'weight': 1.0, 'data': {'train_split': 'test[:40]'}}}")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  monkeypatch.chdir(REPO)


@pytest.mark.parametrize("config, overrides, expected", [
    ("mixture_shapes", ["data.mixture.shuffled.weight=0.0"],
     "data.mixture.shuffled.weight=0.0 must be a number > 0 (the source's share of the stream is "
     "its weight over their sum); set --config.data.mixture.shuffled.weight, or remove the "
     "source"),
    ("mixture_shapes", ["data.mixture.noisy.weight=0.5"],
     "unknown config key 'data.mixture.noisy.weight'; did you mean "
     "'data.mixture.clean.weight'?"),
    ("siglip_shapes", [MIXTURE.replace("'data': {}", "'data': {'max_len': 16}")],
     "data.mixture sources disagree on what a batch holds: 'tokens' is int32 [b, 8] from 'part' "
     "but int32 [b, 16] from 'whole'; give every source the same data.image_size, "
     "data.max_len, data.tokenizer and image channels (make data.mixture.part.data and "
     "data.mixture.whole.data agree)"),
])
def test_mistakes_are_one_line_before_training(capsys, tmp_path, shapes_data_dir, tiny_overrides,
                                               config, overrides, expected):
  workdir = tmp_path / "run"
  line = cli_error_line(capsys, [
      "train", "--config", f"configs/{config}.py", "--workdir", str(workdir),
      f"--config.data.data_dir={shapes_data_dir}", "--config.data.train_split=test",
      "--config.eval_every=0"
  ] + [f"--config.{o}" for o in list(tiny_overrides) + overrides])
  assert line == "jaxmm train: error: " + expected
  assert not os.path.exists(workdir / "checkpoints")


@pytest.mark.slow  # three runs of 4 steps, each compiling its step
def test_a_crashed_mixture_run_resumes_exactly_and_logs_each_source(tiny_config, shapes_data_dir,
                                                                     tmp_path, run_image_text):
  config = tiny_config("siglip", f"total_steps={TOTAL}", "checkpoint_every=2", "log_every=2",
                       "eval_every=0", f"data.data_dir={shapes_data_dir}",
                       "data.train_split=test", MIXTURE)
  reference = run_image_text(config, str(tmp_path / "whole"))
  crashed = str(tmp_path / "crashed")
  resumed = crash_and_resume(run_image_text, config, crashed, at_step=3)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.params),
               jax.device_get(reference.params))
  # Hand count, batch 16 at 3 : 1: positions 0..31 give 'whole' L(32) = floor(24.5) = 24, and
  # 32..63 give L(64) - L(32) = floor(48.5) - 24 = 24; 'part' the rest. The resumed run logs
  # at step 4 the batches it read, 3 and 4.
  metrics = analysis.load_run(str(tmp_path / "whole")).metrics()
  np.testing.assert_array_equal(metrics["step"], [2, 4])
  np.testing.assert_array_equal(metrics["data/mixture/whole"], [24, 24])
  np.testing.assert_array_equal(metrics["data/mixture/part"], [8, 8])
  metrics = analysis.load_run(crashed).metrics()
  assert (metrics["data/mixture/whole"][-1], metrics["data/mixture/part"][-1]) == (24, 8)
