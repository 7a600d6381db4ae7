"""The member index of a webdataset tar shard: built in one pass, cached beside the shard.

A webdataset shard is a plain tar whose members `[DIR/]KEY.EXT` are grouped
into examples by KEY, the member's path up to the first dot of its base name,
as webdataset splits it; EXT (lower-cased: 'jpg', 'txt', 'json', 'seg.png')
names the field. Base names starting with '.' or '__' are not examples'
members. The index holds, per member, its example, its extension and where
its bytes lie in the tar (offset, size, and whether the file holds all of
them), so any example is read with one seek per field; and the integer and
bool fields of each example's JSON member (labels), so they need no read.

The index is written beside the shard as `.NAME.jaxmm-index` (hidden, so a
glob like `*.tar` does not match it), or under INDEX_CACHE_DIR when the
shard's folder cannot be written (read-only, or a bucket). It records the
shard's size and modification time and is rebuilt when either changes.

Arrays of an index (n examples, m members, k label fields):
  keys str [n]; member_example int64 [m]; member_ext str [m];
  member_offset, member_size int64 [m]; member_complete bool [m];
  label_names str [k]; label_is_bool bool [k]; label_values int64 [k, n];
  label_present bool [k, n]; error str [] ('' or where tarfile stopped
  reading a damaged tar: the members after it are lost).
"""
import hashlib
import io
import json
import os
import tarfile
import threading

import numpy as np

from jaxmm.errors import UserError
from jaxmm import storage

INDEX_CACHE_DIR = os.path.join("~", ".cache", "jaxmm", "shard_index")
_VERSION = 1


def split_name(name: str) -> tuple[str, str] | None:
  """'dir/KEY.seg.PNG' -> ('dir/KEY', 'seg.png'); None for a name that is no example's member."""
  folder, _, base = name.rpartition("/")
  stem, dot, ext = base.partition(".")
  if not stem or not dot or not ext or base.startswith("__"):
    return None
  return (f"{folder}/{stem}" if folder else stem), ext.lower()


def load(path: str) -> dict[str, np.ndarray]:
  """The index of the tar at `path`, from its cache when that matches the shard, else built and
  cached. Raises UserError when `path` is not a tar file."""
  stat = storage.stat(path)
  places = _places(path)
  for place in places:
    index = _read(place, (_VERSION, stat.length, stat.mtime))
    if index is not None:
      return index
  index = build(path, stat.length)
  index.update(version=np.int64(_VERSION), size=np.int64(stat.length), mtime=np.int64(stat.mtime))
  _write(index, places)
  return index


def build(path: str, size: int) -> dict[str, np.ndarray]:
  """Reads the member headers of the tar at `path` (`size` bytes) and its JSON members."""
  keys, members, error = {}, [], ""
  with storage.open_binary(path) as f:
    try:
      tar = tarfile.open(fileobj=f, mode="r:")  # pylint: disable=consider-using-with
    except tarfile.TarError as e:
      raise UserError(f"{path} is not a tar file ({e}); a webdataset shard is a plain tar: "
                      "leave this file out of the shards")
    try:
      while (info := tar.next()) is not None:
        parts = split_name(info.name) if info.isfile() else None
        if parts is not None:
          example = keys.setdefault(parts[0], len(keys))
          members.append((example, parts[1], info.offset_data, info.size))
      # tarfile takes a header it cannot parse for the end of the archive: data after it is lost.
      if _has_data(f, tar.offset):
        error = f"unreadable member header at byte {tar.offset}"
    except tarfile.TarError as e:
      error = f"{e} after byte {tar.offset}"
    index = {
        "keys": np.array(list(keys), dtype=str),
        "member_example": np.array([m[0] for m in members], np.int64),
        "member_ext": np.array([m[1] for m in members], dtype=str),
        "member_offset": np.array([m[2] for m in members], np.int64),
        "member_size": np.array([m[3] for m in members], np.int64),
        "error": np.array(error),
    }
    index["member_complete"] = index["member_offset"] + index["member_size"] <= size
    index.update(_labels(f, index, len(keys)))
  return index


def _has_data(f, offset: int) -> bool:
  """Whether anything but zeros (a tar's end blocks and padding) follows `offset` in file `f`."""
  f.seek(offset)
  while chunk := f.read(1 << 16):
    if chunk.count(0) != len(chunk):
      return True
  return False


def _labels(f, index, num_examples) -> dict[str, np.ndarray]:
  """The integer and bool fields of the examples' complete JSON members, as label arrays."""
  values = {}  # name -> {example: int or bool}
  chosen = (index["member_ext"] == "json") & index["member_complete"]
  for example, offset, size in zip(index["member_example"][chosen],
                                   index["member_offset"][chosen], index["member_size"][chosen]):
    f.seek(offset)
    try:
      fields = json.loads(f.read(size))
    except ValueError:
      continue  # an example whose labels are unreadable lacks them
    for name, value in fields.items() if isinstance(fields, dict) else ():
      if isinstance(value, bool) or isinstance(value, int) and -2**63 <= value < 2**63:
        values.setdefault(name, {})[int(example)] = value
  names = sorted(values)
  label_values = np.zeros((len(names), num_examples), np.int64)
  present = np.zeros((len(names), num_examples), bool)
  is_bool = np.zeros(len(names), bool)
  for k, name in enumerate(names):
    rows = np.fromiter(values[name], np.int64, len(values[name]))
    label_values[k, rows] = [int(v) for v in values[name].values()]
    present[k, rows] = True
    is_bool[k] = all(isinstance(v, bool) for v in values[name].values())
  return {"label_names": np.array(names, dtype=str), "label_is_bool": is_bool,
          "label_values": label_values, "label_present": present}


def _places(path: str) -> list[str]:
  """Where the index of `path` may be cached, the preferred first."""
  name = f".{os.path.basename(path)}.jaxmm-index"
  digest = hashlib.sha256(path.encode()).hexdigest()[:16]
  cached = os.path.join(os.path.expanduser(INDEX_CACHE_DIR), f"{digest}-{name[1:]}")
  return [os.path.join(os.path.dirname(path), name), cached] if storage.is_local(path) else [cached]


def _read(place: str, expected: tuple[int, int, int]) -> dict[str, np.ndarray] | None:
  """The index cached at `place` if its (version, shard size, shard mtime) are `expected`."""
  try:
    with open(place, "rb") as f:
      with np.load(f, allow_pickle=False) as stored:
        index = {name: stored[name] for name in stored.files}
    found = tuple(int(index[name]) for name in ("version", "size", "mtime"))
  except (OSError, ValueError, KeyError):
    return None  # absent or unreadable: rebuilt
  return index if found == expected else None


def _write(index: dict[str, np.ndarray], places: list[str]) -> None:
  """Writes `index` to the first of `places` that can be written; none: it is rebuilt next time.

  Through a temporary file and a rename, so a process that reads it while
  another writes it sees the whole file or none.
  """
  buffer = io.BytesIO()
  np.savez(buffer, **index)
  for place in places:
    temporary = f"{place}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
      os.makedirs(os.path.dirname(place), exist_ok=True)
      with open(temporary, "wb") as f:
        f.write(buffer.getvalue())
      os.replace(temporary, place)
      return
    except OSError:
      if os.path.exists(temporary):
        os.remove(temporary)
