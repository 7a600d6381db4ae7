"""Random-access TFDS data sources, building the bundled datasets on first use.

`data_source(name, split)` returns `tfds.data_source`-style random access
(`len(src)`, `src[i]`, `src.__getitems__(indices)`) over array_record files.
Bundled datasets (`BUNDLED`) are generated locally into the data directory
the first time they are asked for; any other TFDS dataset must already be
prepared there (jaxmm never downloads).
"""
import os
import shutil
import tempfile

import tensorflow_datasets as tfds

from jaxmm.data.shapes import shapes_dataset_builder

BUNDLED = {"shapes": shapes_dataset_builder.Builder}
_DEFAULT_DATA_DIR = os.path.join("~", ".cache", "jaxmm", "tensorflow_datasets")


def resolve_data_dir(data_dir=None) -> str:
  """`data_dir`, else $JAXMM_DATA_DIR, else ~/.cache/jaxmm/tensorflow_datasets."""
  data_dir = data_dir or os.environ.get("JAXMM_DATA_DIR") or _DEFAULT_DATA_DIR
  return os.path.abspath(os.path.expanduser(data_dir))


def _build_bundled(builder_cls, data_dir):
  """Builds into a private directory, then renames the version folder in place.

  The rename is atomic, so a reader only ever sees a missing or a complete
  dataset. When two processes race, the second rename fails because the target
  exists; the loser discards its copy and uses the winner's (the data are
  identical: generation is deterministic).
  """
  os.makedirs(data_dir, exist_ok=True)
  scratch = tempfile.mkdtemp(prefix=".building-", dir=data_dir)
  try:
    builder = builder_cls(data_dir=scratch)
    builder.download_and_prepare()
    relative = os.path.relpath(builder.data_dir, scratch)  # name/version
    target = os.path.join(data_dir, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
      os.rename(builder.data_dir, target)
    except OSError:
      if not builder_cls(data_dir=data_dir).is_prepared():
        raise
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def get_builder(name: str, data_dir=None) -> tfds.core.DatasetBuilder:
  """A prepared builder for `name` (building a bundled dataset if needed)."""
  data_dir = resolve_data_dir(data_dir)
  if name in BUNDLED:
    builder_cls = BUNDLED[name]
    # Looking before constructing avoids tfds warning about a missing folder.
    info = os.path.join(data_dir, builder_cls.name, str(builder_cls.VERSION), "dataset_info.json")
    if not os.path.exists(info):
      _build_bundled(builder_cls, data_dir)
    return builder_cls(data_dir=data_dir)
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in {data_dir}; jaxmm never "
                            "downloads. Prepare it there first (e.g. `tfds build "
                            f"{name} --data_dir={data_dir} --file_format=array_record`).")
  return builder


def data_source(name: str, split: str, data_dir=None):
  """Random-access source of decoded examples (dicts of numpy values)."""
  return get_builder(name, data_dir).as_data_source(split=split)
