"""An image-text dataset with mismatched pairs mixed in, to test data filtering on.

`write_corrupted_copy` copies a dataset (`derived_dataset`) with a seeded
fraction of one split's captions replaced by other examples' captions, the kind
of noise that filtering web-scale pairs removes (Fang et al. 2023). A bool
feature `corrupted` marks the replaced ones; the other splits are copied
unchanged, with `corrupted` False throughout.

  from jaxmm.data import corrupted_captions
  corrupted_captions.write_corrupted_copy("shapes", "train", 0.4, "data/shapes_noisy")
  # then: jaxmm train ... --config.data.data_dir=data/shapes_noisy
"""
import numpy as np
import tensorflow_datasets as tfds

from jaxmm import errors
from jaxmm.data import derived_dataset
from jaxmm.data import sources

CORRUPTED = "corrupted"


def corrupt(captions: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(captions [N] with round(fraction · N) of them replaced, the replaced ones: bool [N]).

  The replaced examples are a seeded uniform choice. Each gets the caption of
  an example drawn uniformly among those whose caption differs from its own, so
  every marked pair is mismatched and no unmarked pair changes.
  """
  if not 0 <= fraction <= 1:
    raise errors.UserError(f"fraction={fraction!r} must lie in [0, 1]: the share of captions "
                           "replaced")
  captions = np.asarray(captions, dtype=object)
  if len(set(captions.tolist())) < 2 and fraction > 0:
    raise errors.UserError("every caption is the same, so none can be replaced by a different one")
  rng = np.random.default_rng(seed)
  chosen = rng.choice(len(captions), size=round(fraction * len(captions)), replace=False)
  donors = rng.integers(len(captions), size=len(chosen))
  same = captions[donors] == captions[chosen]
  while same.any():
    donors[same] = rng.integers(len(captions), size=int(same.sum()))
    same = captions[donors] == captions[chosen]
  corrupted = np.zeros(len(captions), bool)
  corrupted[chosen] = True
  replaced = captions.copy()
  replaced[chosen] = captions[donors]
  return replaced, corrupted


def write_corrupted_copy(name: str,
                         split: str,
                         fraction: float,
                         out_dir: str,
                         *,
                         seed: int = 0,
                         data_dir=None,
                         text_key: str = "caption") -> None:
  """Copies dataset `name` (from `data_dir`, as `sources.get_builder` finds it) into `out_dir`
  under the same name, with `corrupt(captions, fraction, seed)` applied to the `text_key`
  feature of `split` and recorded in the feature `corrupted`."""
  source = sources.get_builder(name, data_dir)
  errors.one_of("split", split, list(source.info.splits))
  errors.one_of("text_key", text_key, list(source.info.features))
  captions = [record[text_key] for record in derived_dataset.records(source, split)]
  replaced, corrupted = corrupt(np.asarray(captions, dtype=object), fraction, seed)

  def examples(split_name):
    for i, record in enumerate(derived_dataset.records(source, split_name)):
      if split_name == split:
        record[text_key], record[CORRUPTED] = replaced[i], corrupted[i]
      else:
        record[CORRUPTED] = False
      yield record

  derived_dataset.write(source, out_dir, {s: examples(s) for s in source.info.splits},
                        {CORRUPTED: tfds.features.Tensor(shape=(), dtype=np.bool_)})
