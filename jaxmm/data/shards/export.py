"""A TFDS split written as webdataset tar shards or parquet files (`jaxmm data export`).

Record i of the split becomes example i of the shards as `ShardReader` reads
them, with key i (zero-padded), `shard_size` examples a file:

  wds      OUT/00000.tar ...: KEY.png (the image), KEY.txt (the caption's
           UTF-8 bytes, as stored), KEY.json (the labels)
  parquet  OUT/00000.parquet ...: columns key, png (the image's bytes), txt,
           one per label; row groups of 100 rows, img2dataset's, so that a
           random read costs 100 examples

The image is PNG by default, lossless, so the shards read back into the
same pixels and a run on them equals the run on the TFDS split bit for bit;
'jpg' (quality 95) and 'webp' are smaller and lossy. The labels are the
split's ClassLabel features (integers) and scalar bool features; other
features are left out, since every integer field of a shard is read back
as a class label.
"""
import io
import json
import math
import os
import tarfile

import numpy as np
from PIL import Image
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow_datasets as tfds
import tqdm

from jaxmm import errors
from jaxmm.data import derived_dataset
from jaxmm.data import sources
from jaxmm import storage

FORMATS = ("wds", "parquet")
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}
ROW_GROUP_SIZE = 100
_JPEG_QUALITY = 95


def _feature_kinds(features, image_feature: str, text_feature: str) -> dict[str, str]:
  """Feature name -> 'image', 'text', 'int' or 'bool' for the features written; UserError for an
  image or text feature that is missing or of another kind."""
  features = dict(features.items())
  names = ", ".join(map(repr, sorted(features)))
  image = features.get(image_feature)
  if image is None or len(image.shape) != 3 or image.np_dtype != np.uint8:
    raise errors.UserError(f"--image-feature {image_feature!r} is no uint8 [H, W, C] image feature "
                           f"of the dataset (its features: {names}); name the one of its images")
  kinds = {image_feature: "image"}
  if text_feature:
    if not isinstance(features.get(text_feature), tfds.features.Text):
      raise errors.UserError(f"--text-feature {text_feature!r} is no text feature of the dataset "
                             f"(its features: {names}); name the one of its captions, or give "
                             "--text-feature '' for none")
    kinds[text_feature] = "text"
  for name, feature in features.items():
    if isinstance(feature, tfds.features.ClassLabel):
      kinds[name] = "int"
    elif name not in kinds and feature.shape == () and feature.np_dtype == np.bool_:
      kinds[name] = "bool"
  return kinds


def _encode(image: np.ndarray, image_format: str) -> bytes:
  buffer = io.BytesIO()
  options = {"quality": _JPEG_QUALITY} if image_format == "jpg" else {}
  pixels = image[..., 0] if image.shape[-1] == 1 else image
  Image.fromarray(pixels).save(buffer, format=IMAGE_FORMATS[image_format], **options)
  return buffer.getvalue()


def _tar(shard: list, image_format: str) -> bytes:
  """A tar of the (key, image, caption, labels) examples of `shard` as KEY.EXT members, with
  fixed metadata (the same bytes on every export)."""
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w") as tar:
    for key, image, text, labels in shard:
      members = {image_format: image}
      if text is not None:
        members["txt"] = text
      if labels:
        members["json"] = json.dumps(labels, sort_keys=True).encode()
      for ext, data in members.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
  return buffer.getvalue()


def _parquet(shard: list, kinds: dict[str, str], image_format: str) -> bytes:
  """A parquet file of the (key, image, caption, labels) examples of `shard`."""
  columns = {"key": (pa.string(), [key for key, _, _, _ in shard])}
  for name, kind in kinds.items():
    if kind == "image":
      columns[image_format] = (pa.binary(), [image for _, image, _, _ in shard])
    elif kind == "text":
      columns["txt"] = (pa.string(), [text.decode("utf-8") for _, _, text, _ in shard])
    else:
      columns[name] = (pa.bool_() if kind == "bool" else pa.int64(),
                       [labels[name] for _, _, _, labels in shard])
  table = pa.table({name: pa.array(values, kind) for name, (kind, values) in columns.items()})
  buffer = io.BytesIO()
  pq.write_table(table, buffer, row_group_size=ROW_GROUP_SIZE)
  return buffer.getvalue()


def export(name: str,
           split: str,
           fmt: str,
           out: str,
           *,
           shard_size: int = 10_000,
           data_dir=None,
           image_feature: str = "image",
           text_feature: str = "caption",
           image_format: str = "png") -> tuple[list[str], int]:
  """Writes `split` of TFDS dataset `name` (found as `sources.get_builder` finds it) into folder
  `out` as `fmt` shards (module docstring), replacing files of the same names; returns (the
  files written, the examples)."""
  errors.one_of("--format", fmt, FORMATS)
  errors.one_of("--image-format", image_format, list(IMAGE_FORMATS))
  errors.integer_at_least("--shard-size", shard_size, 1)
  out = storage.absolute(out)
  builder = sources.get_builder(name, data_dir)
  errors.one_of("--split", split, list(builder.info.splits))
  kinds = _feature_kinds(builder.info.features, image_feature, text_feature)
  total = builder.info.splits[split].num_examples
  num_shards = max(1, math.ceil(total / shard_size))
  key_width, file_width = len(str(max(total - 1, 0))), max(5, len(str(num_shards - 1)))
  records = tqdm.tqdm(derived_dataset.records(builder, split), desc="examples written",
                      total=total, unit="example", dynamic_ncols=True)
  written, shard = [], []

  def flush():
    path = os.path.join(out, f"{len(written):0{file_width}d}.{'tar' if fmt == 'wds' else fmt}")
    storage.write_bytes(path, _tar(shard, image_format) if fmt == "wds" else
                        _parquet(shard, kinds, image_format))
    written.append(path)
    shard.clear()

  for i, record in enumerate(records):
    shard.append((f"{i:0{key_width}d}",) + _example(record, kinds, image_format))
    if len(shard) == shard_size:
      flush()
  if shard or not written:
    flush()
  return written, total


def _example(record: dict, kinds: dict[str, str], image_format: str) -> tuple:
  """(encoded image, caption bytes or None, labels {name: int or bool}) of one record."""
  image, text, labels = None, None, {}
  for name, kind in kinds.items():
    if kind == "image":
      image = _encode(np.asarray(record[name]), image_format)
    elif kind == "text":
      text = bytes(record[name])
    else:
      labels[name] = bool(record[name]) if kind == "bool" else int(record[name])
  return image, text, labels
