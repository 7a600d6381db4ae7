"""Random views (jaxmm.data.view_ops): determinism per example, the ops' geometry, the spec."""
import numpy as np
import pytest

from jaxmm import data
from jaxmm import errors
from jaxmm.data import preprocess
from jaxmm.data import view_ops

SPEC = "random_resized_crop(scale=(0.2, 1.0))|flip|colour_jitter|grayscale"


def _images(n, size=8, seed=0):
  """float32 [n, size, size, 3] in [-1, 1], a different image per row."""
  return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def _views(images, index, epoch=0, seed=0, spec=SPEC, num_views=2):
  keys = preprocess.example_keys(seed, index, np.full(len(index), epoch))
  return view_ops.make_views(images, keys, view_ops.parse(spec, num_views), num_views)


def test_views_depend_only_on_seed_index_epoch_and_view():
  images, index = _images(12), np.arange(100, 112)
  views = _views(images, index)
  assert views.shape == (12, 2, 8, 8, 3) and views.dtype == np.float32
  # Another batch composition: a permuted subset, beside other examples.
  order = np.array([7, 2, 11, 5])
  again = _views(np.concatenate([images[order], _images(3, seed=1)]),
                 np.concatenate([index[order], [5, 6, 7]]))
  np.testing.assert_array_equal(again[:4], views[order])
  # One view asked for alone is the first of two.
  np.testing.assert_array_equal(_views(images, index, num_views=1)[:, 0], views[:, 0])
  for other in (_views(images, index, epoch=1), _views(images, index, seed=1)):
    assert all(not np.array_equal(a, b) for a, b in zip(other, views))


def test_the_views_of_an_example_differ():
  views = _views(_images(16), np.arange(16), num_views=3)
  for example in views:
    for a in range(3):
      for b in range(a):
        assert not np.allclose(example[a], example[b])


def test_full_box_crop_is_the_image():
  images = _images(3)
  zeros, full = np.zeros(3), np.full(3, 8.0)
  np.testing.assert_allclose(view_ops.resized_crop(images, zeros, zeros, full, full), images,
                             atol=1e-6)


def test_crop_samples_its_box_bilinearly():
  # pixel (y, x) of image n holds 10·y + x + 100·n: linear, so bilinear sampling is exact.
  y, x = np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")
  images = np.stack([10 * y + x + 100 * n for n in range(2)])[..., None].repeat(3, axis=-1)
  top, left = np.array([2.0, 0.0]), np.array([4.0, 1.0])
  height, width = np.array([4.0, 8.0]), np.array([4.0, 2.0])
  out = view_ops.resized_crop(images, top, left, height, width)
  for n in range(2):
    # Output pixel i samples top + (i + 1/2)·height/8 − 1/2 of its box, clipped to [0, 7].
    rows = np.clip(top[n] + (np.arange(8) + 0.5) * height[n] / 8 - 0.5, 0, 7)
    cols = np.clip(left[n] + (np.arange(8) + 0.5) * width[n] / 8 - 0.5, 0, 7)
    expected = 10 * rows[:, None] + cols[None, :] + 100 * n
    np.testing.assert_allclose(out[n, ..., 0], expected, rtol=1e-6)
  # Box n=0 is rows 2..5 and columns 4..7 stretched 2x: output rows 1, 3, 5 of
  # column 0 sample source rows 2.25, 3.25, 4.25 of source column 3.75 (by hand).
  np.testing.assert_allclose(out[0, [1, 3, 5], 0, 0], [26.25, 36.25, 46.25])


def test_crop_boxes_lie_in_the_image_with_the_drawn_area_and_aspect():
  keys = preprocess.example_keys(0, np.arange(2000), np.zeros(2000))
  top, left, height, width = view_ops.crop_boxes(keys, 32, 24, scale=(0.1, 0.5), ratio=(0.5, 2.0))
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + height <= 32 + 1e-9).all() and (left + width <= 24 + 1e-9).all()
  uncut = (height < 32) & (width < 24)
  area = height * width / (32 * 24)
  assert uncut.mean() > 0.9
  assert area[uncut].min() >= 0.1 - 1e-9 and area[uncut].max() <= 0.5 + 1e-9
  aspect = width[uncut] / height[uncut]
  assert aspect.min() >= 0.5 - 1e-9 and aspect.max() <= 2.0 + 1e-9
  assert aspect.min() < 0.6 and aspect.max() > 1.8  # the whole range is drawn
  full = view_ops.crop_boxes(keys, 32, 24, scale=(1.0, 1.0), ratio=(0.75, 0.75))
  np.testing.assert_allclose(np.stack(full), [[0] * 2000, [0] * 2000, [32] * 2000, [24] * 2000],
                             atol=1e-9)


def test_flip_mirrors_left_to_right_with_probability_p():
  images = _images(1000, size=4)
  keys = preprocess.example_keys(0, np.arange(1000), np.zeros(1000))
  np.testing.assert_array_equal(view_ops.flip(images, keys, p=1.0), images[:, :, ::-1])
  np.testing.assert_array_equal(view_ops.flip(images, keys, p=0.0), images)
  out = view_ops.flip(images, keys)
  mirrored = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)])
  kept = np.array([np.array_equal(o, i) for o, i in zip(out, images)])
  assert (mirrored ^ kept).all() and 0.45 < mirrored.mean() < 0.55


def test_colour_jitter():
  images = _images(200)
  keys = preprocess.example_keys(0, np.arange(200), np.zeros(200))
  np.testing.assert_allclose(view_ops.colour_jitter(images, keys, p=0.0), images, atol=1e-6)
  # Brightness alone multiplies every [0, 1] value of an image by one factor in [0.6, 1.4].
  # (Values within [0.3, 0.7] stay unclipped.)
  bright = view_ops.colour_jitter(images * 0.4, keys, contrast=0, saturation=0, hue=0, p=1.0)
  per_image = ((bright + 1) / (images * 0.4 + 1)).reshape(200, -1)
  np.testing.assert_allclose(per_image, np.broadcast_to(per_image[:, :1], per_image.shape),
                             rtol=1e-5)
  assert 0.6 <= per_image.min() and per_image.max() <= 1.4 and per_image.std() > 0.1
  # Saturation and hue keep each pixel's grey level (away from clipping); saturation
  # alone scales each pixel's distance from it by one factor per image.
  muted = images * 0.2
  luma = lambda x: ((x + 1) / 2) @ np.array([0.299, 0.587, 0.114], np.float32)
  for kwargs in (dict(hue=0), dict(saturation=0)):
    out = view_ops.colour_jitter(muted, keys, brightness=0, contrast=0, p=1.0, **kwargs)
    np.testing.assert_allclose(luma(out), luma(muted), atol=2e-3)
    assert np.abs(out - muted).mean() > 0.005
  out = view_ops.colour_jitter(muted, keys, brightness=0, contrast=0, hue=0, p=1.0)
  before = (muted - 2 * luma(muted)[..., None] + 1).reshape(200, -1)
  after = (out - 2 * luma(out)[..., None] + 1).reshape(200, -1)
  factor = (after * before).sum(1, keepdims=True) / (before * before).sum(1, keepdims=True)
  np.testing.assert_allclose(after, factor * before, atol=1e-5)
  assert 0.6 <= factor.min() and factor.max() <= 1.4 and factor.std() > 0.1
  # A grey image stays grey whatever the saturation and hue; colours change.
  grey = np.repeat(images[..., :1], 3, axis=-1)
  out = view_ops.colour_jitter(grey, keys, p=1.0)
  np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)
  np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-5)
  assert np.abs(view_ops.colour_jitter(images, keys, p=1.0) - images).mean() > 0.05


def test_grayscale_is_the_luma_on_every_channel():
  images = _images(4)
  keys = preprocess.example_keys(0, np.arange(4), np.zeros(4))
  out = view_ops.grayscale(images, keys, p=1.0)
  luma = 0.299 * images[..., 0] + 0.587 * images[..., 1] + 0.114 * images[..., 2]
  for channel in range(3):
    np.testing.assert_allclose(out[..., channel], luma, atol=1e-6)


@pytest.mark.parametrize("spec,num_views,expected", [
    ("random_crop|flip", 2, "data.views op='random_crop' is not one of 'random_resized_crop', "
     "'flip', 'colour_jitter', 'grayscale'; did you mean 'random_resized_crop'?"),
    ("flip(q=0.5)", 2, "flip takes the literal arguments p"),
    ("flip(p=x)", 2, "flip takes the literal arguments p"),
    ("flip(p=1.5)", 2, "'flip(p=1.5)': p=1.5 must lie in [0, 1]"),
    ("random_resized_crop(scale=(0.5, 2))", 2, "must satisfy 0 < low <= high <= 1"),
    ("flip|", 2, "cannot read ''"),
    ("", 2, "data.num_views=2 views of data.views='' would all be the same image"),
    ("flip(p=0.0)|grayscale(p=1.0)", 2, "views of data.views='flip(p=0.0)|grayscale(p=1.0)' "
     "would all be the same image"),
    ("colour_jitter(p=0.0)|random_resized_crop(scale=(1.0, 1.0), ratio=(1.0, 1.0))", 3,
     "would all be the same image"),
    ("flip", 0, "data.num_views=0 must be an integer >= 1"),
])
def test_bad_spec_is_a_user_error(spec, num_views, expected):
  with pytest.raises(errors.UserError) as e:
    view_ops.parse(spec, num_views)
  assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("spec", [
    "flip(p=0.01)", "grayscale(p=0.99)", "colour_jitter(hue=0.01)",
    "random_resized_crop(scale=(0.98, 1.0))"
])
def test_rarely_random_ops_are_random(spec):
  assert len(view_ops.parse(spec, 2)) == 1


def test_one_view_needs_no_op():
  assert view_ops.parse("", 1) == []
  images = _images(2)
  np.testing.assert_array_equal(_views(images, np.arange(2), spec="", num_views=1)[:, 0], images)


def _data_config(data_dir, **overrides):
  return dict(dict(name="digits", data_dir=data_dir, train_split="train", eval_split="test",
                   image_size=16, augment=False, text_key=None, views=SPEC, num_views=2),
              **overrides)


def test_pipeline_batches_carry_views_that_ignore_the_batch_size(digits_data_dir):
  config = _data_config(digits_data_dir)
  whole = next(data.train_iterator(config, global_batch_size=16, seed=3, need_text=False))
  assert "image" not in whole and whole["views"].shape == (16, 2, 16, 16, 3)
  halves = data.train_iterator(config, global_batch_size=8, seed=3, need_text=False)
  # The same draws, computed in batches of another size: BLAS and NumPy may
  # vectorise the contractions differently, so compare with float32's bound
  # γ_n = n·u (u = 2⁻²⁴) summed over the contractions of values in [0, 1]: the
  # crop's two interpolations (16 + 16 terms), the image's mean grey (256
  # pixels) and the hue rotation (3 channels), amplified by at most 1.4² by the
  # contrast and saturation factors and by 2 from the [-1, 1] scale. Another
  # example's or another draw's view differs by ~0.1 or more.
  bound = 2 * 1.4**2 * (16 + 16 + 256 + 3) * 2.0**-24
  for start in (0, 8):
    np.testing.assert_allclose(next(halves)["views"], whole["views"][start:start + 8], rtol=0,
                               atol=bound)
  # Without views the batch keeps its plain image.
  plain = next(data.train_iterator(_data_config(digits_data_dir, views=None), global_batch_size=16,
                                   seed=3, need_text=False))
  assert "views" not in plain and plain["image"].shape == (16, 16, 16, 3)
