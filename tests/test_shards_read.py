"""Shard sources read back what `jaxmm data export` wrote, in the TFDS pipeline's order."""
import glob
import io
import json
import os
import tarfile

import ml_collections
import numpy as np
from PIL import Image
import pytest

from jaxmm import data
from jaxmm.data.shards import decode
from jaxmm.data.shards import tar_index

from test_bucket_workdir import BUCKET, bucket  # noqa: F401  pylint: disable=unused-import
from test_data import _assert_batches_equal, _take  # pylint: disable=protected-access

SOURCES = ("wds", "parquet")


def _config(data_dir, **overrides):
  config = dict(name="shapes", data_dir=data_dir, train_split="test", eval_split="test",
                image_size=32, max_len=48, tokenizer="bytes", augment=True, shuffle_seed=None)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def _shard_config(data_dir, shards, source, **overrides):
  return _config(data_dir, source=source, files=shards[source], eval_files=shards[source],
                 image_key="png", text_key="txt", **overrides)


@pytest.fixture(scope="module")
def records(shapes_data_dir):
  """Every record of the shapes test split, from TFDS: a dict of arrays [2000, ...]."""
  source = data.data_source("shapes", "test", data_dir=shapes_data_dir)
  records = source.__getitems__(range(len(source)))
  return {key: np.stack([r[key] for r in records]) for key in records[0]}


@pytest.mark.parametrize("source", SOURCES)
def test_example_i_is_record_i(shapes_data_dir, shapes_shards, records, source):
  reader = data.split_reader(_shard_config(shapes_data_dir, shapes_shards, source), "test")
  assert reader.num_examples == 2000 and len(reader.shards) == 7  # ceil(2000 / 300)
  indices = np.array([0, 299, 300, 1999, 1234, 0])
  got = reader.read(indices)
  # PNG is lossless: the pixels are the stored uint8 ones, mapped to [-1, 1] as x / 127.5 - 1.
  np.testing.assert_allclose(got["png"], records["image"][indices] / 127.5 - 1, rtol=0,
                             atol=1e-6)
  assert [bytes(t) if isinstance(t, bytes) else t.encode() for t in got["txt"]] == [
      records["caption"][i] for i in indices]
  for name in ("shape", "colour", "size", "position", "held_out"):
    np.testing.assert_array_equal(got[name], records[name][indices], err_msg=name)
  assert got["held_out"].dtype == bool
  assert data.class_labels(_shard_config(shapes_data_dir, shapes_shards, source)) == {
      "shape": 6, "colour": 8, "size": 3, "position": 9}


@pytest.mark.parametrize("source", SOURCES)
def test_training_batches_equal_the_tfds_pipelines(shapes_data_dir, shapes_shards, source):
  """Augmented batches across an epoch's end (2000 = 15.6 batches of 128), bit for bit."""
  tfds_batches = _take(data.train_iterator(_config(shapes_data_dir), global_batch_size=128,
                                           seed=4), 17)
  shard_config = _shard_config(shapes_data_dir, shapes_shards, source)
  iterator = data.train_iterator(shard_config, global_batch_size=128, seed=4)
  for step, expected in enumerate(tfds_batches):
    _assert_batches_equal(next(iterator), expected)
  assert iterator.metrics() == {"skipped": 0} and iterator.metrics() == {"skipped": 0}


@pytest.mark.parametrize("source", SOURCES)
def test_host_slices_and_resume(shapes_data_dir, shapes_shards, source):
  config = _shard_config(shapes_data_dir, shapes_shards, source)
  whole = _take(data.train_iterator(config, global_batch_size=32, seed=3), 3)
  hosts = [_take(data.train_iterator(config, global_batch_size=32, seed=3, process_index=p,
                                     process_count=4), 3) for p in range(4)]
  for step in range(3):
    union = {k: np.concatenate([h[step][k] for h in hosts]) for k in whole[step]}
    _assert_batches_equal(union, whole[step])
  original = data.train_iterator(config, global_batch_size=32, seed=3)
  _take(original, 2)
  state = json.loads(json.dumps(original.get_state()))
  resumed = data.train_iterator(config, global_batch_size=32, seed=3)
  resumed.set_state(state)
  _assert_batches_equal(next(resumed), whole[2])


@pytest.mark.parametrize("source", SOURCES)
def test_eval_batches_and_a_first_examples_split_equal_the_tfds_ones(shapes_data_dir,
                                                                     shapes_shards, source):
  shard_config = _shard_config(shapes_data_dir, shapes_shards, source)
  for split in ("test", "test[:700]"):
    expected = list(data.eval_batches(_config(shapes_data_dir), split=split, batch_size=512,
                                      process_index=1, process_count=2))
    got = list(data.eval_batches(shard_config, split=split, batch_size=512, process_index=1,
                                 process_count=2))
    assert len(got) == len(expected) == -(-int(split[6:-1] or 2000) // 512)
    for a, b in zip(got, expected):
      _assert_batches_equal(a, b)


def test_resized_batches_match_the_tfds_ones_within_rounding(shapes_data_dir, shapes_shards):
  """At image_size 16 each shard image is resized alone, the TFDS batch at once: the same float32
  products summed in another blocking. An output pixel sums 2 x 4 x 4 products of weights <= 1
  and values <= 1 in two passes, so it moves by at most ~32 · 2⁻²⁴ ≈ 2e-6."""
  expected = next(data.train_iterator(_config(shapes_data_dir, image_size=16),
                                      global_batch_size=64, seed=0))
  got = next(data.train_iterator(_shard_config(shapes_data_dir, shapes_shards, "wds",
                                               image_size=16), global_batch_size=64, seed=0))
  assert got["image"].shape == (64, 16, 16, 3)
  np.testing.assert_allclose(got["image"], expected["image"], rtol=0, atol=1e-5)


def _png(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def test_an_image_is_centre_cropped_to_a_square():
  pixels = np.random.default_rng(0).integers(0, 256, (20, 40, 3), np.uint8)  # wide
  got = decode.image(_png(pixels), 20)
  np.testing.assert_allclose(got, pixels[:, 10:30] / 127.5 - 1, rtol=0, atol=1e-6)
  grey = decode.image(_png(pixels[:, :20, 0]), 20)  # one channel: repeated on three
  np.testing.assert_allclose(grey, np.repeat(pixels[:, :20, :1], 3, -1) / 127.5 - 1, atol=1e-6)


@pytest.mark.parametrize("name, expected", [
    ("000042.jpg", ("000042", "jpg")),
    ("part/a.seg.PNG", ("part/a", "seg.png")),  # the key ends at the first dot of the base name
    ("dir.v2/b.txt", ("dir.v2/b", "txt")),
    ("__key__.txt", None),
    ("dir/.hidden.jpg", None),
    ("README", None),
])
def test_member_names_split_as_webdataset_splits_them(name, expected):
  assert tar_index.split_name(name) == expected


def _write_tar(path, members):
  with tarfile.open(path, "w") as tar:
    for name, payload in members:
      info = tarfile.TarInfo(name)
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))


def test_the_index_is_cached_beside_the_shard_and_rebuilt_when_it_changes(tmp_path, monkeypatch):
  shard = tmp_path / "00000.tar"
  pixels = np.full((4, 4, 3), 40, np.uint8)
  _write_tar(shard, [("a.png", _png(pixels)), ("a.txt", b"first")])
  first = tar_index.load(str(shard))
  assert (tmp_path / ".00000.tar.jaxmm-index").is_file()
  assert first["keys"].tolist() == ["a"]
  calls = []
  monkeypatch.setattr(tar_index, "build", lambda *a: calls.append(a))
  assert tar_index.load(str(shard))["keys"].tolist() == ["a"] and not calls  # from the cache
  monkeypatch.undo()
  _write_tar(shard, [("b.png", _png(pixels)), ("b.txt", b"second caption"),
                     ("c.png", _png(pixels))])
  os.utime(shard, (1, 1))  # another mtime, as a rewritten shard has
  assert tar_index.load(str(shard))["keys"].tolist() == ["b", "c"]


# pylint: disable-next=redefined-outer-name
def test_shards_in_a_bucket_read_as_local_ones(bucket, shapes_data_dir, shapes_shards,  # noqa: F811
                                               tmp_path, monkeypatch):
  monkeypatch.setattr(tar_index, "INDEX_CACHE_DIR", str(tmp_path / "index_cache"))
  (bucket / "shards").mkdir()
  for path in sorted(glob.glob(shapes_shards["wds"]))[:2]:
    with open(path, "rb") as f:
      (bucket / "shards" / os.path.basename(path)).write_bytes(f.read())
  config = _config(shapes_data_dir, source="wds", files=f"{BUCKET}/shards/*.tar", image_key="png",
                   text_key="txt", cache=False)
  reader = data.split_reader(config, "test")
  assert reader.num_examples == 600
  assert len(os.listdir(tmp_path / "index_cache")) == 2  # a bucket's indexes are cached locally
  indices = np.array([599, 3, 300])
  expected = data.split_reader(_shard_config(shapes_data_dir, shapes_shards, "wds"),
                               "test").read(indices)
  _assert_batches_equal(reader.read(indices), expected)
