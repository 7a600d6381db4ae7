"""One example as a shard stores it, before decoding; a shard's bytes, as its readers open them."""
import io
import threading
from typing import NamedTuple

from jaxmm import storage


class StoredExample(NamedTuple):
  """One example as a shard stores it.

  image: its encoded image (None when damaged); text: its caption, bytes or str
  (None when damaged or not read); labels: label name -> int or bool;
  problem: why the example cannot be used, or None.
  """
  image: bytes | None
  text: bytes | str | None
  labels: dict
  problem: str | None


def damaged(problem: str) -> StoredExample:
  return StoredExample(None, None, {}, problem)


class ShardFile:
  """A shard's file, opened for every read; with `cache`, read whole into memory at first use."""

  def __init__(self, path: str, cache: bool):
    self.path = path
    self._cache = cache
    self._bytes = None
    self._lock = threading.Lock()

  def open(self):
    """A seekable binary file object of the shard; the caller closes it."""
    if not self._cache:
      return storage.open_binary(self.path)
    with self._lock:
      if self._bytes is None:
        with storage.open_binary(self.path) as f:
          self._bytes = f.read()
    return io.BytesIO(self._bytes)
