"""Encoded images (JPEG, PNG, WebP, ...) -> model inputs, as the TFDS pipeline makes them."""
import io

import numpy as np
from PIL import Image

from jaxmm.data import preprocess


class Undecodable(ValueError):
  """An image's bytes that PIL cannot decode; the message says why."""


def pixels(data: bytes) -> np.ndarray:
  """uint8 [H, W, 3]: the RGB pixels of an encoded image (grey, palette and alpha converted).

  Raises Undecodable for bytes that are no image, a truncated one, or one over
  PIL's decompression-bomb limit.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      return np.asarray(image.convert("RGB"))
  # PIL reports a damaged file as any of these, depending on the format and the damage.
  except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
    raise Undecodable(f"its image does not decode ({type(e).__name__}: {e})") from e


def image(data: bytes, size: int, mean=None, std=None) -> np.ndarray:
  """float32 [size, size, 3] in [-1, 1] (or normalised by `mean` and `std`): the image's
  centre square, resized.

  `preprocess.normalize` and `preprocess.resize`, as for a TFDS split: a
  stored image of `size` x `size` pixels becomes what the TFDS pipeline makes
  of the same pixels, bit for bit.
  """
  rgb = pixels(data)
  height, width, _ = rgb.shape
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  square = rgb[None, top:top + side, left:left + side]
  return preprocess.resize(preprocess.normalize(square, mean, std), size)[0]
