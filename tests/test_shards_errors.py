"""Every mistake with shards ends in one line `jaxmm <command>: error: ...`, before training."""
import glob
import importlib.util
import os
import pathlib
import subprocess
import sys

import ml_collections
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxmm import data
from jaxmm import errors

from conftest import cli_error_line

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  monkeypatch.chdir(REPO)


def _train_error(capsys, workdir, tiny_overrides, *overrides) -> str:
  line = cli_error_line(capsys, [
      "train", "--config", "configs/siglip_shapes.py", "--workdir", str(workdir),
      "--config.eval_every=0"
  ] + [f"--config.{o}" for o in list(tiny_overrides) + list(overrides)])
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "1"))
  return line


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
  """Files that are no usable shards: {'garbage': a .tar of text, 'gzipped': a .tar.gz,
  'int_captions': a parquet file whose 'txt' column holds integers}."""
  folder = tmp_path_factory.mktemp("odd")
  (folder / "garbage.tar").write_bytes(b"this is no tar file" * 100)
  (folder / "shards.tar.gz").write_bytes(b"\x1f\x8b")
  table = pa.table({"png": pa.array([b"\x89PNG"], pa.binary()), "txt": pa.array([1], pa.int64())})
  pq.write_table(table, folder / "int_captions.parquet")
  return {"garbage": str(folder / "garbage.tar"), "gzipped": str(folder / "shards.tar.gz"),
          "int_captions": str(folder / "int_captions.parquet")}


def test_a_glob_that_matches_nothing(capsys, tmp_path, tiny_overrides):
  line = _train_error(capsys, tmp_path / "run", tiny_overrides, "data.source=wds",
                      "data.files=nothing/*.tar")
  assert line == ("jaxmm train: error: data.files: 'nothing/*.tar' matches no file; set "
                  "--config.data.files to a glob of existing shards, local or gs://, e.g. "
                  "'shards/*.tar'")


@pytest.mark.parametrize("source, overrides, expected", [
    ("wds", ["data.text_key=txt"],
     "00000.tar has no image for data.image_key='image' (its member extensions: json, png, txt); "
     "set --config.data.image_key to the one that holds its images"),
    ("wds", ["data.image_key=jpg;png;webp"],
     "00000.tar has no caption for data.text_key='caption' (its member extensions: json, png, "
     "txt); set --config.data.text_key to the one that holds its captions"),
    ("parquet", ["data.text_key=txt"],
     "00000.parquet has no image for data.image_key='image' (its columns: key, png, txt, shape, "
     "colour, size, position, held_out)"),
])
def test_a_shard_without_the_image_or_text_key_lists_what_it_has(capsys, tmp_path, tiny_overrides,
                                                                 shapes_shards, source, overrides,
                                                                 expected):
  line = _train_error(capsys, tmp_path / "run", tiny_overrides, f"data.source={source}",
                      f"data.files={shapes_shards[source]}", *overrides)
  assert line.startswith("jaxmm train: error: ") and expected in line


def test_a_caption_column_of_the_wrong_type(capsys, tmp_path, tiny_overrides, odd_files):
  line = _train_error(capsys, tmp_path / "run", tiny_overrides, "data.source=parquet",
                      f"data.files={odd_files['int_captions']}", "data.image_key=png",
                      "data.text_key=txt")
  assert line == (f"jaxmm train: error: {odd_files['int_captions']} has data.text_key='txt', but "
                  "its column 'txt' holds int64, not string or binary (its columns: png, txt); "
                  "set --config.data.text_key to the one that holds its captions")


@pytest.mark.parametrize("kind, source, expected", [
    ("garbage", "wds", "garbage.tar is not a tar file"),
    ("gzipped", "wds", "shards.tar.gz, a compressed tar, which cannot be read by offset"),
    ("int_captions", "wds", "int_captions.parquet, which is not a .tar shard of "
     "data.source='wds'; set --config.data.source='parquet' for such files"),
])
def test_files_that_are_no_shards_of_the_source(capsys, tmp_path, tiny_overrides, odd_files, kind,
                                               source, expected):
  line = _train_error(capsys, tmp_path / "run", tiny_overrides, f"data.source={source}",
                      f"data.files={odd_files[kind]}")
  assert expected in line


@pytest.mark.parametrize("overrides, expected", [
    (["data.source=webdataset"], "data.source='webdataset' is not one of 'tfds', 'wds', "
     "'parquet'"),
    (["data.source=wds"], "data.source='wds' reads data.files, which is None; set "
     "--config.data.files to a glob of the shards"),
    (["data.source=wds", "data.files={wds}", "data.image_key=png", "data.text_key=txt",
      "data.max_skipped_fraction=2.0"], "data.max_skipped_fraction=2.0 must be a number in [0, 1]"),
    (["data.source=wds", "data.files={wds}", "data.image_key=png", "data.text_key=txt",
      "data.crop_scale=(0.0, 1.0)"], "data.crop_scale or data.crop_ratio: scale=(0.0, 1.0) must "
     "satisfy 0 < low <= high <= 1"),
])
def test_bad_shard_settings(capsys, tmp_path, tiny_overrides, shapes_shards, overrides, expected):
  overrides = [o.format(**shapes_shards) for o in overrides]
  assert expected in _train_error(capsys, tmp_path / "run", tiny_overrides, *overrides)


def test_an_eval_split_without_files_names_the_key(shapes_shards):
  config = ml_collections.ConfigDict(dict(
      name="shapes", train_split="train", eval_split="test", image_size=32, max_len=48,
      tokenizer="bytes", augment=False, source="wds", files=shapes_shards["wds"],
      image_key="png", text_key="txt"))
  with pytest.raises(errors.UserError, match="reads data.eval_files, which is None"):
    data.eval_batches(config, batch_size=8)
  with pytest.raises(errors.UserError, match="split 'validation' is neither"):
    data.eval_batches(config, split="validation", batch_size=8)


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_a_bucket_without_the_gcs_extra(tmp_path, tiny_overrides):
  # In a process of its own: tests that serve gs:// from a fake bucket leave fsspec's cache set.
  result = subprocess.run([
      sys.executable, "-m", "jaxmm.commands.cli", "train", "--config", "configs/siglip_shapes.py",
      "--workdir", str(tmp_path / "run"), "--config.data.source=wds",
      "--config.data.files=gs://nonexistent-bucket/shards/*.tar"
  ] + [f"--config.{o}" for o in tiny_overrides], capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.splitlines() == [
      "jaxmm train: error: gs://nonexistent-bucket: reading a bucket needs a package that is "
      "missing (ImportError: Please install gcsfs to access Google Storage); install jaxmm's "
      "[gcs] extra: pip install 'jaxmm[gcs]'"
  ]


def test_data_commands_report_mistakes_in_one_line(capsys, tmp_path, shapes_data_dir,
                                                   shapes_shards, odd_files):
  export = ["data", "export", "--dataset", "shapes", "--split", "test", "--format", "wds",
            "--data-dir", shapes_data_dir]
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("")
  for args, expected in [
      (export + ["--out", str(tmp_path / "full")], "is not empty (it holds x); give a new or "
       "empty folder for the shards"),
      (["data", "export", "--dataset", "shapes", "--split", "tset", "--format", "wds",
        "--data-dir", shapes_data_dir, "--out", str(tmp_path / "o")], "did you mean 'test'?"),
      (export + ["--out", str(tmp_path / "o"), "--text-feature", "shape"],
       "--text-feature 'shape' is no text feature"),
      (export + ["--out", str(tmp_path / "o"), "--shard-size", "0"],
       "--shard-size=0 must be an integer >= 1"),
      (["data", "stats", "--files", "nothing/*.tar"], "--files: 'nothing/*.tar' matches no file"),
      (["data", "stats", "--files", "shards/*"], "give globs ending in .tar"),
      (["data", "stats", "--files", odd_files["garbage"]], "garbage.tar is not a tar file"),
      (["data", "stats", "--files", shapes_shards["wds"], "--image-key", "jpg"],
       "has no jpg for --image-key"),
  ]:
    line = cli_error_line(capsys, args)
    assert line.startswith("jaxmm data: error: ") and expected in line, (args, line)
  assert not glob.glob(str(tmp_path / "o" / "*"))
