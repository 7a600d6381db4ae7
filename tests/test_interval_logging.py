"""Each `train/*` row of metrics.jsonl says how many steps it averages, and no step goes unlogged
when SIGTERM stops a run."""
import json
import os
import signal

import pytest

from conftest import _AtBatch
from jaxmm import errors
from jaxmm import train
from jaxmm.experiments import diffusion as diffusion_experiment
from test_sample_command import toy_config


def _train_rows(workdir):
  """(step, steps_averaged) of each `train/*` row of workdir/metrics.jsonl, in order."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [(r["step"], r["train/steps_averaged"]) for r in rows if "train/loss" in r]


def _sigterm_at_step_3(config, workdir, mesh):
  """The toy's parts, with SIGTERM sent to this process as step 3's batch is read."""
  parts = diffusion_experiment.build(config, workdir, mesh)
  parts["train_data"] = _AtBatch(parts["train_data"], 3,
                                 lambda batch: os.kill(os.getpid(), signal.SIGTERM) or batch)
  return parts


def test_interrupted_and_resumed_run_logs_every_step_once(tmp_path):
  config = toy_config("total_steps=7", "log_every=4", "checkpoint_every=100")
  workdir = str(tmp_path / "run")
  with pytest.raises(errors.Interrupted):
    train.train(config, workdir, _sigterm_at_step_3)
  # Steps 1-3, logged before the checkpoint of step 3 was saved.
  assert _train_rows(workdir) == [(3, 3)]
  train.train(config, workdir, diffusion_experiment.build)
  # After the resume: step 4 alone (the first row), then 5-7 at the end.
  assert _train_rows(workdir) == [(3, 3), (4, 1), (7, 3)]
