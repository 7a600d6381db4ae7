"""Random-access TFDS data sources, building the bundled datasets on first use.

`data_source(name, split)` returns `tfds.data_source`-style random access
(`len(src)`, `src[i]`, `src.__getitems__(indices)`) over array_record files.
Bundled datasets (`BUNDLED`) are generated locally into the data directory
the first time they are asked for; any other TFDS dataset must already be
prepared there (jaxmm never downloads). A name that is neither, or a data
directory that cannot be used, raises `jaxmm.errors.UserError` naming the
setting to change. A copy of a dataset that `derived_dataset` writes into
another data directory (a filtered or a caption-corrupted one) is found there
under the source's name.
"""
import difflib
import os
import re
import shlex
import shutil
import importlib
import tempfile

from jaxmm.errors import UserError
from jaxmm import storage

# Name -> module of its builder, imported when the dataset is first asked for: tfds (and the
# builders, which subclass its classes) load only where data is read, so that a train step on
# synthetic batches (benchmarks/) runs where tensorflow_datasets is not installed.
BUNDLED = {
    "shapes": "jaxmm.data.shapes.shapes_dataset_builder",
    "digits": "jaxmm.data.digits.digits_dataset_builder"
}
_DEFAULT_DATA_DIR = os.path.join("~", ".cache", "jaxmm", "tensorflow_datasets")
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_MAX_LISTED = 5


def _data_dir_origin(data_dir) -> str:
  """The setting the data dir came from, with its value, for error messages."""
  if data_dir:
    return f"data.data_dir={data_dir!r}"
  if os.environ.get("JAXMM_DATA_DIR"):
    return f"$JAXMM_DATA_DIR={os.environ['JAXMM_DATA_DIR']!r} (data.data_dir is unset)"
  return f"the default data dir {_DEFAULT_DATA_DIR!r} (data.data_dir and $JAXMM_DATA_DIR are unset)"


def _unusable_data_dir(data_dir, problem) -> UserError:
  return UserError(f"{_data_dir_origin(data_dir)} {problem}; set --config.data.data_dir to a "
                   "writable directory (it is created if missing)")


def resolve_data_dir(data_dir=None) -> str:
  """`data_dir`, else $JAXMM_DATA_DIR, else ~/.cache/jaxmm/tensorflow_datasets.

  Raises UserError if the chosen path is not a path or exists but is not a directory.
  """
  if data_dir and not isinstance(data_dir, (str, os.PathLike)):
    raise _unusable_data_dir(data_dir, "is not a path")
  path = data_dir or os.environ.get("JAXMM_DATA_DIR") or _DEFAULT_DATA_DIR
  path = storage.absolute(path)
  if storage.is_file(path):
    raise _unusable_data_dir(data_dir, "is a file, not a directory")
  return path


def _build_bundled(builder_cls, data_dir, origin=None):
  """Builds into a private directory, then renames the version folder in place.

  The rename is atomic, so a reader only ever sees a missing or a complete
  dataset. When two processes race, the second rename fails because the target
  exists; the loser discards its copy and uses the winner's (the data are
  identical: generation is deterministic). `origin` is the unresolved data dir
  setting, named in the UserError raised when `data_dir` cannot be written.
  A bucket `data_dir` gets a copy of a local build instead (`_upload_bundled`).
  """
  if not storage.is_local(data_dir):
    _upload_bundled(builder_cls, data_dir)
    return
  try:
    os.makedirs(data_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".building-", dir=data_dir)
  except OSError as e:
    raise _unusable_data_dir(origin, f"cannot be written ({e.strerror}: {data_dir})") from e
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


def _upload_bundled(builder_cls, data_dir):
  """Builds in a local temporary folder and copies the version folder to bucket `data_dir`.

  dataset_info.json is copied last: a dataset counts as prepared once it is
  there (`_not_prepared`), so a reader never opens a half-copied one.
  Processes that race write the same bytes.
  """
  with tempfile.TemporaryDirectory(prefix="jaxmm-build-") as scratch:
    builder = builder_cls(data_dir=scratch)
    builder.download_and_prepare()
    target = os.path.join(data_dir, os.path.relpath(builder.data_dir, scratch))
    files = sorted(storage.files_under(builder.data_dir),
                   key=lambda path: os.path.basename(path) == "dataset_info.json")
    for path in files:
      with open(path, "rb") as f:
        storage.write_bytes(os.path.join(target, os.path.relpath(path, builder.data_dir)),
                            f.read())


def _prepared_versions(data_dir, base_name) -> list:
  """'name:version' or 'name/config:version' for each prepared copy of `base_name`."""
  if not re.fullmatch(r"\w+", base_name):
    return []
  root = os.path.join(data_dir, base_name)
  found = []
  for name in storage.list_dir(root):  # a version, or a config holding versions
    for config, version in [("", name)] + [(name, v) for v in storage.list_dir(f"{root}/{name}")]:
      folder = os.path.join(root, config, version)
      if _VERSION.fullmatch(version) and storage.exists(f"{folder}/dataset_info.json"):
        found.append(f"{base_name}/{config}:{version}" if config else f"{base_name}:{version}")
  return sorted(found)


def _prepared_datasets(data_dir) -> dict:
  """{name: its prepared 'name[/config]:version's} for the TFDS datasets in `data_dir`."""
  names = storage.list_dir(data_dir)
  found = {name: _prepared_versions(data_dir, name) for name in names}
  return {name: versions for name, versions in found.items() if versions}


def _not_prepared(name, data_dir) -> UserError:
  """The one-line error for a name that is neither bundled nor prepared in `data_dir`."""
  prepared = _prepared_datasets(data_dir)
  names = sorted(set(BUNDLED) | set(prepared))
  versions = prepared.get(re.split(r"[/:]", name)[0], [])
  nearest = difflib.get_close_matches(name, names + versions, n=3, cutoff=0.6)
  if nearest:
    choices = "nearest bundled or prepared datasets: " + ", ".join(map(repr, nearest))
  else:
    more = len(names) - _MAX_LISTED
    choices = ("bundled or prepared datasets: " + ", ".join(map(repr, names[:_MAX_LISTED])) +
               (f" and {more} more" if more > 0 else ""))
  command = (f"tfds build {shlex.quote(name)} --data_dir={shlex.quote(data_dir)} "
             "--file_format=array_record")
  return UserError(f"data.name={name!r} is not prepared in {data_dir} and jaxmm never downloads; "
                   f"{choices}; set --config.data.name to one of them, or prepare it there "
                   f"first: {command}")


def get_builder(name: str, data_dir=None):
  """A prepared `tfds.core.DatasetBuilder` for `name` (building a bundled dataset if needed).

  Any TFDS dataset prepared in the data dir is found from its files, even when
  tfds has no code for it; `name` may add a config and version as tfds spells
  them ('name/config:1.0.0').
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  origin = data_dir
  data_dir = resolve_data_dir(data_dir)
  if name in BUNDLED:
    builder_cls = importlib.import_module(BUNDLED[name]).Builder
    # Looking before constructing avoids tfds warning about a missing folder.
    info = os.path.join(data_dir, builder_cls.name, str(builder_cls.VERSION), "dataset_info.json")
    if not storage.exists(info):
      _build_bundled(builder_cls, data_dir, origin)
    builder = builder_cls(data_dir=data_dir)
    # A copy written by `derived_dataset` may add features (a caption-corrupted copy's
    # `corrupted`) that the code does not define and would not decode: it is read from its files.
    on_disk = tfds.builder_from_directory(os.path.dirname(info))
    return on_disk if set(on_disk.info.features) != set(builder.info.features) else builder
  # tfds.builder answers a name it cannot find with a list of every dataset it
  # knows, so it is only asked about datasets that have files here.
  if _prepared_versions(data_dir, re.split(r"[/:]", name)[0]):
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      builder = None
    if builder is not None and builder.is_prepared():
      return builder
  raise _not_prepared(name, data_dir)


def dataset_names(data_dir=None) -> list[str]:
  """The names `get_builder` opens in `data_dir`: the bundled datasets and those prepared there."""
  return sorted(set(BUNDLED) | set(_prepared_datasets(resolve_data_dir(data_dir))))


def prepare(builder_cls, data_dir) -> None:
  """Generates the dataset of `builder_cls` (a `BundledBuilder`) into `data_dir` as the bundled
  datasets are generated: whole or not at all, or as a copy of a local build in a bucket."""
  _build_bundled(builder_cls, resolve_data_dir(data_dir), data_dir)


def data_source(name: str, split: str, data_dir=None):
  """Random-access source of decoded examples (dicts of numpy values)."""
  return get_builder(name, data_dir).as_data_source(split=split)
