"""Damaged checkpoints and checkpoints rotated out mid-read: `jaxmm train` sets a damaged one
aside and resumes from the one before; readers (load_run, inspect, sample) pass over it, and
start again on the newest checkpoint when a live run rotates out the one they read."""
import logging
import math
import os
import shutil
import sys
import types

import jax
import numpy as np
import pytest

from jaxmm import analysis
from jaxmm import errors
from jaxmm.commands import filter as filter_command
from jaxmm.runs import run_files
from jaxmm.runs import checkpoints

# Every kind of file in a checkpoint of a one-process run; 'FOLDER/*' is the largest file there.
LAYOUT = ("_CHECKPOINT_METADATA", "commit_success.txt", "config/metadata", "data/metadata",
          "state/_METADATA", "state/_sharding", "state/manifest.ocdbt",
          "state/array_metadatas/process_0", "state/d/*", "state/ocdbt.process_0/manifest.ocdbt",
          "state/ocdbt.process_0/d/*")
# The kinds that a restore reads (orbax 0.12.8): the others may go without loss.
NEEDED = ("config/metadata", "data/metadata", "state/_METADATA", "state/manifest.ocdbt",
          "state/d/*", "state/ocdbt.process_0/d/*")


def truncate(path):
  """As `truncate -s 1000` (or to half a smaller file)."""
  os.truncate(path, min(1000, os.path.getsize(path) // 2))


def zero(path):
  """As `dd if=/dev/zero bs=16K count=1 conv=notrunc`: 16 KB of zeros from the start."""
  with open(path, "r+b") as f:
    f.write(bytes(min(16384, os.path.getsize(path))))


def remove(path):
  os.remove(path)


# (kind of file, damage): the removal of each kind, and truncation and zeros where they hurt.
CASES = [(kind, remove) for kind in LAYOUT] + [
    (kind, damage)
    for kind in ("state/ocdbt.process_0/d/*", "state/_METADATA", "config/metadata")
    for damage in (truncate, zero)
]
CASE_IDS = [f"{damage.__name__}-{kind}" for kind, damage in CASES]


def layout_file(step_dir: str, kind: str) -> str:
  """The file of `kind` (an entry of LAYOUT) in the checkpoint `step_dir`."""
  if not kind.endswith("/*"):
    return os.path.join(step_dir, kind)
  folder = os.path.join(step_dir, kind[:-2])
  return max((os.path.join(folder, name) for name in os.listdir(folder)), key=os.path.getsize)


def damaged_copy(workdir: str, copy: str, step: int, kind: str, damage) -> str:
  """Copies the run in `workdir` to `copy` and damages the file of `kind` in its checkpoint
  `step`; returns that file's path."""
  shutil.copytree(workdir, copy)
  path = layout_file(os.path.join(copy, checkpoints.CHECKPOINT_DIR, str(step)), kind)
  damage(path)
  return path


def damage_warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]


def assert_trees_equal(a, b):
  """Equal leaves, in order: a restored TrainState holds lists where a host restore has tuples."""
  a, b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def trained(tiny_config, shapes_data_dir, run_image_text, tmp_path_factory):
  """(config, workdir, {step: the run loaded there}) of a tiny SigLIP run with checkpoints 1, 2."""
  config = tiny_config("siglip", "total_steps=2", "checkpoint_every=1", "log_every=1",
                       "eval_every=0", f"data.data_dir={shapes_data_dir}")
  workdir = str(tmp_path_factory.mktemp("damage") / "run")
  run_image_text(config, workdir)
  return config, workdir, {step: analysis.load_run(workdir, step) for step in (1, 2)}


def assert_read_from(step: int, state, runs, workdir: str, kind: str, path: str, caplog):
  """`state` (a Run or TrainState) of `workdir`'s checkpoint `step` is checkpoint 1 of `runs`,
  read after one warning naming checkpoint 2 and the damaged file `path` (or the item folder
  that holds it), when a read needs the file of `kind`; else checkpoint 2, read unwarned."""
  warnings = damage_warnings(caplog)
  if kind in NEEDED:
    assert step == 1 and len(warnings) == 1 and "checkpoint 2 " in warnings[0]
    item_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR, "2", kind.split("/")[0])
    assert path in warnings[0] or item_dir in warnings[0]
  else:
    assert step == 2 and not warnings
  assert_trees_equal(state.params, runs[step].params)
  assert_trees_equal(state.opt_state, runs[step].opt_state)


@pytest.mark.parametrize("kind, damage", CASES, ids=CASE_IDS)
def test_load_run_passes_over_a_damaged_checkpoint_and_moves_nothing(trained, tmp_path, caplog,
                                                                     kind, damage):
  _, workdir, runs = trained
  copy = str(tmp_path / "run")
  path = damaged_copy(workdir, copy, 2, kind, damage)
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    loaded = analysis.load_run(copy)
  assert_read_from(loaded.step, loaded, runs, copy, kind, path, caplog)
  # A reader never moves a checkpoint: a run may be training there.
  assert sorted(os.listdir(os.path.join(copy, checkpoints.CHECKPOINT_DIR))) == ["1", "2"]
  assert not os.path.exists(os.path.join(copy, checkpoints.DAMAGED_DIR))


@pytest.mark.parametrize("kind, damage", CASES, ids=CASE_IDS)
def test_train_sets_aside_a_damaged_checkpoint_and_resumes_from_the_one_before(
    trained, tmp_path, run_image_text, caplog, kind, damage):
  config, workdir, runs = trained
  copy = str(tmp_path / "run")
  path = damaged_copy(workdir, copy, 2, kind, damage)
  # One step in all: the run resumes from checkpoint 1 or 2 with nothing left to train.
  config = config.copy_and_resolve_references()
  config.total_steps, config.optim.warmup_steps = 1, 0
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    state = run_image_text(config, copy)
  assert_read_from(int(state.step), state, runs, copy, kind, path, caplog)
  aside = os.path.join(copy, checkpoints.DAMAGED_DIR, "2")
  assert os.path.isdir(aside) == (kind in NEEDED)
  assert analysis.checkpoint_steps(copy) == ([1] if kind in NEEDED else [1, 2])


def test_a_failure_on_an_intact_checkpoint_keeps_its_error(trained, tmp_path, run_image_text,
                                                           monkeypatch):
  config, workdir, _ = trained
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  with pytest.raises(ValueError, match="Resource axis: fsdp .* is not found in mesh"):
    analysis.load_run(copy, mesh=jax.make_mesh((8,), ("batch",)))  # not the loop's axes
  # What orbax raises on a full device, say: a bare Exception, as for a damaged file.
  full = Exception("RESOURCE_EXHAUSTED: out of memory while restoring")

  def restore(*args):
    raise full

  monkeypatch.setattr(checkpoints, "restore", restore)
  with pytest.raises(Exception) as raised:
    run_image_text(config, copy)
  assert raised.value is full
  with pytest.raises(Exception) as raised:
    analysis.load_run(copy)
  assert raised.value is full
  assert analysis.checkpoint_steps(copy) == [1, 2]
  assert not os.path.exists(os.path.join(copy, checkpoints.DAMAGED_DIR))


def test_a_damaged_step_asked_for_is_one_line_naming_the_file(trained, tmp_path):
  copy = str(tmp_path / "run")
  path = damaged_copy(trained[1], copy, 2, "config/metadata", truncate)
  with pytest.raises(errors.UserError) as raised:
    analysis.load_run(copy, 2)
  message = str(raised.value)
  assert "\n" not in message
  assert message.startswith(f"checkpoint 2 of {copy!r} is damaged: cannot read {path} ")
  assert message.endswith("pass another step (saved: [1]), or none for the newest intact one")


def test_every_checkpoint_damaged_is_one_line(trained, tmp_path, caplog):
  copy = str(tmp_path / "run")
  damaged_copy(trained[1], copy, 2, "state/ocdbt.process_0/d/*", truncate)
  zero(layout_file(os.path.join(copy, checkpoints.CHECKPOINT_DIR, "1"), "state/_METADATA"))
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    with pytest.raises(errors.UserError, match=r"every checkpoint of .* is damaged \(steps "
                       r"\[1, 2\], as warned above\); `jaxmm train` with this --workdir moves"):
      analysis.load_run(copy)
  assert len(damage_warnings(caplog)) == 2


def test_inspect_summarizes_the_newest_intact_checkpoint(trained, tmp_path, caplog):
  copy = str(tmp_path / "run")
  damaged_copy(trained[1], copy, 2, "state/_METADATA", remove)
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    summary = analysis.run_summary(copy)
  assert summary["step"] == 1 and summary["steps"] == [1, 2]
  assert len(damage_warnings(caplog)) == 1


def rotate_on_first_read(monkeypatch, workdir: str, newer: str, reading: str = "restore"):
  """Makes the first call of `checkpoints.<reading>` find its checkpoint rotated out, as a run
  training with keep_checkpoints=1 does: checkpoint 2 (from `newer`) is saved and checkpoint 1
  deleted, after the reader has listed the steps (and for 'restore', read checkpoint 1's
  config and metadata)."""
  read = getattr(checkpoints, reading)
  folder = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)

  def rotating(manager, step, *args):
    if os.path.exists(newer):
      shutil.move(newer, os.path.join(folder, "2"))
      shutil.rmtree(os.path.join(folder, "1"))
    return read(manager, step, *args)

  monkeypatch.setattr(checkpoints, reading, rotating)


def live_copy(workdir: str, copy: str) -> str:
  """Copies the run with only checkpoint 1 in place; returns where checkpoint 2 waits."""
  shutil.copytree(workdir, copy)
  newer = copy + "_newer"
  shutil.move(os.path.join(copy, checkpoints.CHECKPOINT_DIR, "2"), newer)
  return newer


def test_a_checkpoint_rotated_out_mid_read_is_replaced_by_the_newest(trained, tmp_path,
                                                                     monkeypatch, caplog):
  _, workdir, runs = trained
  copy = str(tmp_path / "run")
  rotate_on_first_read(monkeypatch, copy, live_copy(workdir, copy))
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    loaded = analysis.load_run(copy)
  assert loaded.step == 2 and not [r for r in caplog.records if r.name == "jaxmm"]
  assert_trees_equal(loaded.params, runs[2].params)
  assert analysis.checkpoint_steps(copy) == [2]


# reader -> (what it reads first, step of workdir -> the step it read).
READERS = {
    "load_run": ("restore", lambda workdir, step: analysis.load_run(workdir, step).step),
    "inspect": ("restore_config", lambda workdir, step: analysis.run_summary(workdir, step)["step"]),
    "filter": ("restore_config", lambda workdir, step: filter_command._run_config(workdir, step)[0]),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_readers_start_again_when_their_checkpoint_is_rotated_out(trained, tmp_path, monkeypatch,
                                                                  reader):
  reading, step_read = READERS[reader]
  copy = str(tmp_path / "run")
  rotate_on_first_read(monkeypatch, copy, live_copy(trained[1], copy), reading)
  assert step_read(copy, None) == 2


@pytest.mark.parametrize("reader", list(READERS))
def test_a_step_asked_for_and_rotated_out_mid_read_names_the_steps_saved(trained, tmp_path,
                                                                         monkeypatch, reader):
  reading, step_read = READERS[reader]
  copy = str(tmp_path / "run")
  rotate_on_first_read(monkeypatch, copy, live_copy(trained[1], copy), reading)
  with pytest.raises(errors.UserError,
                     match=r"no checkpoint at step 1 in .*; steps saved: \[2\]; pass one of"):
    step_read(copy, 1)


def test_checkpoints_rotated_out_at_every_read_end_in_one_line(trained, tmp_path, monkeypatch):
  copy = str(tmp_path / "run")
  shutil.copytree(trained[1], copy)
  folder = os.path.join(copy, checkpoints.CHECKPOINT_DIR)
  restore = checkpoints.restore

  def saving_faster(manager, step, target):
    """The run saves the next checkpoint and deletes this one, at every read."""
    os.rename(os.path.join(folder, str(step)), os.path.join(folder, str(step + 10)))
    return restore(manager, step, target)

  monkeypatch.setattr(checkpoints, "restore", saving_faster)
  with pytest.raises(errors.UserError,
                     match=f"were rotated out {run_files.READ_TRIES} times while being read"):
    analysis.load_run(copy)


def test_late_callbacks_of_a_failed_read_are_not_printed(trained, monkeypatch):
  reported = []
  monkeypatch.setattr(sys, "unraisablehook", reported.append)
  analysis.checkpoint_steps(trained[1])  # opens a manager
  late = types.SimpleNamespace(exc_type=RuntimeError,
                               exc_value=RuntimeError("Event loop is closed"))
  other = types.SimpleNamespace(exc_type=ValueError, exc_value=ValueError("a real one"))
  sys.unraisablehook(late)
  sys.unraisablehook(other)
  assert reported == [other]


def test_the_check_holds_a_bounded_share_of_the_arrays_at_a_time(trained, monkeypatch):
  workdir = trained[1]
  monkeypatch.setattr(checkpoints, "CHECK_BYTES", 4096)
  read = checkpoints.read_arrays
  held = []  # bytes of each read

  def reading(state_dir, target):
    held.append(sum(leaf.nbytes for leaf in jax.tree.leaves(target) if hasattr(leaf, "nbytes")))
    return read(state_dir, target)

  monkeypatch.setattr(checkpoints, "read_arrays", reading)
  with run_files.read_only_manager(workdir) as manager:
    assert checkpoints.unreadable(manager, 2) is None
    sizes = [
        math.prod(meta.shape) * np.dtype(meta.dtype).itemsize
        for meta in jax.tree.leaves(checkpoints.state_metadata(manager, 2).tree)
    ]
  # Every array once, in several reads of about CHECK_BYTES.
  assert sum(held) == sum(sizes)
  assert len(held) > 1 and max(held) < 4096 + max(sizes)
