"""Per-example host work (decoding, cropping, views) spread over threads of this process.

Each example's result is a function of its own inputs, so the batch that
comes out is the same, bit for bit, whatever the number of threads: only the
time changes. Threads suffice because the work is in C that releases the GIL:
libjpeg-turbo and PIL's decoders and resampling, numpy's einsum and
elementwise kernels.

data.host_threads sets the count (`count`); None takes the cores this process
may run on.
"""
from collections.abc import Callable, Sequence
import concurrent.futures
import functools
import os

import numpy as np

from jaxmm import errors


def count(threads: int | None) -> int:
  """data.host_threads, checked; None -> the cores this process may run on."""
  if threads is None:
    return len(os.sched_getaffinity(0))
  return errors.integer_at_least("data.host_threads", threads, 1)


@functools.lru_cache(maxsize=4)
def _pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
  # One pool per count for the life of the process: starting threads for every batch would cost
  # more than a small batch's decoding.
  return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="jaxmm-host")


def map_examples(fn: Callable, items: Sequence, threads: int) -> list:
  """[fn(item) for item in items], computed on `threads` threads."""
  if threads == 1 or len(items) < 2:
    return [fn(item) for item in items]
  return list(_pool(threads).map(fn, items))


def map_chunks(fn: Callable[..., np.ndarray], arrays: Sequence[np.ndarray],
               threads: int) -> np.ndarray:
  """fn(*arrays) for a fn that treats the rows of its arrays [N, ...] independently, computed
  on `threads` contiguous chunks of rows at once and concatenated."""
  rows = len(arrays[0])
  chunks = min(threads, rows)
  if chunks <= 1:
    return fn(*arrays)
  bounds = np.linspace(0, rows, chunks + 1).astype(int)
  parts = _pool(threads).map(lambda lo, hi: fn(*(a[lo:hi] for a in arrays)), bounds[:-1],
                             bounds[1:])
  return np.concatenate(list(parts))
