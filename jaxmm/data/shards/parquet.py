"""Examples of a parquet shard, read by row group: the rows wanted and no other group.

img2dataset's parquet output (and the export of `jaxmm data export --format
parquet`) holds one row per example: the image's encoded bytes in a binary
column, the caption in a string column, labels in integer or bool columns.
Parquet stores a file as row groups, read whole, so a random read costs its
row group: write small groups (img2dataset's hold 100 rows) for random access.
"""
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxmm.data.shards.stored import ShardFile
from jaxmm.data.shards.stored import StoredExample
from jaxmm.data.shards.stored import damaged
from jaxmm.errors import UserError


def _is_text(kind: pa.DataType) -> bool:
  return pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_bytes(kind)


def _is_bytes(kind: pa.DataType) -> bool:
  return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


class ParquetShard:
  """The rows of one parquet file, in order.

  The image is the first of `image_columns` the file has, the caption the
  first of `text_columns` (none: no caption is read), the labels its integer
  and bool columns.
  """

  noun = "columns"  # what `fields()` lists, for messages

  def __init__(self, path: str, image_columns: Sequence[str], text_columns: Sequence[str],
               cache: bool):
    self.path = path
    self.file = ShardFile(path, cache)
    self.error = ""
    with self.file.open() as f:
      try:
        metadata = pq.ParquetFile(f).metadata
      except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path} is not a parquet file ({type(e).__name__}: {e}); leave this "
                        "file out of the shards") from e
    self._schema = metadata.schema.to_arrow_schema()
    sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    self._starts = np.cumsum([0] + sizes)
    self.num_examples = int(self._starts[-1])
    self.image_column = self._first(image_columns)
    self.text_column = self._first(text_columns)
    self._labels = {
        field.name: bool if pa.types.is_boolean(field.type) else int
        for field in self._schema
        if (pa.types.is_integer(field.type) or pa.types.is_boolean(field.type)) and
        field.name not in (self.image_column, self.text_column)
    }

  def _first(self, columns) -> str | None:
    """The first of `columns` that the file has; None if none (or none is asked for)."""
    return next((c for c in columns if c in self._schema.names), None)

  def misfit(self, what: str) -> str | None:
    """Why the column chosen for `what` ('image' or 'caption') cannot hold it, or None."""
    name, accepts, expected = {
        "image": (self.image_column, _is_bytes, "binary (image bytes)"),
        "caption": (self.text_column, _is_text, "string or binary"),
    }[what]
    kind = self._schema.field(name).type
    return None if accepts(kind) else f"column {name!r} holds {kind}, not {expected}"

  def fields(self) -> list[str]:
    return list(self._schema.names)

  def name(self, row: int) -> str:
    return f"{self.path}:row {row}"

  def label_kinds(self) -> dict[str, type]:
    """Label name -> int or bool: the file's integer and bool columns."""
    return dict(self._labels)

  def label_column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values int64 [n], present bool [n]) of label column `name`."""
    if name not in self._labels:
      return np.zeros(self.num_examples, np.int64), np.zeros(self.num_examples, bool)
    with self.file.open() as f:
      column = pq.ParquetFile(f).read(columns=[name]).column(name)
    present = ~np.asarray(column.is_null(), bool)
    values = np.asarray(column.fill_null(0).cast(pa.int64()), np.int64)
    return values, present

  def read(self, rows, label_kinds: dict[str, type]) -> list[StoredExample]:
    """The stored examples at `rows` [b] with the labels `label_kinds` (name -> int or bool)."""
    rows = np.asarray(rows, np.int64)
    groups = np.searchsorted(self._starts, rows, side="right") - 1
    columns = [self.image_column] + [c for c in [self.text_column] if c] + [
        name for name in label_kinds if name in self._labels
    ]
    examples = [None] * len(rows)
    with self.file.open() as f:
      data = pq.ParquetFile(f)
      for group in np.unique(groups):
        table = data.read_row_group(int(group), columns=columns).to_pydict()
        for i in np.flatnonzero(groups == group):
          row = {name: values[rows[i] - self._starts[group]] for name, values in table.items()}
          examples[i] = self._example(row, label_kinds)
    return examples

  def _example(self, row: dict, label_kinds: dict[str, type]) -> StoredExample:
    if row[self.image_column] is None:
      return damaged(f"no image (column {self.image_column!r} is null)")
    if self.text_column and row[self.text_column] is None:
      return damaged(f"no caption (column {self.text_column!r} is null)")
    missing = [name for name in label_kinds if row.get(name) is None]
    if missing:
      return damaged(f"no label {missing[0]!r} (null or no such column)")
    text = row[self.text_column] if self.text_column else None
    labels = {name: kind(row[name]) for name, kind in label_kinds.items()}
    return StoredExample(row[self.image_column], text, labels, None)
