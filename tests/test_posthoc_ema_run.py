"""Post-hoc EMA of a trained run: EMA snapshots, `Run.posthoc_ema` on the host and on a mesh,
damaged snapshots, `jaxmm ema`, and the refusals."""
import json
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
from jaxmm.commands import cli
from jaxmm.experiments import diffusion as diffusion_experiment

from conftest import assert_same_bits, cli_error_line
from test_checkpoint_damage import layout_file, truncate

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
# The 2-D toy with a small MLP: 100 steps of seconds, three power EMAs snapshotted every 5 steps.
TOY = ("batch_size=64", "total_steps=100", "checkpoint_every=50", "log_every=50", "eval_every=0",
       "optim.warmup_steps=10", "optim.lr=0.01", "model.width=32", "model.mlp_dim=64",
       "model.depth=2", "ema.sigma_rels=(0.05, 0.07, 0.1)", "ema.snapshot_every=5",
       "evals.two_sample.num=500", "evals.two_sample.num_steps=6")
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


def test_a_run_without_snapshots_says_how_to_get_them(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  train.train(toy_config("total_steps=2", "optim.warmup_steps=1", "ema.snapshot_every=0"), workdir,
              diffusion_experiment.build)
  how = "post-hoc EMA needs a run trained with --config.ema.snapshot_every=N"
  with pytest.raises(errors.UserError, match=re.escape(how)):
    analysis.load_run(workdir).posthoc_ema(0.07)
  assert cli_error_line(capsys, ["ema", "--run", workdir, "--sigma-rel", "0.05"]).endswith(how)


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
  # Snapshot 95 alone: its own 0.07 average, weight 1.
  rewritten, original = (analysis.load_run(w).posthoc_ema(0.07, step=95,
                                                          profiles=["sigma_rel_0.07"])
                         for w in (workdir, toy_run))
  assert_same_bits(rewritten, original)


def test_ema_command_writes_averages_that_load_run_and_sample_take(toy_run, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(toy_run, workdir)
  cli.main(["ema", "--run", workdir, "--sigma-rel", "0.06", "0.08"])
  run = analysis.load_run(workdir)
  assert sorted(run.ema) == ["posthoc_sigma_rel_0.06", "posthoc_sigma_rel_0.08", "sigma_rel_0.05",
                             "sigma_rel_0.07", "sigma_rel_0.1"]
  assert_same_bits(run.ema["posthoc_sigma_rel_0.08"], run.posthoc_ema(0.08))
  out = str(tmp_path / "samples.npz")
  cli.main(["sample", "--run", workdir, "--ema", "posthoc_sigma_rel_0.08", "--num", "16", "--steps",
            "4", "--out", out])
  np.testing.assert_array_equal(
      np.load(out)["images"], run.sample(num=16, num_steps=4, ema="posthoc_sigma_rel_0.08"))
  assert not analysis.load_run(workdir, 50).ema.keys() & {"posthoc_sigma_rel_0.08"}


def test_ema_sweep_scores_each_sigma_rel_beside_the_tracked_ones(toy_run, tmp_path, capsys):
  workdir = str(tmp_path / "copy")
  shutil.copytree(toy_run, workdir)
  cli.main(["ema", "--run", workdir, "--sweep", "0.05:0.09:2"])
  with open(os.path.join(workdir, "posthoc_ema", "sweep_100.json")) as f:
    rows = json.load(f)
  assert list(rows) == ["sigma_rel_0.05", "sigma_rel_0.07", "sigma_rel_0.1",
                        "posthoc_sigma_rel_0.05", "posthoc_sigma_rel_0.09"]
  # At the last snapshot the post-hoc 0.05 is the tracked one (weights 1 and ~1e-9).
  np.testing.assert_allclose(rows["posthoc_sigma_rel_0.05"]["two_sample/mmd2"],
                             rows["sigma_rel_0.05"]["two_sample/mmd2"], rtol=1e-3)
  with open(os.path.join(workdir, "posthoc_ema", "sweep_100.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert "posthoc_sigma_rel_0.09       0.090" in capsys.readouterr().out


@pytest.mark.parametrize("args, expected", [
    (["--sigma-rel", "0.3"], "--sigma-rel=0.3 is out of range: a σ_rel must lie in (0, 0.28)"),
    (["--sweep", "0.1:0.05:3"], "--sweep 0.1:0.05:3: needs LO < HI and N >= 2"),
    (["--sweep", "0.1:0.2"], "--sweep 0.1:0.2: give LO:HI:N, e.g. 0.02:0.20:10"),
    (["--sweep", "0.1:0.3:4"], "--sweep=0.3 is out of range"),
    (["--sigma-rel", "0.05", "--step", "60"],
     "--step 60: the averages are kept beside a checkpoint, and"),
    (["--sigma-rel", "0.05", "--judge", "runs/siglip_shapes"], "--judge scores a --sweep"),
])
def test_ema_command_bad_input_is_one_line_before_anything_loads(toy_run, capsys, monkeypatch,
                                                                 args, expected):
  monkeypatch.setattr(analysis, "load_run", None)  # reaching it would fail otherwise
  line = cli_error_line(capsys, ["ema", "--run", toy_run] + args)
  assert line.startswith(f"jaxmm ema: error: {expected}")



@pytest.mark.parametrize("overrides, expected", [
    (["ema.snapshot_every=-1"], "ema.snapshot_every=-1 must be an integer >= 0"),
    (["ema.sigma_rels=()"], "ema.snapshot_every snapshots the power EMAs, but ema.sigma_rels is "
     "empty"),
])
def test_snapshot_every_is_a_step_count_with_power_emas_to_snapshot(overrides, expected):
  with pytest.raises(errors.UserError, match=re.escape(expected)):
    train.check_config(toy_config(*overrides))
