"""Numpy preprocessing of image batches.

Every op works on a batch [N, H, W, C] but treats examples independently:
the random ones take one uint64 key per example (`example_keys`), so an
example's result depends only on its own key, never on which other examples
share its batch or host. None of the augmentations changes what a caption
says: no flips (captions name left and right), shifts of at most 2 px, and a
small brightness change.
"""
import numpy as np

from jaxmm.errors import UserError

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x):
  """SplitMix64 finaliser: a bijective mix of uint64 [N] (Steele et al. 2014)."""
  with np.errstate(over="ignore"):
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return x ^ (x >> np.uint64(31))


def example_keys(seed: int, index, epoch) -> np.ndarray:
  """uint64 [N] keys from a seed, example indices [N] and epochs [N]."""
  key = _splitmix64(np.full(np.shape(index), seed, np.uint64))
  key = _splitmix64(key ^ np.asarray(index, np.uint64))
  return _splitmix64(key ^ np.asarray(epoch, np.uint64))


def fold_in(keys, value: int) -> np.ndarray:
  """uint64 [N] keys of a sub-stream `value` (e.g. a view number) of each of keys [N].

  The salt keeps them apart from the bits that `uniform` draws for small streams.
  """
  return _splitmix64(keys ^ _splitmix64(np.uint64(value) ^ np.uint64(0x5EED5EED5EED5EED)))


def uniform(keys, stream: int) -> np.ndarray:
  """float64 [N] in [0, 1), an independent draw per key and stream."""
  bits = _splitmix64(keys ^ _splitmix64(np.uint64(stream)))
  return (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def normalize(images, mean=None, std=None) -> np.ndarray:
  """uint8 [..., C] in [0, 255] -> float32: in [-1, 1], or (x / 255 − mean) / std.

  mean, std: C floats on the [0, 1] scale each (data.image_mean and
  data.image_std), e.g. the statistics of OpenAI's CLIP training images;
  None for the [-1, 1] range. The second form takes torchvision's steps
  (ToTensor, then Normalize), so a converted model sees the inputs it trained on.
  """
  if mean is None and std is None:
    return np.asarray(images, np.float32) * np.float32(2 / 255) - np.float32(1)
  if mean is None or std is None:
    raise UserError("data.image_mean and data.image_std go together: set both (C floats "
                    "each, on the [0, 1] scale), or neither for the [-1, 1] range")
  scaled = np.asarray(images, np.float32) / np.float32(255)
  return (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _linear_weights(in_size, out_size):
  """[out, in] rows of an antialiased triangle filter (half-pixel centres)."""
  scale = out_size / in_size
  support = max(1.0, 1.0 / scale)  # widen the kernel when shrinking
  centres = (np.arange(out_size) + 0.5) / scale - 0.5
  dist = np.abs(np.arange(in_size)[None, :] - centres[:, None]) / support
  weights = np.maximum(0.0, 1.0 - dist)
  return weights / weights.sum(axis=1, keepdims=True)


def resize(images, size: int) -> np.ndarray:
  """float [N, H, W, C] -> float32 [N, size, size, C], antialiased bilinear."""
  _, height, width, _ = images.shape
  if (height, width) == (size, size):
    return np.asarray(images, np.float32)
  wy = _linear_weights(height, size).astype(np.float32)
  wx = _linear_weights(width, size).astype(np.float32)
  # optimize=True contracts one axis at a time (two matrix products); numpy's
  # default loops over all five indices at once, ~70x slower on 512 images.
  return np.einsum("yh,nhwc,xw->nyxc", wy, np.asarray(images, np.float32), wx, optimize=True)


def random_translate(images, keys, max_shift: int = 2) -> np.ndarray:
  """Shifts each image by up to `max_shift` px per axis, repeating edge pixels."""
  _, height, width, _ = images.shape
  span = 2 * max_shift + 1
  dy = np.floor(uniform(keys, 0) * span).astype(np.int64)
  dx = np.floor(uniform(keys, 1) * span).astype(np.int64)
  padded = np.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)), mode="edge")
  # One slice copy per image is several times faster than a 3-D fancy gather.
  return np.stack([p[y:y + height, x:x + width] for p, y, x in zip(padded, dy, dx)])


def random_brightness(images, keys, max_delta: float = 0.05) -> np.ndarray:
  """Adds one offset in [-max_delta, max_delta] per image ([-1, 1] scale), clipped."""
  delta = (2 * uniform(keys, 2) - 1) * max_delta
  out = images + delta.astype(np.float32)[:, None, None, None]
  return np.clip(out, -1.0, 1.0, out=out)


def augment(images, keys) -> np.ndarray:
  """Caption-preserving augmentation of float32 [N, H, W, C] in [-1, 1]."""
  return random_brightness(random_translate(images, keys), keys)
