"""`digits`: scikit-learn's handwritten digits as 32x32 images with a label and a caption.

The 1,797 images of `sklearn.datasets.load_digits()` (UCI optical recognition
of handwritten digits; the file ships inside scikit-learn, so nothing is
downloaded) are 8x8 grey levels 0..16, ink bright on a dark background. They
are stored as uint8 RGB [32, 32, 3], the size and layout of `shapes`, so that
the image-text configs train on either without other changes (the small
ViT's 8x8 patches then each see 2x2 original pixels):

  grey = round(level · 255 / 16)          0 -> 0, 16 -> 255
  image = each pixel repeated as a 4x4 block (nearest neighbour), on 3 channels

Nearest-neighbour upsampling invents nothing between pixels: every stored
image is its 8x8 original exactly (`upsample` is the whole transformation).

Split: a fixed-seed stratified one; `test` holds a fifth of each digit
(rounded down: 355 examples), `train` the other 1,442, each in load_digits order. Every example
keeps its position in load_digits as `index`. Captions name the digit in one
of captions.CAPTION_TEMPLATES, chosen by that position, so they are deterministic.
"""
import numpy as np
import tensorflow_datasets as tfds

from jaxmm.data import bundled_builder
from jaxmm.data.digits.captions import caption
from jaxmm.data.digits.captions import DIGIT_NAMES

IMAGE_SIZE = 32
MAX_LEVEL = 16  # load_digits' grey levels are 0..16
TEST_PART = 5  # `test` holds 1/TEST_PART of each digit, rounded down
_SPLIT_SEED = 0


def upsample(levels: np.ndarray) -> np.ndarray:
  """Grey levels [N, 8, 8] in 0..16 -> uint8 RGB [N, 32, 32, 3] (module docstring)."""
  grey = np.round(np.asarray(levels, np.float64) * (255 / MAX_LEVEL)).astype(np.uint8)
  factor = IMAGE_SIZE // grey.shape[-1]
  grey = grey.repeat(factor, axis=1).repeat(factor, axis=2)
  return np.repeat(grey[..., None], 3, axis=-1)


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
  """'train' and 'test' -> sorted positions into `labels` [N]: a stratified split.

  For each class, a fixed-seed permutation of its positions gives the first
  count // TEST_PART to `test`.
  """
  rng = np.random.default_rng(_SPLIT_SEED)
  test = []
  for label in np.unique(labels):
    (members,) = np.nonzero(labels == label)
    test.append(rng.permutation(members)[:len(members) // TEST_PART])
  test = np.sort(np.concatenate(test))
  return {"train": np.setdiff1d(np.arange(len(labels)), test), "test": test}


def generate_split(split: str) -> dict[str, np.ndarray]:
  """All examples of `split`: 'image' uint8 [n, 32, 32, 3], 'label' [n], 'index' [n]."""
  # Imported here: scikit-learn adds about a second to every `jaxmm` command that
  # imports jaxmm.data, and only building the dataset needs it.
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  digits = datasets.load_digits()
  index = split_indices(digits.target)[split]
  return dict(image=upsample(digits.images[index]), label=digits.target[index], index=index)


class Builder(bundled_builder.BundledBuilder):
  """DatasetBuilder for `digits`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  SPLITS = ("train", "test")
  SUPERVISED_KEYS = ("image", "label")

  def _features(self):
    return {
        "image": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
        "label": tfds.features.ClassLabel(names=DIGIT_NAMES),
        "caption": tfds.features.Text(),
        "index": tfds.features.Tensor(shape=(), dtype=np.int32),
    }

  def _generate_examples(self, split):
    data = generate_split(split)
    for image, label, index in zip(data["image"], data["label"], data["index"]):
      yield int(index), dict(image=image,
                             label=int(label),
                             caption=caption(int(label), int(index)),
                             index=int(index))
