"""PNG grids of generated images: one row per class, written under workdir/samples/NAME/."""
import io
import os

import jax
import numpy as np
from PIL import Image

from jaxmm import storage

SAMPLES_DIR = "samples"


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


def grid_path(workdir: str, name: str, step: int) -> str:
  """Where evaluator `name` (config.evals.NAME) writes the grid of step `step`."""
  return os.path.join(workdir, SAMPLES_DIR, name, f"step_{step}.png")
