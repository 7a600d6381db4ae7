"""Post-hoc EMA of a trained run: EMA snapshots, `Run.posthoc_ema` on the host and on a mesh,
damaged snapshots, and the refusals."""
import logging
import os
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import errors
from jaxmm import parallel
from jaxmm import train
from jaxmm.experiments import diffusion as diffusion_experiment

from conftest import assert_same_bits
from test_checkpoint_damage import layout_file, truncate

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
# The 2-D toy with a small MLP: 100 steps of seconds, three power EMAs snapshotted every 5 steps.
TOY = ("batch_size=64", "total_steps=100", "checkpoint_every=50", "log_every=50", "eval_every=0",
       "optim.warmup_steps=10", "optim.lr=0.01", "model.width=32", "model.mlp_dim=64",
       "model.depth=2", "ema.sigma_rels=(0.05, 0.07, 0.1)", "ema.snapshot_every=5")
INPUTS = ["sigma_rel_0.05", "sigma_rel_0.1"]


def toy_config(*overrides):
  config = config_loading.load_config(str(CONFIGS / "edm_toy2d.py"))
  return config_loading.apply_overrides(config, list(TOY) + list(overrides))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("posthoc") / "run")
  train.train(toy_config(), workdir, diffusion_experiment.build)
  return workdir


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree.leaves(tree)])


def test_snapshots_hold_the_power_emas_every_n_steps_and_are_never_rotated_out(toy_run):
  assert sorted(map(int, os.listdir(os.path.join(toy_run, "ema_snapshots")))) == list(
      range(5, 101, 5))
  assert analysis.checkpoint_steps(toy_run) == [50, 100]
  run = analysis.load_run(toy_run)
  # The latest snapshot is the last step's: the same averages as the checkpoint.
  np.testing.assert_array_equal(_flat(run.posthoc_ema(0.07, profiles=["sigma_rel_0.07"])),
                                _flat(run.ema["sigma_rel_0.07"]))


def test_reconstruction_of_0_07_from_0_05_and_0_10_lies_near_the_tracked_0_07(toy_run):
  run = analysis.load_run(toy_run)
  tracked = _flat(run.ema["sigma_rel_0.07"])
  rebuilt = _flat(run.posthoc_ema(0.07, profiles=INPUTS))
  nearest_input = min(np.linalg.norm(_flat(run.ema[name]) - tracked) for name in INPUTS)
  # With 20 snapshots of each input the least-squares profile matches p_{100, γ(0.07)} to well
  # under 1 % in L2 and its weights sum to 1 within 1e-4 (so the large, constant part of the
  # parameters, ‖θ‖ ≈ 15, adds < 2e-3); the discrete average of steps 1..100 weighs each step
  # as the continuous profile does to O(γ/t²) where its mass lies. So the rebuilt 0.07 is
  # within a tenth of the nearer input's distance (measured: 2 %).
  assert np.linalg.norm(rebuilt - tracked) < 0.1 * nearest_input


def test_sharded_reconstruction_equals_the_host_one(toy_run):
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = analysis.load_run(toy_run, mesh=mesh).posthoc_ema(0.08, step=60)
  host = analysis.load_run(toy_run).posthoc_ema(0.08, step=60)
  assert all(leaf.sharding.mesh == mesh for leaf in jax.tree.leaves(sharded))
  # The same float32 sum of the same products, in the same order, shard by shard.
  jax.tree.map(np.testing.assert_array_equal, parallel.to_host(sharded), host)


@pytest.mark.parametrize("sigma_rel, step, expected", [
    (0.3, None, "sigma_rel=0.3 is out of range: a σ_rel must lie in (0, 0.28)"),
    (0.0, None, "sigma_rel=0.0 is out of range: a σ_rel must lie in (0, 0.28)"),
    (0.07, 7, "post-hoc EMA at step 7 needs two EMA snapshots up to it, and"),
])
def test_posthoc_ema_refuses_with_one_line(toy_run, sigma_rel, step, expected):
  with pytest.raises(errors.UserError, match=re.escape(expected)) as e:
    analysis.load_run(toy_run).posthoc_ema(sigma_rel, step=step)
  assert "\n" not in str(e.value)


def test_a_run_without_snapshots_says_how_to_get_them(tmp_path):
  workdir = str(tmp_path / "run")
  train.train(toy_config("total_steps=2", "optim.warmup_steps=1", "ema.snapshot_every=0"), workdir,
              diffusion_experiment.build)
  with pytest.raises(errors.UserError, match="snapshot_every=N"):
    analysis.load_run(workdir).posthoc_ema(0.07)


def test_a_damaged_snapshot_is_passed_over_with_a_warning(toy_run, tmp_path, caplog):
  workdir = str(tmp_path / "copy")
  shutil.copytree(toy_run, workdir)
  path = layout_file(os.path.join(workdir, "ema_snapshots", "95"), "ema/d/*")
  truncate(path)
  run = analysis.load_run(workdir)
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    rebuilt = _flat(run.posthoc_ema(0.07, profiles=INPUTS))
  assert f"EMA snapshot 95 of {workdir} is damaged, reconstructing without it: cannot read" in (
      caplog.text)
  without = str(tmp_path / "without")
  shutil.copytree(toy_run, without)
  shutil.rmtree(os.path.join(without, "ema_snapshots", "95"))
  np.testing.assert_array_equal(
      rebuilt, _flat(analysis.load_run(without).posthoc_ema(0.07, profiles=INPUTS)))


def test_training_sets_a_damaged_snapshot_aside_and_writes_it_again(toy_run, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(toy_run, workdir)
  truncate(layout_file(os.path.join(workdir, "ema_snapshots", "95"), "ema/d/*"))
  shutil.rmtree(os.path.join(workdir, "checkpoints", "100"))  # the rerun resumes at step 50
  train.train(toy_config(), workdir, diffusion_experiment.build)
  assert os.listdir(os.path.join(workdir, "damaged_ema_snapshots")) == ["95"]
  rewritten, original = (analysis.load_run(w).posthoc_ema(0.07, step=95) for w in (workdir, toy_run))
  assert_same_bits(rewritten, original)
