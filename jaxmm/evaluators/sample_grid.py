"""PNG grids of generated images: one row per class, written under workdir/samples/."""
import io
import itertools
import os

import jax
import numpy as np
from PIL import Image

from jaxmm import storage

SAMPLES_DIR = "samples"


def grid_labels(num_classes: tuple[int, ...], per_row: int) -> tuple[np.ndarray | None, int]:
  """(labels int32 [rows·columns, K] or None, columns) of a class grid.

  Rows are the classes of the first label. With two or more labels the
  columns are the classes of the second (others 0), e.g. 6 shapes × 8
  colours; with one label each row repeats its class `per_row` times; an
  unconditional model (no labels) gets None and `per_row` columns.
  """
  if not num_classes:
    return None, per_row
  if len(num_classes) == 1:
    rows = np.repeat(np.arange(num_classes[0]), per_row)[:, None]
    return rows.astype(np.int32), per_row
  pairs = np.array(list(itertools.product(range(num_classes[0]), range(num_classes[1]))))
  rest = np.zeros((len(pairs), len(num_classes) - 2), np.int64)
  return np.concatenate([pairs, rest], axis=1).astype(np.int32), num_classes[1]


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] (any float) -> uint8 in [0, 255], clipped."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def tile(images: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
  """uint8 [N, H, W, C] -> one uint8 image [rows·(H+gap)−gap, columns·(W+gap)−gap, C]."""
  n, h, w, c = images.shape
  rows = -(-n // columns)
  out = np.zeros((rows * (h + gap) - gap, columns * (w + gap) - gap, c), np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    out[r * (h + gap):r * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = image
  return out


def write_png(path: str, images: np.ndarray, columns: int) -> str:
  """Writes images [N, H, W, C] in [-1, 1] as one grid PNG at `path` (process 0); returns it."""
  if jax.process_index() == 0:
    grid = tile(to_uint8(images), columns)
    png = io.BytesIO()
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(png, format="PNG")
    storage.write_bytes(storage.absolute(path), png.getvalue())
  return path


def grid_path(workdir: str, step: int) -> str:
  return os.path.join(workdir, SAMPLES_DIR, f"step_{step}.png")
