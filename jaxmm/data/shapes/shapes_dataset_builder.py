"""`shapes`: procedural 32x32 images of one coloured shape, with captions.

Every image shows one shape of one colour and size at one cell of a 3x3 grid
on a dark, noisy background; its caption names all four attributes
("a small red triangle in the top left"). The generator is deterministic
(fixed seeds per split), numpy-only, and builds both splits in a few seconds.

Compositional hold-out: the (shape, colour) pairs in `HELD_OUT_PAIRS` never
occur in `train`; `test` samples all pairs uniformly and marks those examples
with `held_out=True`, so an evaluator can score unseen combinations of seen
attributes separately.
"""
import numpy as np
import tensorflow_datasets as tfds

from jaxmm.data import bundled_builder
from jaxmm.data.shapes.vocabulary import caption
from jaxmm.data.shapes.vocabulary import COLOURS
from jaxmm.data.shapes.vocabulary import HELD_OUT_PAIRS
from jaxmm.data.shapes.vocabulary import POSITIONS
from jaxmm.data.shapes.vocabulary import SHAPES
from jaxmm.data.shapes.vocabulary import SIZES

# Nominal RGB of each colour; per-image jitter stays well inside the gaps.
COLOUR_RGB = np.array([(230, 30, 30), (30, 200, 50), (40, 90, 255), (240, 230, 40), (40, 225, 235),
                       (230, 50, 225), (255, 145, 0), (245, 245, 245)],
                      dtype=np.float64)

IMAGE_SIZE = 32
NUM_EXAMPLES = {"train": 20_000, "test": 2_000}
_SPLIT_SEEDS = {"train": 0, "test": 1}

# Shape radius in pixels per size; shape extents are normalised to radius 1.
_RADII = np.array([3.5, 4.75, 6.0])
# Grid-cell centres along each axis; with +-1 px jitter (and +-2 px training
# translation) the shape's centre never leaves its third of the image.
_CELL_CENTRES = np.array([7.5, 16.0, 24.5])
_CENTRE_JITTER = 1.0
_SUPERSAMPLE = 3  # coverage = fraction of 3x3 sub-pixel samples inside the shape
_PATCH = 14  # shapes are drawn into a 14x14 window around their centre
_BACKGROUND_MAX = 40.0
_NOISE_STD = 6.0
_COLOUR_JITTER = 12.0
_CHUNK = 1000

def _star_inside(u, v):
  """Five-pointed star, one tip up: fold the angle onto one tip's half-sector."""
  outer, inner = 1.0, 0.42
  sector = 2 * np.pi / 5
  phi = np.mod(np.arctan2(u, -v), sector)
  phi = np.abs(np.minimum(phi, sector - phi))
  rho = np.hypot(u, v)
  px, py = rho * np.cos(phi), rho * np.sin(phi)
  # Edge from the tip (outer, 0) to the valley at angle pi/5; the origin is inside.
  vx, vy = inner * np.cos(sector / 2) - outer, inner * np.sin(sector / 2)
  return vx * py - vy * (px - outer) >= 0


def _inside(shape, u, v):
  """Boolean mask of points (u, v) (units of the radius, v down) inside `shape`."""
  if shape == "circle":
    return u * u + v * v <= 1.0
  if shape == "square":
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8
  if shape == "triangle":  # apex up, base at v = 0.75
    return (v <= 0.75) & (np.abs(u) <= (v + 1.0) / 1.75)
  if shape == "diamond":
    return np.abs(u) + np.abs(v) <= 1.0
  if shape == "star":
    return _star_inside(u, v)
  if shape == "cross":
    arm = 0.34
    au, av = np.abs(u), np.abs(v)
    return ((au <= arm) & (av <= 0.95)) | ((av <= arm) & (au <= 0.95))
  raise ValueError(f"unknown shape {shape!r}")


def _coverage(shape, centres, radii):
  """Anti-aliased coverage of `_PATCH`-pixel windows, [N, P, P] in [0, 1].

  centres [N, 2] (x, y) are relative to each window's top-left corner.
  """
  s = _SUPERSAMPLE
  sub = ((np.arange(_PATCH * s) + 0.5) / s).astype(np.float32)  # sub-pixel samples
  scale = (1 / radii).astype(np.float32)[:, None, None]
  u = (sub[None, None, :] - centres[:, 0, None, None].astype(np.float32)) * scale
  v = (sub[None, :, None] - centres[:, 1, None, None].astype(np.float32)) * scale
  inside = _inside(shape, u, v).astype(np.float32)
  return inside.reshape(-1, _PATCH, s, _PATCH, s).mean(axis=(2, 4))


def _sample_attributes(rng, n, split):
  """Labels [n] per attribute; train redraws colours of held-out pairs."""
  shape = rng.integers(len(SHAPES), size=n)
  colour = rng.integers(len(COLOURS), size=n)
  held = {(SHAPES.index(s), COLOURS.index(c)) for s, c in HELD_OUT_PAIRS}
  is_held = np.array([(s, c) in held for s, c in zip(shape, colour)])
  while split == "train" and is_held.any():
    colour[is_held] = rng.integers(len(COLOURS), size=int(is_held.sum()))
    is_held = np.array([(s, c) in held for s, c in zip(shape, colour)])
  size = rng.integers(len(SIZES), size=n)
  position = rng.integers(len(POSITIONS), size=n)
  return shape, colour, size, position, is_held


def render(shape, colour, size, position, rng):
  """Images [N, 32, 32, 3] uint8 for label arrays [N], deterministic given rng."""
  n = len(shape)
  row, col = np.divmod(position, 3)
  centre = np.stack([_CELL_CENTRES[col], _CELL_CENTRES[row]], axis=1)
  centre += rng.uniform(-_CENTRE_JITTER, _CENTRE_JITTER, size=(n, 2))
  rgb = COLOUR_RGB[colour] + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, size=(n, 3))
  background = rng.uniform(0, _BACKGROUND_MAX, size=(n, 1, 1, 3))
  noise = rng.standard_normal(size=(n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)

  # Draw on a canvas padded by a window so no window crosses its border.
  pad = _PATCH
  alpha = np.zeros((n, IMAGE_SIZE + 2 * pad, IMAGE_SIZE + 2 * pad), np.float32)
  corner = np.floor(centre).astype(int) - _PATCH // 2 + pad
  for k, name in enumerate(SHAPES):
    (idx,) = np.nonzero(shape == k)
    if idx.size == 0:
      continue
    cov = _coverage(name, centre[idx] + pad - corner[idx], _RADII[size[idx]])
    for i, c in zip(idx, cov):
      x0, y0 = corner[i]
      alpha[i, y0:y0 + _PATCH, x0:x0 + _PATCH] = c
  alpha = alpha[:, pad:pad + IMAGE_SIZE, pad:pad + IMAGE_SIZE, None]
  background = background.astype(np.float32)
  rgb = rgb.astype(np.float32)[:, None, None, :]
  image = background + alpha * (rgb - background) + _NOISE_STD * noise
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def generate_split(split):
  """All examples of `split` as a dict of arrays (deterministic)."""
  rng = np.random.default_rng(_SPLIT_SEEDS[split])
  shape, colour, size, position, held_out = _sample_attributes(rng, NUM_EXAMPLES[split], split)
  # Rendering in chunks keeps the float32 intermediates in cache-sized pieces.
  image = np.concatenate([
      render(shape[i:i + _CHUNK], colour[i:i + _CHUNK], size[i:i + _CHUNK], position[i:i + _CHUNK],
             rng) for i in range(0, NUM_EXAMPLES[split], _CHUNK)
  ])
  return dict(image=image,
              shape=shape,
              colour=colour,
              size=size,
              position=position,
              held_out=held_out)


class Builder(bundled_builder.BundledBuilder):
  """DatasetBuilder for `shapes`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  SPLITS = tuple(NUM_EXAMPLES)
  SUPERVISED_KEYS = ("image", "caption")

  def _features(self):
    return {
        "image": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
        "shape": tfds.features.ClassLabel(names=SHAPES),
        "colour": tfds.features.ClassLabel(names=COLOURS),
        "size": tfds.features.ClassLabel(names=SIZES),
        "position": tfds.features.ClassLabel(names=POSITIONS),
        "caption": tfds.features.Text(),
        "held_out": tfds.features.Tensor(shape=(), dtype=np.bool_),
    }

  def _generate_examples(self, split):
    data = generate_split(split)
    for i in range(NUM_EXAMPLES[split]):
      labels = {k: int(data[k][i]) for k in ("shape", "colour", "size", "position")}
      yield i, dict(image=data["image"][i],
                    caption=caption(**labels),
                    held_out=bool(data["held_out"][i]),
                    **labels)
