"""Random-resized crops decoded from a shard's bytes (jaxmm.data.shards.crop) on host threads."""
import io
import json
import tarfile

import ml_collections
import numpy as np
from PIL import Image
import pytest
import simplejpeg
from sklearn.datasets import load_sample_images

from jaxmm import data
from jaxmm.data import preprocess
from jaxmm.data import view_ops
from jaxmm.data import pipeline
from jaxmm.data.shards import crop as crop_lib
from jaxmm.data.shards import decode
from jaxmm.errors import UserError

# PIL resizes uint8 in two passes (columns, then rows), rounding each to an integer: an output is
# within 0.5 + 0.5 levels of the exact filter (the second pass is a convex combination of values
# each off by <= 0.5), plus 2⁻²² per tap of PIL's fixed-point weights; in [-1, 1] units:
LEVELS = (1 + 1e-3) * 2 / 255
N = 12


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt, quality=90)
  return buffer.getvalue()


def _photo(side: int, which: int = 0) -> np.ndarray:
  """uint8 [side, ~1.5 side, 3]: one of scikit-learn's two sample photographs, resized."""
  photo = Image.fromarray(load_sample_images().images[which])
  return np.asarray(photo.resize((side * 3 // 2, side), Image.BICUBIC))


def _filter_rows(start: float, length: float, in_size: int, size: int) -> np.ndarray:
  """[size, in_size] float64 weights of PIL's antialiased bilinear filter over a span."""
  scale = length / size
  support = max(scale, 1.0)  # the triangle widens by the shrink factor
  centres = start + (np.arange(size) + 0.5) * scale
  weights = np.maximum(0.0, 1 - np.abs(np.arange(in_size)[None] + 0.5 - centres[:, None]) / support)
  return weights / weights.sum(axis=1, keepdims=True)


def _reference_crop(pixels: np.ndarray, box, size: int) -> np.ndarray:
  """float64 [size, size, 3] in [-1, 1]: the box (left, top, right, bottom) of uint8 pixels
  [H, W, 3] resized with the exact filter."""
  left, top, right, bottom = box
  wy = _filter_rows(top, bottom - top, pixels.shape[0], size)
  wx = _filter_rows(left, right - left, pixels.shape[1], size)
  return np.einsum("yh,hwc,xw->yxc", wy, pixels.astype(np.float64), wx) / 127.5 - 1


def _box(key, height, width, crop):
  """The box of `key` drawn as the module says: view_ops.crop_boxes under the crop stream."""
  keys = preprocess.fold_in(np.array([key], np.uint64), crop_lib.CROP_STREAM)
  top, left, h, w = (float(v[0]) for v in view_ops.crop_boxes(keys, height, width, crop.scale,
                                                              crop.ratio))
  return left, top, left + w, top + h


def test_a_png_crop_is_its_box_resized_with_the_antialiased_filter():
  pixels = _photo(60)
  crop = crop_lib.RandomResizedCrop(24, (0.2, 1.0))  # shrinks ~2x in one axis, ~3.5x in another
  for key in range(4):
    got = crop_lib.image(_encoded(pixels, "PNG"), crop, np.uint64(key))
    expected = _reference_crop(pixels, _box(key, *pixels.shape[:2], crop), 24)
    np.testing.assert_allclose(got, expected, rtol=0, atol=LEVELS)
  small = crop_lib.RandomResizedCrop(96, (0.5, 0.5))  # a box smaller than the output: upsampled
  got = crop_lib.image(_encoded(pixels, "PNG"), small, np.uint64(9))
  expected = _reference_crop(pixels, _box(9, *pixels.shape[:2], small), 96)
  np.testing.assert_allclose(got, expected, rtol=0, atol=LEVELS)


def test_a_jpeg_decodes_at_the_smallest_dct_scale_that_keeps_the_box_at_least_s_pixels(
    monkeypatch):
  """A 256 x 384 JPEG, a box of at least 0.9 of its area cropped to 40 x 40: with w/h <= 4/3 the
  box is sqrt(0.9 · 256 · 384 · 3/4) > 256 rows high, cut to all 256, so the scale 1/8 (32 rows
  of box) is too small and 2/8 (64 x 96) the one."""
  data_bytes = _encoded(_photo(256), "JPEG")
  decoded = []
  decode_jpeg = simplejpeg.decode_jpeg
  monkeypatch.setattr(simplejpeg, "decode_jpeg",
                      lambda *a, **kw: decoded.append(decode_jpeg(*a, **kw)) or decoded[-1])
  crop = crop_lib.RandomResizedCrop(40, (0.9, 1.0))
  for key in range(3):
    got = crop_lib.image(data_bytes, crop, np.uint64(key))
    assert decoded[-1].shape == (64, 96, 3)
    # The box in the decoded image's pixels: each coordinate times decoded / stored size.
    left, top, right, bottom = _box(key, 256, 384, crop)
    box = (left / 4, top / 4, right / 4, bottom / 4)
    np.testing.assert_allclose(got, _reference_crop(decoded[-1], box, 40), rtol=0, atol=LEVELS)


def test_bytes_that_neither_decoder_takes_are_undecodable():
  crop = crop_lib.RandomResizedCrop(8, (0.5, 1.0))
  whole = _encoded(_photo(16), "JPEG")
  for damaged in (b"\xff\xd8 not a jpeg", whole[:len(whole) // 2]):
    with pytest.raises(decode.Undecodable, match="does not decode"):
      crop_lib.image(damaged, crop, np.uint64(0))


def _tar(path, sizes, first):
  """A webdataset tar: example i = first, first + 1, ... a JPEG photo of sizes[i - first] rows
  (PNG for every fifth), the caption 'photo i' and a label."""
  with tarfile.open(path, "w") as tar:
    for i, side in enumerate(sizes, start=first):
      pixels = _photo(side, i % 2)
      ext = "png" if i % 5 == 4 else "jpg"
      for name, payload in ((f"{i:03d}.{ext}", _encoded(pixels, ext.replace("jpg", "jpeg"))),
                            (f"{i:03d}.txt", f"photo {i}".encode()),
                            (f"{i:03d}.json", json.dumps({"label": i % 3}).encode())):
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


@pytest.fixture(scope="module")
def photo_shards(tmp_path_factory):
  folder = tmp_path_factory.mktemp("photos")
  _tar(folder / "00000.tar", [40, 64, 48, 96, 32, 80], 0)
  _tar(folder / "00001.tar", [56, 72, 40, 64, 48, 88], 6)
  return str(folder / "*.tar")


def _config(files, **overrides):
  config = dict(name="photos", train_split="train", eval_split="test", image_size=16, max_len=12,
                tokenizer="bytes", augment=False, source="wds", files=files, eval_files=files,
                image_key="jpg;png", text_key="txt", crop_scale=(0.3, 1.0), host_threads=1)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def _batches(config, count=3, **kw):
  iterator = data.train_iterator(config, global_batch_size=8, seed=5, **kw)
  return [next(iterator) for _ in range(count)]


def test_training_images_are_the_crops_of_their_examples_keys(photo_shards):
  """Over an epoch's end (12 examples, batches of 8), each row is the crop that (seed, example,
  epoch) draws; the centre-square pipeline (crop_scale None) gives other images."""
  config = _config(photo_shards)
  reader = data.split_reader(config, "train")
  stored = [e.image for shard in reader.shards for e in shard.read(range(shard.num_examples), {})]
  batches = _batches(config)
  tokenizer = data.get_tokenizer("bytes")
  for step, batch in enumerate(batches):
    for row in range(8):
      position = step * 8 + row
      epoch, offset = divmod(position, N)
      index = np.random.default_rng([5, epoch]).permutation(N)[offset]  # the documented order
      assert tokenizer.decode(batch["tokens"][row]) == f"photo {index}"
      key = preprocess.example_keys(5, np.array([index]), np.array([epoch]))[0]
      crop = crop_lib.RandomResizedCrop(16, (0.3, 1.0))
      np.testing.assert_array_equal(batch["image"][row],
                                    crop_lib.image(stored[index], crop, key))
  centre = _batches(_config(photo_shards, crop_scale=None), 1)[0]
  assert not np.allclose(centre["image"], batches[0]["image"], atol=0.1)


def test_batches_do_not_depend_on_threads_processes_or_a_resume(photo_shards):
  """With SupCon's views made on the host threads too."""
  views = dict(views="flip|colour_jitter", num_views=2, text_key=None)
  whole = _batches(_config(photo_shards, **views), need_text=False)
  assert whole[0]["views"].shape == (8, 2, 16, 16, 3)
  threaded = _batches(_config(photo_shards, host_threads=3, **views), need_text=False)
  halves = [_batches(_config(photo_shards, host_threads=2, **views), need_text=False,
                     process_index=p, process_count=2) for p in range(2)]
  resumed = data.train_iterator(_config(photo_shards, **views), global_batch_size=8, seed=5,
                                need_text=False)
  resumed.set_state(json.loads(json.dumps({"next_index": 2})))
  for step, batch in enumerate(whole):
    for key, value in batch.items():
      np.testing.assert_array_equal(threaded[step][key], value, err_msg=key)
      np.testing.assert_array_equal(np.concatenate([h[step][key] for h in halves]), value)
  for key, value in next(resumed).items():
    np.testing.assert_array_equal(value, whole[2][key])


@pytest.mark.parametrize("overrides, message", [
    (dict(crop_scale=(0.0, 1.0)), "crop_scale or data.crop_ratio: scale=.* must satisfy"),
    (dict(crop_scale=0.9), r"data.crop_scale=0.9 must be a pair"),
    (dict(crop_ratio=(2.0, 1.0)), "ratio=.* must satisfy"),
    (dict(host_threads=0), r"data.host_threads=0 must be an integer >= 1"),
])
def test_bad_crop_settings_are_user_errors(photo_shards, overrides, message):
  with pytest.raises(UserError, match=message):
    data.train_iterator(_config(photo_shards, **overrides), global_batch_size=8, seed=0)
  with pytest.raises(UserError, match="data.crop_scale crops the stored images of a shard source"):
    pipeline.train_crop(_config(photo_shards, source="tfds"))
