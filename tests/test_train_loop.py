"""The generic loop: checkpoints, exact resume, preemption, and restoring a run."""
import json
import os
import signal

import jax
import numpy as np
import pytest

from jaxmm import analysis
from jaxmm import errors

TOTAL = 6


@pytest.fixture
def config(tiny_config, shapes_data_dir):
  return tiny_config("siglip", f"total_steps={TOTAL}", "checkpoint_every=2", "log_every=2",
                     "eval_every=3", f"data.data_dir={shapes_data_dir}", "ema.decays=(0.9,)",
                     "ema.sigma_rels=(0.1,)")


class _Interrupt(Exception):
  pass


def _raise(batch):
  raise _Interrupt()


@pytest.fixture
def run(run_image_text):
  return run_image_text


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


def test_resume_after_a_crash_is_bit_identical(config, tmp_path, run):
  straight = run(config, str(tmp_path / "straight"))
  crashed = str(tmp_path / "crashed")
  with pytest.raises(_Interrupt):
    run(config, crashed, at_step=6, action=_raise)  # dies while reading step 6's batch
  assert analysis.checkpoint_steps(crashed)[-1] == 4
  resumed = run(config, crashed)
  assert int(resumed.step) == TOTAL
  _assert_trees_equal(resumed.params, straight.params)
  _assert_trees_equal(resumed.opt_state, straight.opt_state)
  assert set(resumed.ema) == {"decay_0.9", "sigma_rel_0.1"}
  _assert_trees_equal(resumed.ema, straight.ema)


def test_sigterm_saves_the_current_step_and_stops(config, tmp_path, run):
  workdir = str(tmp_path / "preempted")
  with pytest.raises(errors.Interrupted) as stopped:
    run(config, workdir, at_step=3, action=lambda b: os.kill(os.getpid(), signal.SIGTERM) or b)
  # SIGTERM arrives when batch 3 is read: step 3, not a checkpoint step
  # (checkpoint_every=2), completes, is saved, and the loop stops.
  assert (stopped.value.signum, stopped.value.step) == (signal.SIGTERM, 3)
  assert analysis.checkpoint_steps(workdir) == [2, 3]
  assert int(run(config, workdir).step) == TOTAL


def test_load_run_restores_params_config_and_position(config, tmp_path, capfd, run):
  workdir = str(tmp_path / "run")
  state = run(config, workdir)
  capfd.readouterr()
  restored = analysis.load_run(workdir)
  assert analysis.checkpoint_steps(workdir) == [2, 4, 6]
  assert capfd.readouterr() == ("", "")  # no library notes on success
  assert restored.step == TOTAL
  assert restored.config == config
  _assert_trees_equal(restored.params, state.params)
  _assert_trees_equal(restored.ema, state.ema)
  assert restored.model_state == {}
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(restored.params))
  earlier = analysis.load_run(workdir, step=4)
  assert earlier.step == 4
  assert earlier.data_position != restored.data_position
  with pytest.raises(ValueError, match=r"no checkpoint at step 5 .*\[2, 4, 6\]"):
    analysis.load_run(workdir, step=5)
  with pytest.raises(TypeError, match="step must be an int"):
    analysis.load_run(workdir, step="4")


def test_workdir_holds_config_events_and_eval_json(config, tmp_path, run):
  workdir = str(tmp_path / "run")
  run(config, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["total_steps"] == TOTAL
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))
  with open(os.path.join(workdir, "zero_shot.json")) as f:
    results = json.load(f)
  assert sorted(results, key=int) == ["3", "6"]
  for accuracies in results.values():
    assert set(accuracies) == {"zero_shot/shape", "zero_shot/colour", "zero_shot/held_out_pairs"}
    assert all(0.0 <= v <= 1.0 for v in accuracies.values())


def test_load_run_of_an_empty_workdir_fails_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"no run in '{tmp_path}'"):
    analysis.load_run(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=f"no run in '{tmp_path}'"):
    analysis.checkpoint_steps(str(tmp_path))


def test_trains_on_any_prepared_tfds_dataset(tiny_config, toy_pairs_data_dir, tmp_path, run):
  overrides = ("total_steps=2", "batch_size=8", "checkpoint_every=2", "log_every=1",
               f"data.data_dir={toy_pairs_data_dir}", "data.name=toy_pairs", "data.image_key=img",
               "data.text_key=text", "data.max_len=8")
  with pytest.raises(ValueError, match="no zero-shot prompts.*toy_pairs.*eval_every=0"):
    run(tiny_config("siglip", *overrides), str(tmp_path / "with_eval"))
  config = tiny_config("siglip", *overrides, "eval_every=0")
  workdir = str(tmp_path / "run")
  state = run(config, workdir)
  assert int(state.step) == 2 and analysis.checkpoint_steps(workdir) == [2]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))
  assert not os.path.exists(os.path.join(workdir, "zero_shot.json"))
