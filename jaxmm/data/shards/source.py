"""Which shards hold a split of a data config, and their reader, opened once per process.

data.files holds the training split (data.train_split), data.eval_files the
evaluation split (data.eval_split); each is a glob or a list of globs, local
or gs://. A split may take its first examples as TFDS spells it,
'train[:512]' (or 'train[100:612]').
"""
import functools
import re

from jaxmm.data.shards import files as files_lib
from jaxmm.data.shards.reader import ShardReader
from jaxmm.errors import UserError

SOURCES = ("tfds", "wds", "parquet")
_SLICED = re.compile(r"(?P<name>[^\[]+)(\[(?P<start>\d*):(?P<stop>\d*)\])?")


@functools.lru_cache(maxsize=8)
def _cached_reader(source, key, spec, image_key, text_key, image_size, cache, image_mean,
                   image_std):
  files = files_lib.shard_files(f"data.{key}", spec, source)
  return ShardReader(files, source, image_key, text_key, image_size, cache,
                     image_mean=image_mean, image_std=image_std)


def split_reader(source: str, split: str, *, files, eval_files, train_split: str, eval_split: str,
                 image_key: str, text_key: str | None, image_size: int, cache: bool,
                 image_mean=None, image_std=None) -> ShardReader:
  """The (per-process cached) reader of `split`: the shards of data.files for data.train_split,
  those of data.eval_files for data.eval_split; images normalised by image_mean and image_std
  (`preprocess.normalize`)."""
  match = _SLICED.fullmatch(split)
  name = match["name"] if match else split
  if name not in (train_split, eval_split):
    raise UserError(f"split {split!r} is neither data.train_split={train_split!r} (data.files) "
                    f"nor data.eval_split={eval_split!r} (data.eval_files) of data.source="
                    f"{source!r}; name one of them")
  key, spec = ("files", files) if name == train_split else ("eval_files", eval_files)
  reader = _cached_reader(source, key, files_lib.as_tuple(spec), image_key, text_key, image_size,
                          cache, image_mean, image_std)
  if match and match["stop"] is not None:
    start = int(match["start"] or 0)
    stop = int(match["stop"]) if match["stop"] else reader.num_examples
    return reader.rows(start, stop)
  return reader
