"""Tests for jaxmm.data: the `shapes` builder, tokenizers, preprocessing, pipelines."""
import json
import os
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest

from jaxmm import data
from jaxmm import errors
from jaxmm.data import pipeline
from jaxmm.data import preprocess
from jaxmm.data import sources
from jaxmm.data import shapes
from jaxmm.data.shapes import shapes_dataset_builder

# Reference colours chosen here, independently of the generator's palette.
REFERENCE_RGB = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "orange": (255, 165, 0),
    "white": (255, 255, 255),
    "purple": (128, 0, 128),
}


@pytest.fixture(scope="session")
def data_dir(shapes_data_dir):
  return shapes_data_dir


def _records(data_dir, split):
  source = data.data_source("shapes", split, data_dir=data_dir)
  return pipeline._stack(source.__getitems__(range(len(source))))


@pytest.fixture(scope="session")
def test_records(data_dir):
  return _records(data_dir, "test")


@pytest.fixture(scope="session")
def train_records(data_dir):
  return _records(data_dir, "train")


def _config(data_dir, **overrides):
  config = dict(name="shapes",
                data_dir=data_dir,
                train_split="train",
                eval_split="test",
                image_size=32,
                max_len=48,
                tokenizer="bytes",
                augment=True,
                shuffle_seed=None)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def _foreground(records):
  """[N, 32, 32] bool: pixels far brighter than the dark background."""
  return records["image"].max(axis=-1) > 120


# ----------------------------------------------------------------- the builder


def test_splits_sizes_and_vocabularies(data_dir):
  assert len(data.data_source("shapes", "train", data_dir=data_dir)) == 20_000
  assert len(data.data_source("shapes", "test", data_dir=data_dir)) == 2_000
  assert len(set(shapes.SHAPES)) >= 6 and len(set(shapes.COLOURS)) >= 8
  assert len(set(shapes.POSITIONS)) == 9 and len(set(shapes.SIZES)) >= 2
  assert 6 <= len(set(shapes.HELD_OUT_PAIRS)) <= 8


def test_records_have_promised_features(test_records):
  assert test_records["image"].shape == (2000, 32, 32, 3)
  assert test_records["image"].dtype == np.uint8
  for key, names in [("shape", shapes.SHAPES), ("colour", shapes.COLOURS), ("size", shapes.SIZES),
                     ("position", shapes.POSITIONS)]:
    assert set(test_records[key].tolist()) == set(range(len(names))), key
  assert test_records["held_out"].dtype == np.bool_


def test_colour_from_pixels(test_records):
  names = list(REFERENCE_RGB)
  palette = np.array([REFERENCE_RGB[n] for n in names], np.float64)
  palette /= palette.max(axis=1, keepdims=True)
  solid = test_records["image"].max(axis=-1) > 180  # mostly fully covered pixels
  for i in range(len(solid)):
    mean = test_records["image"][i][solid[i]].astype(np.float64).mean(axis=0)
    # Compare chromaticity (RGB / max channel): anti-aliased edges are darker.
    nearest = names[np.argmin(((palette - mean / mean.max())**2).sum(axis=1))]
    assert nearest == shapes.COLOURS[test_records["colour"][i]], (i, mean)


def test_position_from_pixels(test_records):
  fg = _foreground(test_records)
  ys, xs = np.mgrid[0:32, 0:32]
  for i in range(len(fg)):
    name = shapes.POSITIONS[test_records["position"][i]]
    row = 0 if "top" in name else 2 if "bottom" in name else 1
    col = 0 if "left" in name else 2 if "right" in name else 1
    cy, cx = ys[fg[i]].mean(), xs[fg[i]].mean()
    assert (int(cy // (32 / 3)), int(cx // (32 / 3))) == (row, col), (i, name, cy, cx)


def test_size_orders_foreground_area_within_each_shape(test_records):
  area = _foreground(test_records).sum(axis=(1, 2))
  order = [shapes.SIZES.index(s) for s in ("small", "medium", "large") if s in shapes.SIZES]
  for k in range(len(shapes.SHAPES)):
    of_shape = test_records["shape"] == k
    areas = [area[of_shape & (test_records["size"] == z)] for z in order]
    for smaller, larger in zip(areas, areas[1:]):
      assert smaller.max() < larger.min(), shapes.SHAPES[k]


def test_shape_geometry_from_pixels(test_records):
  """Fill ratio of the bounding box: 1 for squares, pi/4 for circles, ~1/2 for the rest."""
  fg = _foreground(test_records)
  fill, lower_heavy = [], []
  for m in fg:
    rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    box = m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    fill.append(box.mean())
    half = box.shape[0] // 2
    lower_heavy.append(box[-half:].sum() > box[:half].sum())
  fill, lower_heavy = np.array(fill), np.array(lower_heavy)
  name = np.array(shapes.SHAPES)[test_records["shape"]]
  assert fill[name == "square"].mean() > 0.95
  assert 0.72 < fill[name == "circle"].mean() < 0.86
  for other in set(shapes.SHAPES) - {"square", "circle"}:
    assert fill[name == other].mean() < 0.65, other
  assert lower_heavy[name == "triangle"].mean() > 0.95  # apex up
  assert lower_heavy[name == "diamond"].mean() < 0.6  # symmetric


def test_captions_match_labels(test_records):
  phrase = {
      "top left": "in the top left",
      "center": "in the center",
      "bottom right": "in the bottom right",
      "top": "at the top",
      "left": "on the left"
  }
  for i in range(len(test_records["caption"])):
    text = test_records["caption"][i].decode()
    shape, colour, size, position = (names[test_records[key][i]] for key, names in [(
        "shape", shapes.SHAPES), ("colour",
                                  shapes.COLOURS), ("size",
                                                    shapes.SIZES), ("position", shapes.POSITIONS)])
    assert text.startswith(f"a {size} {colour} {shape} "), text
    assert text.endswith(position), text
    if position in phrase:
      assert text.endswith(phrase[position]), text
  assert shapes.caption("triangle", "red", "small",
                        "top left") == ("a small red triangle in the top left")
  assert shapes.caption(shapes.SHAPES.index("circle"), shapes.COLOURS.index("blue"),
                        shapes.SIZES.index("large"),
                        shapes.POSITIONS.index("center")) == ("a large blue circle in the center")


def _pairs(records):
  return {(shapes.SHAPES[s], shapes.COLOURS[c]) for s, c in zip(records["shape"], records["colour"])
         }


def test_held_out_pairs(train_records, test_records):
  held = set(shapes.HELD_OUT_PAIRS)
  train_pairs = _pairs(train_records)
  assert not train_pairs & held
  assert held <= _pairs(test_records)
  assert {s for s, _ in train_pairs} == set(shapes.SHAPES)
  assert {c for _, c in train_pairs} == set(shapes.COLOURS)
  expected = [(shapes.SHAPES[s], shapes.COLOURS[c]) in held
              for s, c in zip(test_records["shape"], test_records["colour"])]
  np.testing.assert_array_equal(test_records["held_out"], expected)
  assert not train_records["held_out"].any()


def test_generation_is_deterministic_and_matches_the_build(test_records):
  first, second = shapes_dataset_builder.generate_split(
      "test"), shapes_dataset_builder.generate_split("test")
  for key in first:
    np.testing.assert_array_equal(first[key], second[key])
    np.testing.assert_array_equal(first[key], test_records[key])


# ---------------------------------------------------------- building on disk


@pytest.fixture
def tiny_shapes(monkeypatch):
  monkeypatch.setitem(shapes_dataset_builder.NUM_EXAMPLES, "train", 40)
  monkeypatch.setitem(shapes_dataset_builder.NUM_EXAMPLES, "test", 10)


def test_second_build_into_a_prepared_dir_keeps_it(tmp_path, tiny_shapes):
  del tiny_shapes
  source = data.data_source("shapes", "test", data_dir=str(tmp_path))
  before = source[3]["image"].copy()
  # As the loser of a race would: build again and fail to rename onto the target.
  sources._build_bundled(shapes_dataset_builder.Builder, str(tmp_path))
  np.testing.assert_array_equal(
      data.data_source("shapes", "test", str(tmp_path))[3]["image"], before)
  assert sorted(os.listdir(tmp_path)) == ["shapes"]  # no scratch left behind


def test_failed_build_leaves_no_dataset(tmp_path, tiny_shapes, monkeypatch):
  del tiny_shapes

  generate = shapes_dataset_builder.Builder._generate_examples

  def crash(self, split):  # dies after writing one example
    yield next(generate(self, split))
    raise RuntimeError("interrupted")

  monkeypatch.setattr(shapes_dataset_builder.Builder, "_generate_examples", crash)
  with pytest.raises(RuntimeError, match="interrupted"):
    data.data_source("shapes", "train", data_dir=str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_unprepared_tfds_dataset_is_an_error_not_a_download(tmp_path):
  with pytest.raises(errors.UserError, match="never downloads"):
    data.data_source("mnist", "train", data_dir=str(tmp_path))


def test_any_prepared_tfds_dataset_works_by_name(toy_pairs_data_dir):
  config = _config(toy_pairs_data_dir, name="toy_pairs", image_key="img", text_key="text",
                   image_size=16, max_len=12, augment=False)
  batches = _take(data.train_iterator(config, global_batch_size=4, seed=0), 3)
  tok = data.get_tokenizer("bytes")
  seen = set()
  for batch in batches:
    assert batch["image"].shape == (4, 16, 16, 3) and set(batch) == {"image", "tokens", "label"}
    for row in range(4):
      i = int(tok.decode(batch["tokens"][row]).removeprefix("item "))
      np.testing.assert_allclose(batch["image"][row], 10 * i / 127.5 - 1.0, atol=1e-5)
      assert batch["label"][row] == i % 3
      seen.add(i)
  assert seen == set(range(12))  # one epoch, each example once


def test_data_dir_from_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXMM_DATA_DIR", str(tmp_path))
  assert sources.resolve_data_dir() == str(tmp_path)
  monkeypatch.delenv("JAXMM_DATA_DIR")
  assert sources.resolve_data_dir() == os.path.expanduser("~/.cache/jaxmm/tensorflow_datasets")


# ----------------------------------------------------------------- tokenizers


def test_byte_tokenizer_round_trip_pad_truncate():
  tok = data.get_tokenizer("bytes")
  assert tok.vocab_size == 256 and tok.pad_id == 0
  text = "a small red triangle — café"
  ids = tok.encode(text, 40)
  assert ids.dtype == np.int32 and ids.shape == (40,)
  raw = list(text.encode("utf-8"))
  assert ids[:len(raw)].tolist() == raw and not ids[len(raw):].any()
  assert tok.decode(ids) == text
  assert tok.encode(text, 5).tolist() == raw[:5]
  batch = tok.encode_batch(["ab", b"xyz", ""], 4)
  assert batch.dtype == np.int32
  np.testing.assert_array_equal(batch, [[97, 98, 0, 0], [120, 121, 122, 0], [0] * 4])


def test_tokenizer_specs(monkeypatch):
  with pytest.raises(ValueError):
    data.get_tokenizer("words")
  monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import fails
  with pytest.raises(ImportError, match="sentencepiece"):
    data.get_tokenizer("/nowhere/spm.model")


def test_padding_tokenizer_makes_every_text_padding():
  tok = data.get_tokenizer("padding:1")
  assert tok.vocab_size == 2 and tok.pad_id == 1
  np.testing.assert_array_equal(tok.encode_batch(["a long caption", b"", "x"], 3), [[1] * 3] * 3)
  assert tok.encode("a long caption", 2).dtype == np.int32
  assert tok.token_count("a long caption") == 0 and tok.decode([1, 1]) == ""
  with pytest.raises(errors.UserError, match="'padding:x' names no pad id; set "
                     "--config.data.tokenizer to 'padding:' and the text tower's "):
    data.get_tokenizer("padding:x")


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory, test_records):
  """A 40-piece SentencePiece model trained here on the test captions (pad 0, unk 1)."""
  import sentencepiece  # pylint: disable=import-outside-toplevel
  prefix = str(tmp_path_factory.mktemp("spm") / "shapes")
  captions = sorted({c.decode() for c in test_records["caption"]})
  sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(captions),
                                           model_prefix=prefix,
                                           vocab_size=40,
                                           pad_id=0,
                                           unk_id=1,
                                           bos_id=-1,
                                           eos_id=-1,
                                           minloglevel=2)
  return prefix + ".model"


def test_sentencepiece_tokenizer_round_trip_pad_truncate(spm_model):
  import sentencepiece  # pylint: disable=import-outside-toplevel
  reference = sentencepiece.SentencePieceProcessor(model_file=spm_model)
  tok = data.get_tokenizer(spm_model)
  assert tok.vocab_size == 40 and tok.pad_id == 0
  text = "a small red triangle in the top left"
  expected = reference.encode(text)
  assert 3 < len(expected) < 32 and 0 not in expected
  ids = tok.encode(text, 32)
  assert ids.dtype == np.int32 and ids.shape == (32,)
  assert ids[:len(expected)].tolist() == expected and not ids[len(expected):].any()
  assert tok.decode(ids) == text
  assert tok.encode(text.encode(), 3).tolist() == expected[:3]
  batch = tok.encode_batch([text, b"a large star"], 32)
  np.testing.assert_array_equal(batch[0], ids)
  np.testing.assert_array_equal(batch[1], tok.encode("a large star", 32))


def test_pipeline_tokenizes_with_the_configured_sentencepiece_model(data_dir, spm_model):
  plain = _config(data_dir, train_split="test", augment=False)
  pieces = _config(data_dir, train_split="test", augment=False, tokenizer=spm_model)
  by_bytes = next(data.train_iterator(plain, global_batch_size=16, seed=0))
  by_pieces = next(data.train_iterator(pieces, global_batch_size=16, seed=0))
  bytes_tok, spm_tok = data.get_tokenizer("bytes"), data.get_tokenizer(spm_model)
  assert by_pieces["tokens"].max() < spm_tok.vocab_size
  for row in range(16):
    assert spm_tok.decode(by_pieces["tokens"][row]) == bytes_tok.decode(by_bytes["tokens"][row])
  np.testing.assert_array_equal(by_pieces["image"], by_bytes["image"])


# -------------------------------------------------------------- preprocessing


def test_normalize_range():
  x = np.array([0, 51, 255], np.uint8)
  np.testing.assert_allclose(preprocess.normalize(x), x / 127.5 - 1.0, atol=1e-6)


@pytest.mark.parametrize("size", [16, 48, 32])
def test_resize_matches_jax_image_resize(size):
  images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  expected = jax.image.resize(images, (2, size, size, 3), "linear", antialias=True)
  np.testing.assert_allclose(preprocess.resize(images, size), np.asarray(expected), atol=1e-5)


def test_augment_is_a_small_shift_plus_constant():
  rng = np.random.default_rng(1)
  images = rng.uniform(-0.5, 0.5, (64, 12, 12, 3)).astype(np.float32)
  keys = preprocess.example_keys(7, np.arange(64), np.zeros(64))
  out = preprocess.augment(images, keys)
  shifts = set()
  for x, y in zip(images.astype(np.float64), out.astype(np.float64)):
    # Some shift within 2 px maps the interior exactly, up to one offset.
    fits = [(dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.ptp(y[2:-2, 2:-2] - x[2 + dy:10 + dy, 2 + dx:10 + dx]) < 1e-5]
    assert len(fits) == 1
    offset = (y[2:-2, 2:-2] - x[2 + fits[0][0]:10 + fits[0][0], 2 + fits[0][1]:10 + fits[0][1]])
    assert abs(offset.mean()) <= 0.05 + 1e-6
    shifts.add(fits[0])
  assert len(shifts) > 10  # the shifts actually vary
  np.testing.assert_array_equal(out, preprocess.augment(images, keys))
  np.testing.assert_array_equal(out[5:9], preprocess.augment(images[5:9], keys[5:9]))


# ------------------------------------------------------------------- pipeline


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_train_batch_contents(data_dir, test_records):
  config = _config(data_dir, train_split="test", augment=False)
  batch = next(data.train_iterator(config, global_batch_size=16, seed=0))
  assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["tokens"].shape == (16, 48) and batch["tokens"].dtype == np.int32
  # Each row is one stored example: find it by its labels and caption.
  captions = [c.decode() for c in test_records["caption"]]
  tok = data.get_tokenizer("bytes")
  for row in range(16):
    text = tok.decode(batch["tokens"][row])
    candidates = [i for i, c in enumerate(captions) if c == text]
    reference = [test_records["image"][i] / 127.5 - 1.0 for i in candidates]
    assert any(np.allclose(batch["image"][row], r, atol=1e-6) for r in reference)
    i = candidates[0]
    for key in ("shape", "colour", "size", "position"):
      assert batch[key][row] == test_records[key][i]


def test_host_slices_partition_the_global_batch(data_dir):
  config = _config(data_dir)
  whole = _take(data.train_iterator(config, global_batch_size=32, seed=3), 3)
  hosts = [
      _take(
          data.train_iterator(config,
                              global_batch_size=32,
                              seed=3,
                              process_index=p,
                              process_count=4), 3) for p in range(4)
  ]
  for step in range(3):
    parts = [h[step] for h in hosts]
    assert all(p["image"].shape[0] == 8 for p in parts)
    seen = [{img.tobytes() for img in p["image"]} for p in parts]
    assert sum(map(len, seen)) == len(set().union(*seen)) == 32  # disjoint
    union = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    _assert_batches_equal(union, whole[step])


def test_indivisible_batch_is_an_error(data_dir):
  with pytest.raises(ValueError, match="divisible"):
    data.train_iterator(_config(data_dir), global_batch_size=30, seed=0, process_count=4)
  with pytest.raises(ValueError, match="divisible"):
    data.eval_batches(_config(data_dir), batch_size=30, process_count=4)


def test_seed_controls_the_stream(data_dir):
  config = _config(data_dir)
  a = _take(data.train_iterator(config, global_batch_size=16, seed=1), 2)
  b = _take(data.train_iterator(config, global_batch_size=16, seed=1), 2)
  c = _take(data.train_iterator(config, global_batch_size=16, seed=2), 2)
  for x, y in zip(a, b):
    _assert_batches_equal(x, y)
  assert not np.array_equal(a[0]["tokens"], c[0]["tokens"])


def test_epochs_cover_the_split_and_reshuffle(data_dir):
  config = _config(data_dir, train_split="test", augment=False)
  batches = _take(data.train_iterator(config, global_batch_size=400, seed=0), 10)
  ids = [[img.tobytes() for img in b["image"]] for b in batches]
  epoch0, epoch1 = sum(ids[:5], []), sum(ids[5:], [])
  assert len(set(epoch0)) == len(set(epoch1)) == 2000
  assert set(epoch0) == set(epoch1) and epoch0 != epoch1


def test_augmentation_differs_between_epochs_only(data_dir):
  config = _config(data_dir, train_split="test")
  plain = _config(data_dir, train_split="test", augment=False)
  aug = _take(data.train_iterator(config, global_batch_size=1000, seed=0), 4)
  ref = _take(data.train_iterator(plain, global_batch_size=1000, seed=0), 4)
  for a, r in zip(aug, ref):  # same examples, same order
    np.testing.assert_array_equal(a["tokens"], r["tokens"])
  assert not np.array_equal(aug[0]["image"], ref[0]["image"])
  # The same example gets new augmentation randomness in the next epoch.
  key = lambda b: {img.tobytes(): i for i, img in enumerate(b["image"])}
  first = {**key(ref[0]), **{k: 1000 + v for k, v in key(ref[1]).items()}}
  second = {**key(ref[2]), **{k: 1000 + v for k, v in key(ref[3]).items()}}
  aug0 = np.concatenate([aug[0]["image"], aug[1]["image"]])
  aug1 = np.concatenate([aug[2]["image"], aug[3]["image"]])
  same = [np.array_equal(aug0[first[k]], aug1[second[k]]) for k in list(first)[:200]]
  assert np.mean(same) < 0.2


def test_resume_from_state(data_dir):
  config = _config(data_dir)
  original = data.train_iterator(config, global_batch_size=16, seed=5)
  _take(original, 3)
  state = json.loads(json.dumps(original.get_state()))
  expected = _take(original, 2)
  resumed = data.train_iterator(config, global_batch_size=16, seed=5)
  resumed.set_state(state)
  for x, y in zip(_take(resumed, 2), expected):
    _assert_batches_equal(x, y)


def test_eval_batches_cover_the_split_once(data_dir, test_records):
  config = _config(data_dir)
  per_host = [
      list(data.eval_batches(config, batch_size=600, process_index=p, process_count=2))
      for p in range(2)
  ]
  assert len(per_host[0]) == len(per_host[1]) == 4  # ceil(2000 / 600)
  images, shapes_seen, masks = [], [], []
  for step in range(4):
    for host in per_host:
      batch = host[step]
      assert batch["image"].shape == (300, 32, 32, 3) and batch["mask"].shape == (300,)
      masks.append(batch["mask"])
      images.append(batch["image"][batch["mask"]])
      shapes_seen.append(batch["shape"][batch["mask"]])
  assert np.concatenate(masks).sum() == 2000
  np.testing.assert_allclose(np.concatenate(images), test_records["image"] / 127.5 - 1.0, atol=1e-6)
  np.testing.assert_array_equal(np.concatenate(shapes_seen), test_records["shape"])


def test_uncached_reader_matches_cached(data_dir):
  indices = np.array([5, 1999, 0, 5])
  cached = pipeline.SplitReader("shapes", "test", data_dir, cache=True).read(indices)
  direct = pipeline.SplitReader("shapes", "test", data_dir, cache=False).read(indices)
  _assert_batches_equal(cached, direct)


def test_text_tower_must_match_the_tokenizer(spm_model, tiny_config):
  from jaxmm.experiments import image_text  # pylint: disable=import-outside-toplevel
  tokenizer = data.get_tokenizer(spm_model)
  small = tiny_config("siglip", f"data.tokenizer={spm_model}", "model.text.vocab_size=32")
  with pytest.raises(ValueError, match="produces 40 token ids.*vocab_size=40"):
    image_text.check_tokenizer(tokenizer, small)
  config = tiny_config("siglip", "model.text.vocab_size=40")
  image_text.check_tokenizer(tokenizer, config)
  padded_with_3 = types.SimpleNamespace(vocab_size=40, pad_id=3)
  with pytest.raises(ValueError, match="pads with id 3.*model.text.pad_id=3"):
    image_text.check_tokenizer(padded_with_3, config)
