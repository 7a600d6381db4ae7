"""Faults during training lose nothing: divergence, damaged checkpoints, changed configs."""
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from jaxmm import analysis
from jaxmm import errors
from jaxmm import train
from jaxmm.runs import checkpoints
from jaxmm.train import workdir as workdir_lib

TOTAL = 6


@pytest.fixture(scope="module")
def config(tiny_config, shapes_data_dir):
  return tiny_config("siglip", f"total_steps={TOTAL}", "checkpoint_every=2", "log_every=5",
                     "eval_every=0", f"data.data_dir={shapes_data_dir}")


def _poison(batch):
  """A batch of NaN images: the loss, gradients and updated parameters of its step are NaN too."""
  return dict(batch, image=np.full_like(batch["image"], np.nan))


def _all_finite(tree) -> bool:
  return all(np.isfinite(x).all() for x in jax.tree.leaves(tree))


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


@pytest.mark.parametrize("guard", ["save", "eval"])
def test_divergence_stops_before_saving_or_evaluating_the_bad_step(config, tmp_path, run_image_text,
                                                                   guard):
  # Step 3 diverges. The first thing after it that would use the state is the
  # checkpoint of step 4 (guard='save') or the evaluation of step 4 (guard='eval').
  diverging = config.copy_and_resolve_references()
  if guard == "eval":
    diverging.eval_every, diverging.checkpoint_every = 4, 100
  workdir = str(tmp_path / "run")
  with pytest.raises(train.Diverged, match=r"diverged at step 3: non-finite .*loss=nan"):
    run_image_text(diverging, workdir, at_step=3, action=_poison)
  assert analysis.checkpoint_steps(workdir) == ([2] if guard == "save" else [])
  assert not os.path.exists(os.path.join(workdir, "zero_shot.json"))
  for step in analysis.checkpoint_steps(workdir):
    assert _all_finite(analysis.load_run(workdir, step).params)


def test_skip_policy_leaves_the_bad_update_out(config, tmp_path, run_image_text):
  skip = config.copy_and_resolve_references()
  skip.on_nonfinite, skip.checkpoint_every, skip.keep_checkpoints = "skip", 1, TOTAL
  workdir = str(tmp_path / "run")
  state = run_image_text(skip, workdir, at_step=3, action=_poison)
  assert int(state.step) == TOTAL and int(state.skipped_steps) == 1
  assert _all_finite(jax.device_get(state.params))
  before, skipped, after = (analysis.load_run(workdir, step) for step in (2, 3, 4))
  _assert_trees_equal(skipped.params, before.params)
  _assert_trees_equal(skipped.opt_state, before.opt_state)
  assert not np.array_equal(after.params["bias"], skipped.params["bias"])


def _truncate(step_dir):
  """Cuts every array data file of the state in half, as an interrupted copy would."""
  state = os.path.join(step_dir, "state")
  for folder, _, names in os.walk(state):
    if os.path.basename(folder) == "d":
      for name in names:
        with open(os.path.join(folder, name), "r+b") as f:
          f.truncate(os.path.getsize(os.path.join(folder, name)) // 2)
  return state


def _delete_metadata(step_dir):
  path = os.path.join(step_dir, "state", "_METADATA")
  os.remove(path)
  return path


def _garbage_position(step_dir):
  path = os.path.join(step_dir, "data", "metadata")
  with open(path, "wb") as f:
    f.write(bytes(range(256)))
  return path


@pytest.fixture(scope="module")
def straight_and_crashed(config, tmp_path_factory, run_image_text):
  """An uninterrupted run's final state, and the workdir of a run that crashed in step 5."""
  root = tmp_path_factory.mktemp("damage")
  straight = run_image_text(config, str(root / "straight"))

  def crash(batch):
    raise RuntimeError("crash")

  with pytest.raises(RuntimeError):
    run_image_text(config, str(root / "crashed"), at_step=5, action=crash)
  assert analysis.checkpoint_steps(str(root / "crashed")) == [2, 4]
  return straight, str(root / "crashed")


@pytest.mark.parametrize("damage", [_truncate, _delete_metadata, _garbage_position])
def test_damaged_latest_checkpoint_is_set_aside_and_resume_is_exact(config, tmp_path,
                                                                    run_image_text,
                                                                    straight_and_crashed, damage,
                                                                    caplog):
  straight, crashed = straight_and_crashed
  workdir = str(tmp_path / "run")
  shutil.copytree(crashed, workdir)
  damaged = damage(os.path.join(workdir, "checkpoints", "4"))
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    resumed = run_image_text(config, workdir)
  warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
  assert len(warnings) == 1 and "checkpoint 4" in warnings[0]
  # It names the file, or for an array store the item folder that holds it.
  item = os.path.relpath(damaged, os.path.join(workdir, "checkpoints", "4")).split(os.sep)[0]
  assert damaged in warnings[0] or os.path.join(workdir, "checkpoints", "4", item) in warnings[0]
  # Set aside, not deleted; the run resumed from 2 and ends as if nothing happened.
  assert os.path.isdir(os.path.join(workdir, checkpoints.DAMAGED_DIR, "4"))
  _assert_trees_equal(resumed.params, straight.params)
  _assert_trees_equal(resumed.opt_state, straight.opt_state)
  assert analysis.checkpoint_steps(workdir) == [2, 4, 6]


def test_final_step_is_always_saved(config, tmp_path, run_image_text):
  odd = config.copy_and_resolve_references()
  odd.total_steps = 5
  workdir = str(tmp_path / "run")
  run_image_text(odd, workdir)
  assert analysis.checkpoint_steps(workdir) == [2, 4, 5]


def test_relaunch_keeps_config_history_and_checks_what_changed(config, tmp_path, run_image_text,
                                                               caplog):
  workdir = str(tmp_path / "run")
  first = config.copy_and_resolve_references()
  first.total_steps = 4
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    run_image_text(first, workdir)
  assert sum("data.max_len=8 cuts" in r.getMessage() for r in caplog.records) == 1
  caplog.clear()

  # Other keys may change, with a warning listing each old -> new value.
  second = config.copy_and_resolve_references()
  second.optim.lr = 0.02
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    run_image_text(second, workdir)
  [changed] = [r.getMessage() for r in caplog.records if "changed config" in r.getMessage()]
  assert "optim.lr: 0.01 -> 0.02" in changed and "total_steps: 4 -> 6" in changed
  history = sorted(os.listdir(os.path.join(workdir, workdir_lib.HISTORY_DIR)))
  assert history == ["launch_001_from_step_0.json", "launch_002_from_step_4.json"]
  with open(os.path.join(workdir, workdir_lib.HISTORY_DIR, history[0])) as f:
    assert json.load(f)["total_steps"] == 4
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["optim"]["lr"] == 0.02

  # A changed shape fails before anything is written.
  wider = second.copy_and_resolve_references()
  wider.total_steps, wider.model.image.mlp_dim = 8, 128
  with pytest.raises(errors.UserError) as e:
    run_image_text(wider, workdir)
  message = str(e.value)
  assert "params/image_tower/encoder/block_0/mlp/fc1/bias has shape (64,)" in message
  assert "(128,) under the current config" in message
  assert "model.image.mlp_dim: 64 -> 128" in message and "lr" not in message
  assert sorted(os.listdir(os.path.join(workdir, workdir_lib.HISTORY_DIR))) == history
  assert analysis.checkpoint_steps(workdir) == [2, 4, 6]
