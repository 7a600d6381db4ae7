"""Run files on a local disk or in a bucket (`gs://`, `s3://`), read and written through etils.epath.

A workdir, a sweep folder or a `--out` file may be either. Buckets differ from a
disk in three ways that matter to a run's small files, and these helpers hide them:

- An object cannot be appended to: `append_text` rewrites it whole. The files
  appended to (metrics.jsonl) grow by one line per logged step, so the rewrite stays small.
- An object appears whole when the writer closes it, so a reader never sees half a
  file; on a disk `write_text` writes a temporary file and renames it for the same effect.
- There are no locks (`is_local` tells the workdir lock to stand aside).

The first time a bucket is touched, one quick read (`check_bucket`) makes sure
it can be used at all, so that a missing `[gcs]` extra, missing credentials or
a missing network end in one line within seconds, not in a minute of retries.

Only what jaxmm writes itself goes through here; orbax, TensorFlow Datasets and
tensorboardX open bucket paths on their own. (`os.path.join` and `os.path.dirname`
are right for bucket paths too; `os.path.abspath` and `open` are not.)
"""
import fnmatch
import glob as glob_lib
import logging
import os
import socket
import threading
import time
import urllib.parse

from etils import epath

from jaxmm import errors

# Seconds that the first read of a bucket may take. Cloud Storage answers in
# well under one; without a network, gcsfs retries for over a minute, so
# whether there is one is checked once the read has taken `_NETWORK_CHECK_S`.
PROBE_TIMEOUT_S = 10
_NETWORK_CHECK_S = 2
# Loggers of the bucket filesystems, silenced while a bucket is probed: each
# of their retries and refusals would print a traceback.
_FILESYSTEM_LOGGERS = ("gcsfs", "s3fs")
_GOOGLE_SCHEMES = ("gs", "gcs")
_usable_buckets = set()  # "gs://NAME" of the buckets that answered in this process


def is_local(path: epath.PathLike) -> bool:
  """Whether `path` is on a local filesystem (no `scheme://` prefix)."""
  return "://" not in os.fspath(path)


def absolute(path: epath.PathLike) -> str:
  """A local path made absolute (and `~` expanded); a bucket path unchanged."""
  path = os.fspath(path)
  return os.path.abspath(os.path.expanduser(path)) if is_local(path) else path


def _path(path: epath.PathLike) -> epath.Path:
  """`path` as an epath.Path, after `check_bucket` when it is in a bucket."""
  if not is_local(path):
    check_bucket(path)
  return epath.Path(path)


def check_bucket(path: epath.PathLike) -> None:
  """Raises a `UserError` within `PROBE_TIMEOUT_S` when the bucket of `path` cannot be read.

  The message says what is missing: the package for the bucket's scheme,
  credentials that the bucket accepts, or the network. One read per bucket
  and process; every helper here calls this first.
  """
  path = os.fspath(path)
  scheme, _, rest = path.partition("://")
  bucket = f"{scheme}://{rest.split('/')[0]}"
  if bucket in _usable_buckets:
    return
  levels = {name: logging.getLogger(name).level for name in _FILESYSTEM_LOGGERS}
  for name in levels:
    logging.getLogger(name).setLevel(logging.CRITICAL + 1)
  outcome = []  # None when the bucket answered, else the exception that reading raised
  # A thread, because a bucket client can retry for minutes and cannot be cancelled.
  probe = threading.Thread(target=_probe, args=(path, outcome), daemon=True)
  deadline = time.monotonic() + PROBE_TIMEOUT_S
  probe.start()
  probe.join(_NETWORK_CHECK_S)
  if not outcome:  # from here on the probe may go on retrying, so its loggers stay silent
    no_network = _no_network(scheme)
    if no_network:
      raise errors.UserError(f"{bucket}: {no_network}")
    probe.join(deadline - time.monotonic())
  if not outcome:
    raise errors.UserError(f"{bucket} gave no answer within {PROBE_TIMEOUT_S} s; check "
                           f"{_credentials_hint(scheme)} and any proxy settings")
  for name, level in levels.items():
    logging.getLogger(name).setLevel(level)
  if outcome[0] is not None:
    raise _bucket_error(bucket, path, outcome[0])
  _usable_buckets.add(bucket)


def _probe(path: str, outcome: list) -> None:
  """Reads the metadata of `path`; appends None, or the exception that reading raised."""
  try:
    epath.Path(path).stat()
  except FileNotFoundError:
    pass  # the bucket answered
  except Exception as e:  # pylint: disable=broad-except
    outcome.append(e)
    return
  outcome.append(None)


def _no_network(scheme: str) -> str | None:
  """Why this machine cannot reach Cloud Storage for a `gs://` bucket (its name does not
  resolve), or None."""
  if scheme not in _GOOGLE_SCHEMES:
    return None
  # gcsfs and Google's clients read the same variable for an emulator's address.
  emulator = os.environ.get("STORAGE_EMULATOR_HOST", "storage.googleapis.com")
  host = urllib.parse.urlsplit(emulator if "://" in emulator else f"//{emulator}").hostname
  try:
    socket.getaddrinfo(host, 443)
  except OSError as e:
    return f"this machine has no network connection to Cloud Storage ({host}: {e.strerror})"
  return None


def _credentials_hint(scheme: str) -> str:
  """Where the credentials for a bucket of `scheme` come from."""
  if scheme in _GOOGLE_SCHEMES:
    return ("the credentials (run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key)")
  return "the credentials for the bucket"


def _bucket_error(bucket: str, path: str, error: Exception) -> errors.UserError:
  """The `UserError` for the exception that the first read of `path` in `bucket` raised."""
  scheme = bucket.partition("://")[0]
  lines = str(error).strip().splitlines()
  cause = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
  if isinstance(error, ImportError):
    install = ("install jaxmm's [gcs] extra: pip install 'jaxmm[gcs]'"
               if scheme in _GOOGLE_SCHEMES else "install the package it names")
    return errors.UserError(f"{bucket}: reading a bucket needs a package that is missing "
                            f"({cause}); {install}")
  if getattr(error, "code", None) in (401, 403) or "Forbidden" in cause:
    return errors.UserError(f"{bucket} refused access ({cause}); check "
                            f"{_credentials_hint(scheme)}, for an account that may use the "
                            "bucket")
  network = "; check this machine's network connection" if isinstance(error, OSError) else ""
  return errors.UserError(f"{bucket}: reading {path} failed ({cause}){network}")


def exists(path: epath.PathLike) -> bool:
  return _path(path).exists()


def is_dir(path: epath.PathLike) -> bool:
  return _path(path).is_dir()


def is_file(path: epath.PathLike) -> bool:
  path = _path(path)
  return path.exists() and not path.is_dir()


def make_dirs(path: epath.PathLike) -> None:
  _path(path).mkdir(parents=True, exist_ok=True)


def list_dir(path: epath.PathLike) -> list[str]:
  """The names in folder `path`, sorted; none when it does not exist."""
  path = _path(path)
  return sorted(child.name for child in path.iterdir()) if path.is_dir() else []


def files_under(path: epath.PathLike) -> list[str]:
  """Every file below folder `path`, at any depth, sorted."""
  found = []
  for child in _path(path).iterdir():
    found.extend(files_under(child) if child.is_dir() else [os.fspath(child)])
  return sorted(found)


def glob(pattern: str) -> list[str]:
  """The files matching `pattern` (`*`, `?` and `[...]` in any part of the path but the bucket's
  name; as in a shell, they match no name starting with '.'), sorted."""
  if is_local(pattern):
    return sorted(glob_lib.glob(os.path.expanduser(pattern)))
  scheme, _, rest = pattern.partition("://")
  bucket, *parts = rest.split("/")
  found, listed = [f"{scheme}://{bucket}"], True
  for part in parts:
    if glob_lib.has_magic(part):
      found = [f"{folder}/{name}" for folder in found for name in list_dir(folder)
               if fnmatch.fnmatchcase(name, part) and not name.startswith(".")]
    else:
      found = [f"{folder}/{part}" for folder in found]
    listed = glob_lib.has_magic(part)
  # A name that a listing returned exists; one joined on after it may not.
  return sorted(found if listed else [path for path in found if is_file(path)])


def stat(path: epath.PathLike):
  """`path`'s size in bytes (`.length`) and modification time in seconds (`.mtime`)."""
  return _path(path).stat()


def open_binary(path: epath.PathLike):
  """`path` opened for reading bytes, seekable (a bucket object reads the ranges asked for)."""
  return _path(path).open("rb")


def read_text(path: epath.PathLike) -> str:
  return _path(path).read_text(encoding="utf-8")


def write_text(path: epath.PathLike, text: str) -> None:
  """Replaces the file at `path` with `text`, so that readers see the old or the new file whole."""
  path = os.fspath(path)
  make_dirs(os.path.dirname(path))
  if not is_local(path):
    _path(path).write_text(text, encoding="utf-8")
    return
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def append_text(path: epath.PathLike, text: str) -> None:
  """Adds `text` at the end of the file at `path` (created if missing)."""
  path = os.fspath(path)
  if is_local(path):
    with open(path, "a", encoding="utf-8") as f:
      f.write(text)
  else:
    write_text(path, (read_text(path) if exists(path) else "") + text)


def write_bytes(path: epath.PathLike, data: bytes) -> None:
  path = os.fspath(path)
  make_dirs(os.path.dirname(path))
  _path(path).write_bytes(data)


def move(source: epath.PathLike, target: epath.PathLike) -> None:
  """Moves a file or folder; in a bucket, a copy of every object and a delete."""
  _path(source).rename(target)
