"""Random-resized crops decoded straight from image bytes (data.crop_scale, data.crop_ratio).

An example's box is drawn from its key (`view_ops.crop_boxes` under
fold_in(key, CROP_STREAM), key = `preprocess.example_keys(seed, index,
epoch)`) in the pixels of the stored image, whatever its size, so a crop is
a pure function of (seed, example index, epoch) and the image's bytes. The
box [top, top + h) x [left, left + w) is resized to S x S with PIL's
antialiased bilinear filter, as torchvision's RandomResizedCrop does a PIL
image, then normalised (`preprocess.normalize`).

A JPEG is decoded by libjpeg-turbo (simplejpeg) at the smallest of its DCT
scales k/8 that keeps the box at least S pixels on each side: the inverse
DCT then makes an image up to 8x smaller per side, at a fraction of a full
decode's cost, and no detail the S x S crop could show is lost. The box is
carried to the decoded size by the exact ratios of the sizes. Other formats
(PNG, WebP) and the JPEGs that libjpeg-turbo rejects (it is strict: a
truncated one, any decoder warning) go through PIL at full size
(`decode.pixels`).
"""
import io
import math
from typing import NamedTuple

import numpy as np
from PIL import Image
import simplejpeg

from jaxmm import errors
from jaxmm.data import preprocess
from jaxmm.data import view_ops
from jaxmm.data.shards import decode

# The sub-stream of an example's key that draws its crop, apart from the small numbers that
# views (one per view), the caption-preserving augmentation and `skips.replacement` use.
CROP_STREAM = 0xC209
_JPEG_MAGIC = b"\xff\xd8"


class RandomResizedCrop(NamedTuple):
  """Boxes covering a fraction a ~ U(scale) of an image's area, aspect w/h with
  log(w/h) ~ U(log ratio) (`view_ops.crop_boxes`), resized to size x size."""
  size: int
  scale: tuple[float, float]
  ratio: tuple[float, float] = (3 / 4, 4 / 3)

  def check(self) -> "RandomResizedCrop":
    """This crop, or a UserError naming data.crop_scale or data.crop_ratio."""
    for key, value in (("data.crop_scale", self.scale), ("data.crop_ratio", self.ratio)):
      if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise errors.UserError(f"{key}={value!r} must be a pair (low, high)")
    try:
      view_ops.crop_boxes(np.zeros(1, np.uint64), 1, 1, tuple(self.scale), tuple(self.ratio))
    except ValueError as e:
      raise errors.UserError(f"data.crop_scale or data.crop_ratio: {e}; e.g. open_clip's "
                             "--config.data.crop_scale='(0.9, 1.0)'") from None
    return self

  def box(self, key: np.uint64, height: int, width: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in pixels of a height x width image: the box of `key`."""
    keys = preprocess.fold_in(np.array([key], np.uint64), CROP_STREAM)
    top, left, box_height, box_width = (
        float(v[0]) for v in view_ops.crop_boxes(keys, height, width, self.scale, self.ratio))
    return left, top, left + box_width, top + box_height


def _resized(rgb: np.ndarray, box, size: int) -> np.ndarray:
  """uint8 [size, size, 3]: `box` (left, top, right, bottom) of uint8 rgb [H, W, 3], resized."""
  height, width, _ = rgb.shape
  left, top, right, bottom = box
  # The box lies in the image; clipping only absorbs rounding of the scaled coordinates.
  box = (max(left, 0.0), max(top, 0.0), min(right, width), min(bottom, height))
  return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR, box=box))


def _jpeg_crop(data: bytes, crop: RandomResizedCrop, key) -> np.ndarray | None:
  """The crop of a JPEG decoded at a reduced DCT scale; None where libjpeg-turbo cannot."""
  try:
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    if height * width > Image.MAX_IMAGE_PIXELS:
      return None  # PIL's decompression-bomb check then names it
    left, top, right, bottom = crop.box(key, height, width)
    rgb = simplejpeg.decode_jpeg(data,
                                 "RGB",
                                 min_height=math.ceil(height * crop.size / (bottom - top)),
                                 min_width=math.ceil(width * crop.size / (right - left)))
  except ValueError:
    return None
  sy, sx = rgb.shape[0] / height, rgb.shape[1] / width
  return _resized(rgb, (left * sx, top * sy, right * sx, bottom * sy), crop.size)


def image(data: bytes, crop: RandomResizedCrop, key, mean=None, std=None) -> np.ndarray:
  """float32 [S, S, 3] in [-1, 1] (or normalised by `mean` and `std`): the random-resized crop
  of `key` (an example's uint64 key) of the encoded image `data`.

  Raises `decode.Undecodable` for bytes that neither libjpeg-turbo nor PIL decodes.
  """
  pixels = _jpeg_crop(data, crop, key) if data[:2] == _JPEG_MAGIC else None
  if pixels is None:
    rgb = decode.pixels(data)
    pixels = _resized(rgb, crop.box(key, *rgb.shape[:2]), crop.size)
  return preprocess.normalize(pixels, mean, std)
