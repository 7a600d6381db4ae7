"""Kill -9 a training process after its second checkpoint; the rerun ends bit-identical, on a TFDS
split and on webdataset shards."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxmm import analysis

from conftest import shard_overrides

pytestmark = pytest.mark.slow

TOTAL, EVERY = 200, 10


def _command(workdir, overrides, data_dir):
  return [
      sys.executable, "-m", "jaxmm.commands.cli", "train", "--config", "configs/siglip_shapes.py",
      "--workdir", workdir, f"--config.data.data_dir={data_dir}", f"--config.total_steps={TOTAL}",
      f"--config.checkpoint_every={EVERY}", "--config.eval_every=0", "--config.log_every=50",
      "--config.ema.decays=(0.99,)", "--config.ema.sigma_rels=(0.1,)"
  ] + [f"--config.{o}" for o in overrides]


def _env():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user's process has
  return env


def kill_9_when_written(command, path: str) -> None:
  """Runs `command` and kills it with SIGKILL as soon as the folder `path` appears (orbax renames
  a checkpoint into place when complete)."""
  process = subprocess.Popen(command,
                             env=_env(),
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not os.path.isdir(path):
    assert process.poll() is None and time.time() < deadline, f"no {path}"
    time.sleep(0.005)
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL


@pytest.mark.parametrize("source", ["tfds", "wds"])
def test_kill_9_after_second_checkpoint_then_rerun(tmp_path, shapes_data_dir, shapes_shards,
                                                   tiny_overrides, source):
  overrides = [o for o in tiny_overrides if not o.startswith("total_steps")]
  if source != "tfds":  # 200 steps of 16 cross the 2,000 examples' first epoch
    overrides += shard_overrides(shapes_shards, source)
  killed = str(tmp_path / "killed")
  kill_9_when_written(_command(killed, overrides, shapes_data_dir),
                      os.path.join(killed, "checkpoints", str(2 * EVERY)))
  interrupted_at = analysis.checkpoint_steps(killed)[-1]
  assert 2 * EVERY <= interrupted_at < TOTAL

  subprocess.run(_command(killed, overrides, shapes_data_dir),
                 env=_env(),
                 check=True,
                 stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
  straight = str(tmp_path / "straight")
  subprocess.run(_command(straight, overrides, shapes_data_dir),
                 env=_env(),
                 check=True,
                 stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)

  resumed, reference = analysis.load_run(killed), analysis.load_run(straight)
  assert resumed.step == reference.step == TOTAL
  jax.tree.map(np.testing.assert_array_equal, resumed.params, reference.params)
  jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, reference.opt_state)
  assert set(resumed.ema) == {"decay_0.99", "sigma_rel_0.1"}
  jax.tree.map(np.testing.assert_array_equal, resumed.ema, reference.ema)
