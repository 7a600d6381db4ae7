"""`jaxmm filter` refuses bad input in one line, before any array is read or compiled."""
import json

import jax
import numpy as np
import pytest

from jaxmm import config_loading
from jaxmm.commands import cli
from jaxmm.runs import checkpoints
from test_sample_command import on_read_only_mount, without_write_permission


def _fake_run(workdir, config) -> str:
  """A workdir with one checkpoint (step 1) of `config` and a stand-in state: enough for every
  check that reads a run's config, and for nothing that reads its parameters."""
  manager = checkpoints.make_manager(str(workdir))
  state = {"params": {"w": np.zeros(2, np.float32)}}
  checkpoints.save(manager, 1, state, {}, json.loads(config_loading.config_to_json(config)))
  checkpoints.finish(manager)
  manager.close()
  return str(workdir)


@pytest.fixture(scope="module")
def image_text_run(tiny_config, tmp_path_factory):
  return _fake_run(tmp_path_factory.mktemp("filter_errors") / "siglip", tiny_config("siglip"))


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory):
  config = config_loading.load_config("configs/edm_shapes.py")
  return _fake_run(tmp_path_factory.mktemp("filter_errors") / "edm", config)


@pytest.fixture
def compiles():
  """The number of XLA compilations since the test began, as a one-element list."""
  count = [0]

  def listen(event, duration, **kwargs):
    del duration, kwargs
    count[0] += event == "/jax/core/compile/backend_compile_duration"

  jax.monitoring.register_event_duration_secs_listener(listen)
  yield count
  jax.monitoring.unregister_event_duration_listener(listen)


def _error_line(capsys, args) -> str:
  """Runs `jaxmm filter ARGS`; returns its one stderr line after checking exit status 2."""
  with pytest.raises(SystemExit) as e:
    cli.main(["filter"] + args)
  assert e.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxmm filter: error: "), lines
  return lines[0]


def _args(run, out, *, dataset="toy_pairs", data_dir=None, split="train", keep="0.5"):
  args = [
      "--run",
      str(run), "--dataset", dataset, "--split", split, "--keep", keep, "--out",
      str(out)
  ]
  return args + (["--data-dir", str(data_dir)] if data_dir else [])


@pytest.mark.parametrize("keep", ["0", "-0.5", "1.5"])
def test_keep_outside_zero_one(capsys, tmp_path, image_text_run, compiles, keep):
  line = _error_line(capsys, _args(image_text_run, tmp_path / "out", keep=keep))
  assert f"--keep {float(keep)}: give the fraction of pairs to keep, a number in (0, 1]" in line
  assert not (tmp_path / "out").exists() and compiles == [0]


@pytest.mark.parametrize("keep", ["nan", "inf"])
def test_keep_that_is_not_finite(capsys, tmp_path, image_text_run, keep):
  with pytest.raises(SystemExit) as e:
    cli.main(["filter"] + _args(image_text_run, tmp_path / "out", keep=keep))
  assert e.value.code == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      f"jaxmm filter: error: argument --keep: {keep} is not a finite number; give a finite one")


def test_out_that_is_not_empty_or_is_a_file(capsys, tmp_path, image_text_run, compiles):
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "old.txt").write_text("")
  line = _error_line(capsys, _args(image_text_run, tmp_path / "out"))
  assert f"--out {tmp_path / 'out'} is not empty (it holds old.txt)" in line
  line = _error_line(capsys, _args(image_text_run, tmp_path / "out" / "old.txt"))
  assert "old.txt is a file" in line
  assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"] and compiles == [0]


def test_run_dir_without_a_run(capsys, tmp_path, compiles):
  line = _error_line(capsys, _args(tmp_path / "nothing", tmp_path / "out"))
  assert f"--run {tmp_path / 'nothing'}: no run in" in line and "there is no such folder" in line
  assert compiles == [0]


def test_diffusion_run_is_refused(capsys, tmp_path, diffusion_run, compiles):
  line = _error_line(capsys, _args(diffusion_run, tmp_path / "out"))
  assert f"--run {diffusion_run} is an experiment='diffusion' run" in line
  assert "contrastive image-text run (experiment='image_text')" in line
  assert compiles == [0]


def test_unknown_dataset_lists_the_known_ones(capsys, tmp_path, image_text_run, toy_pairs_data_dir,
                                              compiles):
  line = _error_line(
      capsys,
      _args(image_text_run, tmp_path / "out", dataset="toy_pair", data_dir=toy_pairs_data_dir))
  assert ("--dataset='toy_pair' is not one of 'digits', 'shapes', 'toy_pairs'; did you mean "
          f"'toy_pairs'? (the bundled datasets and those prepared in {toy_pairs_data_dir}") in line
  assert compiles == [0]


def test_unknown_split_lists_the_splits(capsys, tmp_path, image_text_run, toy_pairs_data_dir,
                                        compiles):
  line = _error_line(
      capsys, _args(image_text_run, tmp_path / "out", split="tran", data_dir=toy_pairs_data_dir))
  assert "--split='tran' is not one of 'train'; did you mean 'train'?" in line
  assert compiles == [0]


def test_dataset_without_the_features_the_run_reads(capsys, tmp_path, image_text_run,
                                                    toy_pairs_data_dir, compiles):
  line = _error_line(capsys, _args(image_text_run, tmp_path / "out", data_dir=toy_pairs_data_dir))
  assert ("--dataset toy_pairs has no feature 'image', which --run "
          f"{image_text_run} reads as data.image_key; its features: 'img', 'label', 'text'") in line
  assert compiles == [0]


def test_out_that_is_the_data_dir(capsys, tmp_path, image_text_run, compiles):
  line = _error_line(
      capsys, _args(image_text_run, tmp_path / "data", dataset="shapes",
                    data_dir=tmp_path / "data"))
  assert f"--out {tmp_path / 'data'} is where --dataset is read from" in line
  assert not (tmp_path / "data").exists() and compiles == [0]


def test_config_overrides_are_refused(capsys, tmp_path, image_text_run):
  with pytest.raises(SystemExit) as e:
    cli.main(["filter"] + _args(image_text_run, tmp_path / "out") + ["--config.seed=1"])
  assert e.value.code == 2
  assert "jaxmm filter takes no --config.KEY overrides" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--batch-size", "--batch_size"])
def test_batch_size_below_one(capsys, tmp_path, image_text_run, shapes_data_dir, compiles, flag):
  args = _args(image_text_run, tmp_path / "out", dataset="shapes", data_dir=shapes_data_dir)
  line = _error_line(capsys, args + [flag, "0"])
  assert "--batch-size=0 must be an integer >= 1" in line
  assert not (tmp_path / "out").exists() and compiles == [0]


def test_out_under_a_file(capsys, tmp_path, compiles):
  (tmp_path / "file").write_text("")
  # No run at --run: had --out been checked after reading it, the error would name --run.
  line = _error_line(capsys, _args(tmp_path / "none", tmp_path / "file" / "out"))
  assert line == (f"jaxmm filter: error: --out {tmp_path}/file/out: {tmp_path}/file is a file, not "
                  "a folder; give a path in a folder")
  assert compiles == [0]


def test_out_on_a_read_only_mount(tmp_path):
  (tmp_path / "ro").mkdir()
  result = on_read_only_mount(tmp_path / "ro", "filter",
                              *_args(tmp_path / "none", tmp_path / "ro" / "out"))
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f"jaxmm filter: error: --out {tmp_path}/ro/out: cannot write in {tmp_path}/ro (Read-only "
      "file system); give a path on a writable disk, in a folder you may write to")


def test_out_in_a_folder_without_write_permission(tmp_path):
  (tmp_path / "locked").mkdir()
  result = without_write_permission(tmp_path / "locked", "filter",
                                    *_args(tmp_path / "none", tmp_path / "locked"))
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f"jaxmm filter: error: --out {tmp_path}/locked: cannot write in {tmp_path}/locked "
      "(Permission denied); give a path on a writable disk, in a folder you may write to")
