"""Examples of a webdataset tar shard, read by row through its member index (`tar_index`)."""
from collections.abc import Sequence

import numpy as np

from jaxmm.data.shards import tar_index
from jaxmm.data.shards.stored import ShardFile
from jaxmm.data.shards.stored import StoredExample
from jaxmm.data.shards.stored import damaged


class TarShard:
  """The examples of one tar, in the order of their first members.

  An example's image is its member with the first of `image_exts` it has (so
  'jpg;png' takes either), its caption the first of `text_exts` (none: no
  caption is read), its labels the integer and bool fields of its JSON.
  """

  noun = "member extensions"  # what `fields()` lists, for messages

  def __init__(self, path: str, image_exts: Sequence[str], text_exts: Sequence[str],
               cache: bool):
    self.file = ShardFile(path, cache)
    index = tar_index.load(path)
    self.path = path
    self.error = str(index["error"])
    self.keys = index["keys"]
    self.num_examples = len(self.keys)
    self._exts = set(index["member_ext"].tolist())
    self._image = _field(index, image_exts)
    self._text = _field(index, text_exts) if text_exts else None
    self._image_exts, self._text_exts = tuple(image_exts), tuple(text_exts)
    self._label_names = index["label_names"].tolist()
    self._label_is_bool = index["label_is_bool"]
    self._label_values, self._label_present = index["label_values"], index["label_present"]

  def fields(self) -> list[str]:
    return sorted(self._exts)

  def misfit(self, what: str) -> None:
    """None: a member holds bytes, whatever `what` is ('image' or 'caption')."""
    del what

  def name(self, row: int) -> str:
    return f"{self.path}:{self.keys[row]}"

  def label_kinds(self) -> dict[str, type]:
    """Label name -> int or bool, for the fields of the shard's first example's JSON."""
    if not self.num_examples:
      return {}
    present = self._label_present[:, 0]
    return {name: bool if is_bool else int
            for name, is_bool, first in zip(self._label_names, self._label_is_bool, present)
            if first}

  def label_column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values int64 [n], present bool [n]) of label `name` over the shard's examples."""
    if name not in self._label_names:
      return np.zeros(self.num_examples, np.int64), np.zeros(self.num_examples, bool)
    k = self._label_names.index(name)
    return self._label_values[k], self._label_present[k]

  def read(self, rows, label_kinds: dict[str, type]) -> list[StoredExample]:
    """The stored examples at `rows` [b] with the labels `label_kinds` (name -> int or bool)."""
    columns = {name: self.label_column(name) for name in label_kinds}
    examples = []
    with self.file.open() as f:
      for row in np.asarray(rows, np.int64):
        problem = _missing(self._image, row, "image", self._image_exts)
        if problem is None and self._text is not None:
          problem = _missing(self._text, row, "caption", self._text_exts)
        missing = [name for name, (_, present) in columns.items() if not present[row]]
        if problem is None and missing:
          problem = f"its JSON lacks the label {missing[0]!r}"
        if problem is not None:
          examples.append(damaged(problem))
          continue
        labels = {name: kind(columns[name][0][row]) for name, kind in label_kinds.items()}
        text = None if self._text is None else _member(f, self._text, row)
        examples.append(StoredExample(_member(f, self._image, row), text, labels, None))
    return examples


def _field(index, exts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(offset int64 [n], -1 where there is none; size int64 [n]; complete bool [n]) of each
  example's member with the first of `exts` it has."""
  n = len(index["keys"])
  offset, size, complete = np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
  for ext in reversed(exts):  # the earlier alternatives are written last and win
    chosen = index["member_ext"] == ext
    examples = index["member_example"][chosen]
    offset[examples] = index["member_offset"][chosen]
    size[examples] = index["member_size"][chosen]
    complete[examples] = index["member_complete"][chosen]
  return offset, size, complete


def _missing(field, row, what: str, exts: Sequence[str]) -> str | None:
  """Why the example at `row` has no usable `what` member, or None."""
  offset, _, complete = field
  if offset[row] < 0:
    return f"no {what} (no member ending in {' or '.join('.' + e for e in exts)})"
  if not complete[row]:
    return f"its {what} member is cut short (the tar ends inside it)"
  return None


def _member(f, field, row) -> bytes:
  offset, size, _ = field
  f.seek(int(offset[row]))
  return f.read(int(size[row]))
