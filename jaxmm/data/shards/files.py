"""The shard files that a data config names: a glob or a list of them, local or in a bucket."""
import os

from jaxmm.errors import UserError
from jaxmm import storage

# The file name endings of each shard format.
EXTENSIONS = {"wds": (".tar",), "parquet": (".parquet",)}
# Webdataset's compressed shards, which cannot be read by offset.
_COMPRESSED = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")


def flag(setting: str) -> str:
  """How the user sets `setting`: a flag ('--files') as it is, a config key with --config."""
  return setting if setting.startswith("--") else f"--config.{setting}"


def shard_files(setting: str, spec, source: str) -> list[str]:
  """The files of `spec` (the value of `setting`, e.g. 'data.files'), in order: a glob's matches
  sorted, a list's in its order (each item may be a glob too).

  Raises UserError when `spec` is None, a glob matches nothing, or a file is
  not a shard of `source`.
  """
  example = f"'shards/*{EXTENSIONS[source][0]}'"
  if spec is None:
    raise UserError(f"data.source={source!r} reads {setting}, which is None; set "
                    f"{flag(setting)} to a glob of the shards, e.g. {example}")
  patterns = [spec] if isinstance(spec, str) else list(spec)
  if not patterns or not all(isinstance(p, str) for p in patterns):
    raise UserError(f"{setting}={spec!r} must be a glob or a list of globs of the shards, e.g. "
                    f"{example}")
  files = []
  for pattern in patterns:
    matches = storage.glob(storage.absolute(pattern))
    if not matches:
      raise UserError(f"{setting}: {pattern!r} matches no file; set {flag(setting)} to a glob "
                      f"of existing shards, local or gs://, e.g. {example}")
    files.extend(matches)
  for path in files:
    check_format(setting, path, source)
  return files


def source_of(path: str) -> str | None:
  """'wds' or 'parquet': the shard format that a file name ends in; None for another."""
  name = os.path.basename(path)
  return next((source for source, endings in EXTENSIONS.items() if name.endswith(endings)), None)


def check_format(setting: str, path: str, source: str) -> None:
  """UserError unless `path` (named by `setting`) is a file of shard format `source`."""
  if os.path.basename(path).endswith(_COMPRESSED):
    raise UserError(f"{setting} names {path}, a compressed tar, which cannot be read by offset; "
                    f"decompress the shards (e.g. gunzip) and point {flag(setting)} at the "
                    ".tar files")
  other = source_of(path)
  if other != source:
    hint = (f"set --config.data.source={other!r} for such files" if other else
            f"set {flag(setting)} to the {EXTENSIONS[source][0]} files only")
    raise UserError(f"{setting} names {path}, which is not a {' or '.join(EXTENSIONS[source])} "
                    f"shard of data.source={source!r}; {hint}")


def keys_of(spec: str | None) -> tuple[str, ...]:
  """'jpg;png;webp' -> ('jpg', 'png', 'webp'): the alternatives a data.*_key names, in order."""
  return () if spec is None else tuple(k.strip() for k in str(spec).split(";") if k.strip())


def as_tuple(spec) -> str | tuple | None:
  """A data.files value as a hashable one (a list becomes a tuple)."""
  return spec if spec is None or isinstance(spec, str) else tuple(spec)
