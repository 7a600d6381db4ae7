"""Kill -9 a training process that writes EMA snapshots, past its newest checkpoint; the rerun
resumes from that checkpoint and ends with the snapshots of a run that was never interrupted."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxmm.runs import checkpoints
from jaxmm.runs import ema_snapshots
from jaxmm.runs import run_files

from conftest import assert_same_bits
from test_posthoc_ema_run import CONFIGS
from test_resume_kill import _env, kill_9_when_written

pytestmark = pytest.mark.slow

# Checkpoints every 50 steps, snapshots every 10.
TOTAL, EVERY, SNAPSHOT_EVERY = 200, 50, 10


def _command(workdir):
  return [
      sys.executable, "-m", "jaxmm.commands.cli", "train", "--config",
      str(CONFIGS / "edm_toy2d.py"), "--workdir", workdir, f"--config.total_steps={TOTAL}",
      f"--config.checkpoint_every={EVERY}", "--config.eval_every=0", "--config.log_every=50",
      "--config.batch_size=64", "--config.model.width=32", "--config.model.mlp_dim=64",
      "--config.ema.sigma_rels=(0.05, 0.1)", f"--config.ema.snapshot_every={SNAPSHOT_EVERY}"
  ]


def _snapshots(workdir) -> dict[int, dict]:
  """Every snapshot's averages, host numpy, by step."""
  with run_files.quiet():
    manager = ema_snapshots.make_manager(workdir, read_only=True)
    try:
      return {
          step: checkpoints.read_arrays(
              os.path.join(checkpoints.step_path(manager, step), ema_snapshots.ITEM),
              jax.tree.map(lambda m: np.zeros(m.shape, m.dtype),
                           checkpoints.state_metadata(manager, step, ema_snapshots.ITEM).tree))
          for step in manager.all_steps()
      }
    finally:
      manager.close()


def test_kill_9_then_rerun_writes_the_snapshots_of_an_uninterrupted_run(tmp_path):
  killed, straight = str(tmp_path / "killed"), str(tmp_path / "straight")
  # Snapshot 60 follows checkpoint 50 and comes 40 steps before checkpoint 100: the rerun
  # resumes at step 50 and finds snapshot 60 (and any later) already written.
  kill_9_when_written(_command(killed),
                      os.path.join(killed, "ema_snapshots", str(EVERY + SNAPSHOT_EVERY)))
  assert run_files.checkpoint_steps(killed) == [EVERY]
  for workdir in (killed, straight):
    subprocess.run(_command(workdir),
                   env=_env(),
                   check=True,
                   stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
  resumed, reference = _snapshots(killed), _snapshots(straight)
  assert sorted(reference) == list(range(SNAPSHOT_EVERY, TOTAL + 1, SNAPSHOT_EVERY))
  assert sorted(resumed) == sorted(reference)
  for step, averages in reference.items():
    assert sorted(averages) == ["sigma_rel_0.05", "sigma_rel_0.1"]
    assert_same_bits(resumed[step], averages)
