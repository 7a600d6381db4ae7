"""Weighted mixtures of training sources (data.mixture), drawn in proportion by a fixed schedule.

  config.data.mixture = dict(
      captions=dict(weight=0.45, data=dict(name="shapes")),
      shuffled=dict(weight=0.45, data=dict(data_dir="/data/shapes_shuffled")),
      shards=dict(weight=0.10, data=dict(source="wds", files="/data/web/*.tar", text_key="txt")))

Each source is a data config of its own: config.data with the keys of its
`data` replacing config.data's, so a source names only what differs (its
dataset or shard files, data_dir, image and text keys). The weights need not
sum to 1: source k gets the share w_k = weight_k / Σ weights of the stream.
Evaluation reads config.data's own eval split.

The schedule is a pure function of the stream position p (global batch t
holds positions [t·B, (t + 1)·B), as without a mixture). The sources, in the
order of their names, are split into two halves, recursively; position p of
a group's stream goes to its first half when L(p + 1) > L(p), where

  L(n) = ⌊n·a + 1/2⌋,  a = the first half's share of the group's weight,

is the number of the first n positions that the first half gets (a
Bresenham line, i.e. a Beatty sequence), and the positions of each half are
numbered on in order. So after any N positions source k has had n_k(N)
examples with |n_k(N) − N·w_k| ≤ ⌈log₂ K⌉ / 2 (K sources; each level of the
split is off by at most 1/2), so every global batch of B holds B·w_k ± ⌈log₂ K⌉
of source k; and n_k(p), the number of source k's examples before position
p, is where p reads in source k's own stream. A per-position hash would give
shares off by O(√N); a per-batch rounding of B·w_k would need a rule to
carry each batch's remainders over. This one is closed-form: no state to
save beyond the step, the same assignment on every host, and one host's rows
of a batch are found without computing the others'.

Each source's stream is the pipeline's own (one seeded permutation per epoch
of that source, epochs counted on its own), with a seed of its own
(`source_seed`): two copies of a dataset would otherwise meet the same image
at the same place in their streams. Batches carry 'source' int32 [b], the
index of each row's source among the sorted names (`names`).

The sources must give the same batch layout: every key that all of them
give must have the same dtype and per-example shape (data.image_size,
data.max_len, the tokenizer, the image channels); a key that only some give
(e.g. the `corrupted` label of a caption-corrupted copy) is left out.
Mistakes are `UserError`s naming the data.mixture key, before any batch.
"""
from collections.abc import Callable, Iterable, Mapping
import difflib
import math
import zlib

import numpy as np

from jaxmm.data import preprocess
from jaxmm.errors import UserError

# Rows at stream positions [b] of one source -> (batch with leading dim b, damaged examples met).
Rows = Callable[[np.ndarray], tuple[dict, int]]
SOURCE = "source"  # the batch key of each row's source index
_ENTRY_KEYS = ("weight", "data")


def _as_dict(config) -> dict:
  return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def names(data_config) -> list[str]:
  """The sorted source names of data.mixture; [] when it is None or empty."""
  return sorted(data_config.get("mixture") or {})


def sources(data_config, known_keys: Iterable[str]) -> dict[str, tuple[dict, float]]:
  """{name: (its data config, its weight)} of data.mixture, checked, in the order of `names`.

  `known_keys` are the data config keys that a source may set besides those
  config.data has. Raises UserError for a weight that is not a finite number
  > 0, a source key that is no data config key, or an entry with other keys
  than 'weight' and 'data'.
  """
  base = _as_dict(data_config)
  mixture = base.pop("mixture")
  if not hasattr(mixture, "keys") or not all(hasattr(e, "keys") for e in mixture.values()):
    raise UserError(f"data.mixture={mixture!r} is no mixture; give {{name: dict(weight=W, "
                    "data=dict(...its data config keys))}")
  known = sorted((set(base) | set(known_keys)) - {"mixture"})
  checked = {}
  for name in names(data_config):
    entry = _as_dict(mixture[name])
    for key in entry:
      if key not in _ENTRY_KEYS:
        raise UserError(f"data.mixture.{name}.{key} is not a mixture entry key; an entry is "
                        f"dict(weight=W, data=dict(...its data config keys))")
    weight = entry.get("weight")
    if (isinstance(weight, bool) or not isinstance(weight, (int, float)) or
        not math.isfinite(weight) or weight <= 0):
      raise UserError(f"data.mixture.{name}.weight={weight!r} must be a number > 0 (the "
                      f"source's share of the stream is its weight over their sum); set "
                      f"--config.data.mixture.{name}.weight, or remove the source")
    overrides = _as_dict(entry.get("data") or {})
    for key in overrides:
      if key not in known:
        nearest = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
        raise UserError(f"data.mixture.{name}.data.{key} is not a data config key{hint}")
    checked[name] = ({**base, **overrides}, float(weight))
  return checked


def source_seed(seed: int, name: str) -> int:
  """The seed of source `name`'s stream in a run of `seed`."""
  return int(preprocess.fold_in(np.uint64(seed), zlib.crc32(name.encode())))


def _first_half_count(n: np.ndarray, share: float) -> np.ndarray:
  """L(n) = ⌊n·share + 1/2⌋ int64: of the first n positions, those of the first half."""
  return np.floor(n.astype(np.float64) * share + 0.5).astype(np.int64)


def assign(positions, weights) -> tuple[np.ndarray, np.ndarray]:
  """Stream positions int [b] -> (source index int32 [b], position in its stream int64 [b]).

  `weights` [K] > 0 in the order of the sources; the split of the module docstring.
  """
  positions = np.asarray(positions, np.int64)
  if len(weights) == 1:
    return np.zeros(positions.shape, np.int32), positions
  half = len(weights) // 2
  share = sum(weights[:half]) / sum(weights)
  before = _first_half_count(positions, share)
  first = _first_half_count(positions + 1, share) > before
  source = np.empty(positions.shape, np.int32)
  inner = np.empty(positions.shape, np.int64)
  source[first], inner[first] = assign(before[first], weights[:half])
  second_source, inner[~first] = assign((positions - before)[~first], weights[half:])
  source[~first] = second_source + half
  return source, inner


def mixed_rows(data_config, seed: int, known_keys: Iterable[str],
               train_rows: Callable[[dict, int], tuple[Rows, bool]]) -> tuple[Rows, bool]:
  """(rows of the mixture at stream positions, whether any source counts damaged examples).

  train_rows(source data config, seed) gives a source's (rows, counts damage),
  as the pipeline does for a data config without mixture; a UserError it
  raises is prefixed with the source's key.
  """
  parts, weights = {}, {}
  for name, (config, weight) in sources(data_config, known_keys).items():
    try:
      parts[name] = train_rows(config, source_seed(seed, name))
    except UserError as e:
      raise UserError(f"data.mixture.{name}.data: {e}") from e
    weights[name] = weight
  rows = MixedRows({name: part[0] for name, part in parts.items()}, weights)
  return rows, any(counts for _, counts in parts.values())


class MixedRows:
  """Rows of the mixture at stream positions: each source's rows where the schedule puts them.

  Checks the sources' batch layout on construction, from one example each.
  """

  def __init__(self, rows: Mapping[str, Rows], weights: Mapping[str, float]):
    self._names = sorted(rows)
    self._rows = [rows[name] for name in self._names]
    self._weights = [weights[name] for name in self._names]
    self._layout = _common_layout({name: rows[name](np.zeros(1, np.int64))[0]
                                   for name in self._names})

  def __call__(self, positions: np.ndarray) -> tuple[dict, int]:
    source, inner = assign(positions, self._weights)
    batch = {key: np.empty((len(positions),) + shape, dtype)
             for key, (dtype, shape) in self._layout.items()}
    skipped = 0
    for k, rows in enumerate(self._rows):
      chosen = source == k
      if chosen.any():
        part, part_skipped = rows(inner[chosen])
        skipped += part_skipped
        for key in batch:
          batch[key][chosen] = part[key]
    batch[SOURCE] = source
    return batch, skipped


def _common_layout(examples: Mapping[str, dict]) -> dict[str, tuple[np.dtype, tuple]]:
  """{key: (dtype, per-example shape)} of the keys every source's batch has, all alike."""
  layouts = {name: {key: (value.dtype, value.shape[1:]) for key, value in batch.items()}
             for name, batch in examples.items()}
  common = set.intersection(*(set(layout) for layout in layouts.values()))
  first, *others = layouts
  for key in sorted(common):
    for other in others:
      if layouts[other][key] != layouts[first][key]:
        raise UserError(f"data.mixture sources disagree on what a batch holds: {key!r} is "
                        f"{_describe(layouts[first][key])} from {first!r} but "
                        f"{_describe(layouts[other][key])} from {other!r}; give every source "
                        "the same data.image_size, data.max_len, data.tokenizer and image "
                        f"channels (make data.mixture.{first}.data and "
                        f"data.mixture.{other}.data agree)")
  return {key: layouts[first][key] for key in sorted(common)}


def _describe(layout) -> str:
  dtype, shape = layout
  return f"{dtype} [{', '.join(['b'] + [str(n) for n in shape])}]"


class CountedBatches:
  """A training iterator of mixture batches whose `metrics()` add each source's examples."""

  def __init__(self, iterator, source_names: list[str]):
    self._iterator = iterator
    self._names = source_names
    self._seen = np.zeros(len(source_names), np.int64)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._iterator)
    self._seen += np.bincount(batch[SOURCE], minlength=len(self._names))
    return batch

  def __getattr__(self, name):  # get_state and set_state: the position is the inner iterator's
    return getattr(self._iterator, name)

  def metrics(self) -> dict[str, int]:
    """The inner iterator's metrics and {'mixture/NAME': examples of source NAME} in the
    batches since the last call."""
    metrics = self._iterator.metrics()
    metrics.update({f"mixture/{name}": int(n) for name, n in zip(self._names, self._seen)})
    self._seen[:] = 0
    return metrics
