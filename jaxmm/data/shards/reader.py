"""Random access by index over the examples of a list of shards, decoded: `ShardReader`.

Example i of a reader is the i-th of its files' examples taken in the order of
the files, and within a file in its own order (a tar's keys as they first
appear, a parquet file's rows), the order in which `jaxmm data export` writes
a TFDS split's records. So a split exported to shards and read back holds
record i at index i, and the pipelines' permutations pick the same examples.
"""
import concurrent.futures
import copy

import numpy as np

from jaxmm.data import host_threads
from jaxmm.data.shards import crop as crop_lib
from jaxmm.data.shards import decode
from jaxmm.data.shards import files as files_lib
from jaxmm.data.shards.parquet import ParquetShard
from jaxmm.data.shards.wds import TarShard
from jaxmm.errors import UserError
from jaxmm import storage

SHARD_TYPES = {"wds": TarShard, "parquet": ParquetShard}
# Files opened (tars indexed) at once: the work is mostly waiting for reads.
_OPENING_THREADS = 8
_MAX_CACHED_BYTES = 1 << 30


class ShardReader:
  """The examples of `files` (a list of shards of `source`), with SplitReader's interface.

  `image_key` and `text_key` name the image and the caption: a tar's member
  extensions or a parquet file's columns, alternatives separated by ';'
  ('jpg;png;webp'); text_key None reads no caption. Images are decoded and
  made float32 [S, S, 3] in [-1, 1] (or normalised by image_mean and
  image_std), S = image_size (`decode.image`). The
  labels are the integer and bool fields of the first shard's first example
  (a tar's JSON member, a parquet file's columns). With `cache`, files of
  under 1 GiB in all are read into memory once.

  Raises UserError, naming the shard, when a shard is no file of its format or
  has none of the image or text key's alternatives (listing what it has); the
  message names the keys as `settings` (config keys, or a command's flags).
  """

  def __init__(self,
               files: list[str],
               source: str,
               image_key: str,
               text_key: str | None,
               image_size: int,
               cache: bool,
               settings: tuple[str, str] = ("data.image_key", "data.text_key"),
               image_mean=None,
               image_std=None):
    self.image_key, self.text_key, self.image_size = image_key, text_key, image_size
    self.image_mean, self.image_std = image_mean, image_std
    image_keys, text_keys = files_lib.keys_of(image_key), files_lib.keys_of(text_key)
    image_setting, text_setting = settings
    if not image_keys:
      raise UserError(f"{image_setting}={image_key!r} names no field; set "
                      f"{files_lib.flag(image_setting)} to the images' extension or column, e.g. "
                      "'jpg;png;webp'")
    cache = cache and sum(storage.stat(path).length for path in files) <= _MAX_CACHED_BYTES
    shard_type = SHARD_TYPES[source]
    with concurrent.futures.ThreadPoolExecutor(_OPENING_THREADS) as pool:
      self.shards = list(
          pool.map(lambda path: shard_type(path, image_keys, text_keys, cache), files))
    for shard in self.shards:
      _check_has(shard, image_setting, image_key, image_keys, "image")
      if text_keys:
        _check_has(shard, text_setting, text_key, text_keys, "caption")
    self.label_kinds = self.shards[0].label_kinds()
    self._starts = np.cumsum([0] + [shard.num_examples for shard in self.shards])
    self._offset = 0
    self.num_examples = int(self._starts[-1])
    if not self.num_examples:
      raise UserError(f"the {len(files)} {source} shards ({files[0]}, ...) hold no example; "
                      "give shards that hold some")

  def rows(self, start: int, stop: int) -> "ShardReader":
    """The reader of examples [start, stop) of this one, as index 0 .. stop - start - 1."""
    view = copy.copy(self)
    view._offset = self._offset + start
    view.num_examples = max(0, min(stop, self.num_examples) - start)
    return view

  def shard_numbers(self, indices) -> np.ndarray:
    """int64 [b]: the number of the shard (in `self.shards`) holding each of examples `indices`."""
    indices = np.asarray(indices, np.int64) + self._offset
    return np.searchsorted(self._starts, indices, side="right") - 1

  def name(self, index: int) -> str:
    """'PATH:KEY' (a tar's) or 'PATH:row R' (a parquet file's) of example `index`."""
    shard = int(self.shard_numbers([index])[0])
    return self.shards[shard].name(int(index) + self._offset - int(self._starts[shard]))

  def read(self, indices) -> dict:
    """Examples at `indices` [b] as a dict of arrays with leading dim b; a damaged one (see
    `read_checked`) as zeros and an empty caption."""
    return self.read_checked(indices)[0]

  def read_checked(self, indices, *, crop: crop_lib.RandomResizedCrop | None = None, keys=None,
                   threads: int = 1) -> tuple[dict, list[str | None]]:
    """(the examples at `indices` [b], why each cannot be used: None, or a reason [b]).

    The examples: image_key -> float32 [b, S, S, 3]; text_key -> captions
    (bytes or str) [b] when it is set; each label -> int64 or bool [b]. A
    damaged example (a member cut short, no image, caption or label, an
    image that does not decode) is zeros there, with an empty caption.
    Images are the centre squares (`decode.image`), or with `crop` the
    random-resized crops of the examples' uint64 `keys` [b] (`crop.image`,
    whose size replaces S); they are decoded on `threads` threads
    (`host_threads`).
    """
    shard_of = self.shard_numbers(indices)
    indices = np.asarray(indices, np.int64) + self._offset
    stored = [None] * len(indices)
    for s in np.unique(shard_of):
      at = np.flatnonzero(shard_of == s)
      rows = indices[at] - self._starts[s]
      for i, example in zip(at, self.shards[s].read(rows, self.label_kinds)):
        stored[i] = example
    size = self.image_size if crop is None else crop.size
    images = np.zeros((len(indices), size, size, 3), np.float32)

    def decode_one(i: int) -> str | None:
      """Decodes example i into images[i]; why it cannot be used, or None."""
      if stored[i].problem is not None:
        return stored[i].problem
      try:
        if crop is None:
          images[i] = decode.image(stored[i].image, size, self.image_mean, self.image_std)
        else:
          images[i] = crop_lib.image(stored[i].image, crop, keys[i], self.image_mean,
                                     self.image_std)
      except decode.Undecodable as e:
        return str(e)
      return None

    problems = host_threads.map_examples(decode_one, range(len(stored)), threads)
    examples = {self.image_key: images}
    if self.text_key is not None:
      examples[self.text_key] = np.array(
          [b"" if p else e.text for e, p in zip(stored, problems)], dtype=object)
    for name, kind in self.label_kinds.items():
      values = [kind(0) if p else e.labels[name] for e, p in zip(stored, problems)]
      examples[name] = np.array(values, bool if kind is bool else np.int64)
    return examples, problems

  def class_labels(self) -> dict[str, int]:
    """Integer label name -> 1 + its largest value over every shard (the number of classes)."""
    labels = {}
    for name, kind in self.label_kinds.items():
      if kind is int:
        largest = [values[present].max(initial=0)
                   for values, present in (shard.label_column(name) for shard in self.shards)]
        labels[name] = int(max(largest)) + 1
    return labels


def _check_has(shard, setting: str, value: str, alternatives, what: str) -> None:
  """UserError, listing what `shard` has, unless it has one of the `alternatives` of `setting`,
  and one that can hold `what` ('image' or 'caption')."""
  has = ", ".join(shard.fields()) or "nothing"
  problem = None
  if not set(alternatives) & set(shard.fields()):
    problem = f"has no {' or '.join(alternatives)} for {setting}={value!r}"
  elif shard.misfit(what):
    problem = f"has {setting}={value!r}, but its {shard.misfit(what)}"
  if problem:
    raise UserError(f"{shard.path} {problem} (its {shard.noun}: {has}); set "
                    f"{files_lib.flag(setting)} to the one that holds its {what}s")
