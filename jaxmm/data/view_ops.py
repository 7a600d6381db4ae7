"""Random views of images for contrastive learning: numpy ops that the config names.

`data.views` lists ops applied in order, separated by '|', each a name or a
call with keyword arguments, e.g. SupCon's CIFAR recipe (Khosla et al. 2020,
after SimCLR's, Chen et al. 2020, Appendix A):

  "random_resized_crop(scale=(0.2, 1.0))|flip|colour_jitter|grayscale"

and `data.num_views` views of every training example are drawn (`make_views`).

Every op maps images float32 [N, H, W, C] in [-1, 1] and uint64 keys [N] to
images of the same shape, each example from its own key alone. View v of an
example draws op i's numbers from fold_in(fold_in(key, v), i), with key =
`preprocess.example_keys(seed, index, epoch)`: a view depends only on (seed,
example index, epoch, view), never on the rest of its batch, and the views of
an example differ.

`parse` turns mistakes into a one-line `UserError` naming data.views: an
unknown op (listing the valid ones), an argument an op does not take, a value
it cannot use, and several views asked of a spec whose ops draw nothing (none,
or flip(p=0), grayscale(p=1)...: the views would all be the same image).
"""
import ast
from collections.abc import Callable, Sequence
import functools
import inspect
import math

import numpy as np

from jaxmm import errors
from jaxmm.data.preprocess import fold_in, uniform

# ITU-R BT.601 luma, the grey level of torchvision's rgb_to_grayscale.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# RGB -> YIQ: luma and two chroma axes; a hue shift is a rotation of the chroma plane.
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
EXAMPLE = "random_resized_crop(scale=(0.2, 1.0))|flip|colour_jitter|grayscale"

# images float32 [N, H, W, C], keys uint64 [N] -> images float32 [N, H, W, C]
ViewOp = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check_probability(name: str, p: float) -> None:
  if not 0 <= p <= 1:
    raise ValueError(f"{name}={p!r} must lie in [0, 1]")


def crop_boxes(keys, height: int, width: int, scale=(0.08, 1.0),
               ratio=(3 / 4, 4 / 3)) -> tuple[np.ndarray, ...]:
  """(top, left, box_height, box_width), float64 [N] each, in pixels: random boxes in an image.

  The box covers a fraction a ~ U(scale) of the image's area with aspect
  ratio w/h = r, log r ~ U(log ratio) (Szegedy et al. 2015's crops, as
  torchvision's RandomResizedCrop draws them); a side longer than the image
  is cut to it (where torchvision draws again, then falls back to the
  centre), and the box lies uniformly within the image.
  """
  low, high = scale
  if not 0 < low <= high <= 1:
    raise ValueError(f"scale={tuple(scale)!r} must satisfy 0 < low <= high <= 1")
  if not 0 < ratio[0] <= ratio[1]:
    raise ValueError(f"ratio={tuple(ratio)!r} must satisfy 0 < low <= high")
  area = (low + (high - low) * uniform(keys, 0)) * height * width
  log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
  aspect = np.exp(log_low + (log_high - log_low) * uniform(keys, 1))
  box_height = np.minimum(np.sqrt(area / aspect), height)
  box_width = np.minimum(np.sqrt(area * aspect), width)
  return (height - box_height) * uniform(keys, 2), (width - box_width) * uniform(
      keys, 3), box_height, box_width


def _sampling_weights(start, length, size: int) -> np.ndarray:
  """[N, size, size] bilinear weights: output pixel i samples the point (i + ½)·length/size of
  each span [start, start + length) (pixel edges; pixel j is centred at j + ½)."""
  centres = start[:, None] + (np.arange(size) + 0.5) * (length[:, None] / size) - 0.5
  centres = np.clip(centres, 0, size - 1)
  return np.maximum(0.0, 1.0 - np.abs(np.arange(size)[None, None, :] - centres[..., None]))


def resized_crop(images, top, left, box_height, box_width) -> np.ndarray:
  """images [N, H, W, C] -> float32 [N, H, W, C]: each box (pixels, `crop_boxes`) stretched
  to the whole image, bilinear. A box is never larger than the image, so no antialiasing."""
  _, height, width, _ = images.shape
  wy = _sampling_weights(top, box_height, height).astype(np.float32)
  wx = _sampling_weights(left, box_width, width).astype(np.float32)
  return np.einsum("nyh,nhwc,nxw->nyxc", wy, np.asarray(images, np.float32), wx, optimize=True)


def random_resized_crop(images, keys, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """A random box of each image (`crop_boxes`) resized to the whole image (`resized_crop`)."""
  _, height, width, _ = images.shape
  return resized_crop(images, *crop_boxes(keys, height, width, scale, ratio))


def flip(images, keys, p=0.5) -> np.ndarray:
  """Mirrors each image left to right with probability p."""
  _check_probability("p", p)
  mirrored = uniform(keys, 0) < p
  return np.where(mirrored[:, None, None, None], images[:, :, ::-1], images)


def _luma(x) -> np.ndarray:
  """RGB [..., 3] -> grey [..., 1]."""
  return (x @ _LUMA)[..., None]


def _hue_rotations(angles) -> np.ndarray:
  """[N, 3, 3] RGB -> RGB maps rotating the YIQ chroma plane by `angles` [N] (radians)."""
  cos, sin = np.cos(angles), np.sin(angles)
  rotations = np.zeros((len(angles), 3, 3))
  rotations[:, 0, 0] = 1
  rotations[:, 1, 1], rotations[:, 1, 2] = cos, -sin
  rotations[:, 2, 1], rotations[:, 2, 2] = sin, cos
  return np.linalg.inv(_YIQ) @ rotations @ _YIQ


def colour_jitter(images, keys, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                  p=0.8) -> np.ndarray:
  """With probability p, random brightness, contrast, saturation and hue of RGB images.

  On the [0, 1] scale, in this order (torchvision's ColorJitter draws the
  order at random), each clipped to [0, 1]: x ← b·x; x ← c·(x − m) + m with
  m the image's mean grey level; x ← s·(x − g) + g with g each pixel's grey
  level; the hue turned by h of a full turn, a rotation of the YIQ chroma
  plane (a linear stand-in for HSV's hue). b, c, s ~ U[1 − v, 1 + v] for the
  values v of brightness, contrast and saturation; h ~ U[−hue, hue].
  """
  _check_probability("p", p)
  for name, value in (("brightness", brightness), ("contrast", contrast),
                      ("saturation", saturation)):
    if not 0 <= value <= 1:
      raise ValueError(f"{name}={value!r} must lie in [0, 1]")
  if not 0 <= hue <= 0.5:
    raise ValueError(f"hue={hue!r} must lie in [0, 0.5]")
  if images.shape[-1] != 3:
    raise ValueError(f"colour_jitter needs RGB images, not {images.shape[-1]} channels")
  jittered = uniform(keys, 0) < p
  factor = lambda stream, v: np.where(jittered, 1 + v * (2 * uniform(keys, stream) - 1), 1)
  shape = (-1, 1, 1, 1)
  x = (np.asarray(images, np.float32) + 1) / 2
  x = np.clip(x * factor(1, brightness).reshape(shape).astype(np.float32), 0, 1)
  mean = _luma(x).mean(axis=(1, 2), keepdims=True)
  x = np.clip((x - mean) * factor(2, contrast).reshape(shape).astype(np.float32) + mean, 0, 1)
  grey = _luma(x)
  x = np.clip((x - grey) * factor(3, saturation).reshape(shape).astype(np.float32) + grey, 0, 1)
  angles = np.where(jittered, 2 * np.pi * hue * (2 * uniform(keys, 4) - 1), 0)
  x = np.clip(np.einsum("nhwc,ndc->nhwd", x, _hue_rotations(angles).astype(np.float32)), 0, 1)
  return x * 2 - 1


def grayscale(images, keys, p=0.2) -> np.ndarray:
  """Replaces each RGB image by its grey level on every channel with probability p."""
  _check_probability("p", p)
  if images.shape[-1] != 3:
    raise ValueError(f"grayscale needs RGB images, not {images.shape[-1]} channels")
  grey = np.repeat(_luma(np.asarray(images, np.float32)), 3, axis=-1)
  return np.where((uniform(keys, 0) < p)[:, None, None, None], grey, images)


# The ops that data.views may name.
OPS = {
    "random_resized_crop": random_resized_crop,
    "flip": flip,
    "colour_jitter": colour_jitter,
    "grayscale": grayscale,
}


def _parse_op(text: str) -> ViewOp:
  """'name' or 'name(key=literal, ...)' -> the op with those arguments, tried once."""
  try:
    node = ast.parse(text, mode="eval").body
  except SyntaxError:
    node = None
  if isinstance(node, ast.Name):
    name, arguments = node.id, []
  elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
    name, arguments = node.func.id, node.keywords
  else:
    raise errors.UserError(f"data.views: cannot read {text!r}; write each op as a name or "
                           f"name(key=value, ...), separated by '|', e.g. {EXAMPLE!r}")
  errors.one_of("data.views op", name, OPS)
  takes = list(inspect.signature(OPS[name]).parameters)[2:]
  try:
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in arguments}
  except ValueError:
    kwargs = None
  if kwargs is None or None in kwargs or set(kwargs) - set(takes):
    raise errors.UserError(f"data.views: {text!r}: {name} takes the literal arguments "
                           f"{', '.join(takes)}")
  op = functools.partial(OPS[name], **kwargs)
  try:
    op(np.zeros((1, 4, 4, 3), np.float32), np.zeros(1, np.uint64))
  except (TypeError, ValueError) as e:
    raise errors.UserError(f"data.views: {text!r}: {e}") from None
  return op


def parse(spec: str | None, num_views: int) -> list[ViewOp]:
  """The ops of `spec` (data.views; '' or None: none), checked for `num_views` views."""
  errors.integer_at_least("data.num_views", num_views, 1)
  ops = [_parse_op(part.strip()) for part in spec.split("|")] if spec else []
  if num_views > 1 and draws_nothing(ops):
    raise errors.UserError(f"data.num_views={num_views} views of data.views={spec!r} would all "
                           f"be the same image; name random ops, e.g. --config.data.views="
                           f"'{EXAMPLE}', or set --config.data.num_views=1")
  return ops


def draws_nothing(ops: Sequence[ViewOp], num_keys: int = 4096) -> bool:
  """Whether `ops` give both views of an example the same pixels, as no ops, flip(p=0) or
  grayscale(p=1) do: tried on one random 4×4 image under `num_keys` keys.

  An op that changes a view with probability q is taken for one that draws nothing
  with probability (1 − q)^num_keys: e^-8 for q = 0.002.
  """
  image = np.random.default_rng(0).uniform(-1, 1, (1, 4, 4, 3)).astype(np.float32)
  keys = np.arange(num_keys, dtype=np.uint64)
  views = make_views(np.repeat(image, num_keys, axis=0), keys, ops, 2)
  return bool(np.array_equal(views[:, 0], views[:, 1]))


def make_views(images, keys, ops: Sequence[ViewOp], num_views: int) -> np.ndarray:
  """images float32 [N, H, W, C] in [-1, 1], keys uint64 [N] -> views float32 [N, V, H, W, C]."""
  views = []
  for view in range(num_views):
    x, view_keys = images, fold_in(keys, view)
    for position, op in enumerate(ops):
      x = op(x, fold_in(view_keys, position))
    views.append(np.asarray(x, np.float32))
  return np.stack(views, axis=1)
