"""Run files on a local disk or in a bucket (`gs://`, `s3://`), read and written through etils.epath.

A workdir, a sweep folder or a `--out` file may be either. Buckets differ from a
disk in three ways that matter to a run's small files, and these helpers hide them:

- An object cannot be appended to: `append_text` rewrites it whole. The files
  appended to (metrics.jsonl) grow by one line per logged step, so the rewrite stays small.
- An object appears whole when the writer closes it, so a reader never sees half a
  file; on a disk `write_text` writes a temporary file and renames it for the same effect.
- There are no locks (`is_local` tells the workdir lock to stand aside).

Only what jaxmm writes itself goes through here; orbax, TensorFlow Datasets and
tensorboardX open bucket paths on their own. (`os.path.join` and `os.path.dirname`
are right for bucket paths too; `os.path.abspath` and `open` are not.)
"""
import os

from etils import epath


def is_local(path: epath.PathLike) -> bool:
  """Whether `path` is on a local filesystem (no `scheme://` prefix)."""
  return "://" not in os.fspath(path)


def absolute(path: epath.PathLike) -> str:
  """A local path made absolute (and `~` expanded); a bucket path unchanged."""
  path = os.fspath(path)
  return os.path.abspath(os.path.expanduser(path)) if is_local(path) else path


def exists(path: epath.PathLike) -> bool:
  return epath.Path(path).exists()


def is_dir(path: epath.PathLike) -> bool:
  return epath.Path(path).is_dir()


def is_file(path: epath.PathLike) -> bool:
  path = epath.Path(path)
  return path.exists() and not path.is_dir()


def make_dirs(path: epath.PathLike) -> None:
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def list_dir(path: epath.PathLike) -> list[str]:
  """The names in folder `path`, sorted; none when it does not exist."""
  path = epath.Path(path)
  return sorted(child.name for child in path.iterdir()) if path.is_dir() else []


def files_under(path: epath.PathLike) -> list[str]:
  """Every file below folder `path`, at any depth, sorted."""
  found = []
  for child in epath.Path(path).iterdir():
    found.extend(files_under(child) if child.is_dir() else [os.fspath(child)])
  return sorted(found)


def read_text(path: epath.PathLike) -> str:
  return epath.Path(path).read_text(encoding="utf-8")


def write_text(path: epath.PathLike, text: str) -> None:
  """Replaces the file at `path` with `text`, so that readers see the old or the new file whole."""
  path = os.fspath(path)
  make_dirs(os.path.dirname(path))
  if not is_local(path):
    epath.Path(path).write_text(text, encoding="utf-8")
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
  epath.Path(path).write_bytes(data)


def move(source: epath.PathLike, target: epath.PathLike) -> None:
  """Moves a file or folder; in a bucket, a copy of every object and a delete."""
  epath.Path(source).rename(target)
