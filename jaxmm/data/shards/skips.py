"""Damaged examples of a shard source: replaced in training, left out of evaluation, counted.

A shard may hold examples that cannot be used: a tar member cut short, an
image that does not decode, an example without its caption or one of its
labels. Neither pipeline stops for one:

- a training batch takes, in its place, the example at
  `replacement(seed, index, epoch, attempt)`, a hash of the damaged one and
  the attempt, so each batch stays a function of (seed, step) alone, the same
  on any number of processes, and a resume reads exactly the same batches;
- an evaluation pass leaves it out (its row's mask is False).

Each one met is counted (the train loop logs the count of its batches as
`data/skipped`) and the first few are named in the log. A process stops the
run with a UserError naming the shard once the distinct damaged examples it
has met in one shard, times the number of processes (each reads its share of
every shard), exceed data.max_skipped_fraction of that shard's examples.
"""
import logging
import threading

import numpy as np

from jaxmm.data import preprocess
from jaxmm.errors import UserError

log = logging.getLogger("jaxmm")

NAMED_IN_LOG = 5
_MAX_ATTEMPTS = 100


def replacement(seed: int, index, epoch, attempt: int, num_examples: int) -> np.ndarray:
  """int64 [b]: the examples that stand in for the damaged examples `index` [b] of `epoch` [b] at
  the `attempt`-th try (1, 2, ...), uniform over the `num_examples`."""
  keys = preprocess.fold_in(preprocess.example_keys(seed, index, epoch), attempt)
  return (keys % np.uint64(num_examples)).astype(np.int64)


class Skips:
  """Counts the damaged examples that one pipeline of this process meets in `reader`."""

  def __init__(self, reader, max_fraction: float, process_count: int = 1):
    self._reader = reader
    self._max_fraction = max_fraction
    self._process_count = process_count
    self._met = {}  # shard number -> its damaged examples met (indices)
    self._named = 0
    self._lock = threading.Lock()  # grain reads batches on several threads

  def note(self, indices, problems) -> int:
    """Records the damaged examples among `indices` [b] (`problems` [b]: None, or why); returns
    how many there are. Raises UserError when a shard passes the limit."""
    damaged = [(int(i), p) for i, p in zip(indices, problems) if p is not None]
    with self._lock:
      for index, problem in damaged:
        shard, name = self._reader.locate(index)
        if self._named < NAMED_IN_LOG:
          self._named += 1
          more = (f"; further ones are counted in data/skipped without a name"
                  if self._named == NAMED_IN_LOG else "")
          log.warning("skipped %s: %s%s", name, problem, more)
        met = self._met.setdefault(shard, set())
        met.add(index)
        self._check(shard, name, problem, len(met))
    return len(damaged)

  def _check(self, shard: int, name: str, problem: str, met: int) -> None:
    size = self._reader.shards[shard].num_examples
    if met * self._process_count > self._max_fraction * size:
      error = self._reader.shards[shard].error
      raise UserError(
          f"{self._reader.shards[shard].path} is damaged beyond data.max_skipped_fraction="
          f"{self._max_fraction}: {met} of its {size} examples skipped"
          f"{'' if self._process_count == 1 else ' by this process'} (the last: {name}: "
          f"{problem}{'; the tar: ' + error if error else ''}); repair the shard or leave it "
          "out of data.files, or raise --config.data.max_skipped_fraction")


def read_replacing(reader, skips: Skips, index, epoch, seed: int):
  """(examples, the indices read [b], damaged examples met) for training examples `index` [b] of
  `epoch` [b]: each damaged one replaced as the module docstring says."""
  examples, problems = reader.read_checked(index)
  skipped = skips.note(index, problems)
  damaged = np.array([p is not None for p in problems], bool)
  read = np.array(index, np.int64)
  for attempt in range(1, _MAX_ATTEMPTS + 1):
    if not damaged.any():
      return examples, read, skipped
    rows = np.flatnonzero(damaged)
    read[rows] = replacement(seed, np.asarray(index)[rows], np.asarray(epoch)[rows], attempt,
                             reader.num_examples)
    again, problems = reader.read_checked(read[rows])
    for key, column in again.items():
      examples[key][rows] = column
    skipped += skips.note(read[rows], problems)
    damaged[rows] = [p is not None for p in problems]
  raise UserError(f"{_MAX_ATTEMPTS} examples in a row were damaged; check the shards with "
                  "`jaxmm data stats --files ...`")
