"""Copies of a prepared TFDS dataset whose splits hold chosen records of the source's.

A copy goes into another data dir under the source's name and version, with the
source's features (and any it adds), so a config trains on it by setting
`data.data_dir` alone: everything looked up by the dataset's name, such as the
zero-shot prompts of `shapes`, still applies. Record i of a split is the i-th
example given, as in the bundled datasets. `jaxmm filter` and
`corrupted_captions` write their datasets this way.
"""
from collections.abc import Iterable, Iterator, Mapping
import types

import numpy as np
import tensorflow_datasets as tfds

from jaxmm.data import bundled_builder
from jaxmm.data import sources

# Records decoded per read of the source.
_CHUNK = 1000


def records(source: tfds.core.DatasetBuilder, split: str, indices=None) -> Iterator[dict]:
  """The decoded records (dicts of numpy values) of source's `split` at `indices` [n] (default:
  all of them), in that order."""
  data = source.as_data_source(split=split)
  indices = np.arange(len(data)) if indices is None else np.asarray(indices, np.int64)
  for start in range(0, len(indices), _CHUNK):
    yield from data.__getitems__(indices[start:start + _CHUNK].tolist())


def write(source: tfds.core.DatasetBuilder,
          data_dir: str,
          splits: Mapping[str, Iterable[dict]],
          added_features: Mapping[str, tfds.features.FeatureConnector] | None = None) -> None:
  """Writes the copy `splits` (split name -> its examples in order) of `source` into `data_dir`.

  Each example is a dict of the source's features and `added_features`. The
  copy is complete or absent, as a bundled dataset's build (`sources.prepare`).
  """
  features = dict(source.info.features.items()) | dict(added_features or {})

  def body(namespace):
    namespace.update(
        __module__=__name__,  # tfds reads a builder's metadata from beside its module
        name=source.name,
        VERSION=tfds.core.Version(str(source.info.version)),
        SPLITS=tuple(splits),
        SUPERVISED_KEYS=source.info.supervised_keys,
        _features=lambda self: features,
        _generate_examples=lambda self, split: enumerate(splits[split]))

  builder_cls = types.new_class("Builder", (bundled_builder.BundledBuilder,),
                                {"skip_registration": True}, body)
  sources.prepare(builder_cls, data_dir)
