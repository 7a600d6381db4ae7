"""Damaged examples of a shard source: replaced in training, left out of evaluation, counted.

A shard may hold examples that cannot be used: a tar member cut short, an
image that does not decode, an example without its caption or one of its
labels. Neither pipeline stops for one:

- a training batch takes, in its place, the example at
  `replacement(seed, index, epoch, attempt)`, a hash of the damaged one and
  the attempt, so each batch stays a function of (seed, step) alone, the same
  on any number of processes, and a resume reads exactly the same batches;
- an evaluation pass leaves it out (its row's mask is False).

Each one read is counted (the train loop logs the count of its batches as
`data/skipped`) and the first few are named in the log. A process stops the
run with a UserError naming the shard once the damaged examples it has read
from one shard exceed data.max_skipped_fraction of the larger of that shard's
size and the examples it has read from it. With one process that happens
within the first epoch when more than that fraction of the shard is damaged
(0: at the first damaged example); with several, each of which reads a share
of every shard, when its reads have shown as much; and in the long run it
compares the fraction read damaged, which no number of epochs inflates.
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
  """Counts the damaged examples that one pipeline of this process reads from `reader`."""

  def __init__(self, reader, max_fraction: float):
    self._reader = reader
    self._max_fraction = max_fraction
    self._read = np.zeros(len(reader.shards), np.int64)  # examples read, per shard
    self._damaged = np.zeros(len(reader.shards), np.int64)  # of them damaged
    self._named = 0
    self._lock = threading.Lock()  # grain reads batches on several threads

  def note(self, indices, problems) -> int:
    """Records the examples `indices` [b] read, damaged where `problems` [b] says why (else
    None); returns how many are. Raises UserError when a shard passes the limit."""
    indices = np.asarray(indices, np.int64)
    damaged = np.array([p is not None for p in problems], bool)
    shards = self._reader.shard_numbers(indices)
    with self._lock:
      np.add.at(self._read, shards, 1)
      np.add.at(self._damaged, shards[damaged], 1)
      for row in np.flatnonzero(damaged):
        name = self._reader.name(indices[row])
        if self._named < NAMED_IN_LOG:
          self._named += 1
          more = ("; further ones are counted in data/skipped without a name"
                  if self._named == NAMED_IN_LOG else "")
          log.warning("skipped %s: %s%s", name, problems[row], more)
        self._check(int(shards[row]), name, problems[row])
    return int(damaged.sum())

  def _check(self, shard: int, name: str, problem: str) -> None:
    """UserError naming shard number `shard` if it passes the limit (`name`: an example of its
    damaged ones, `problem`: what is wrong with it)."""
    data = self._reader.shards[shard]
    read, damaged = int(self._read[shard]), int(self._damaged[shard])
    if damaged > self._max_fraction * max(read, data.num_examples):
      tar = f"; the tar: {data.error}" if data.error else ""
      raise UserError(
          f"{data.path} is damaged beyond data.max_skipped_fraction={self._max_fraction}: "
          f"{damaged} damaged examples among {read} read from its {data.num_examples} (e.g. "
          f"{name}: {problem}{tar}); repair the shard or leave it out of data.files, or raise "
          "--config.data.max_skipped_fraction")


def read_replacing(reader, skips: Skips, index, epoch, seed: int, *, crop=None, threads: int = 1):
  """(examples, the indices read [b], damaged examples met) for training examples `index` [b] of
  `epoch` [b]: each damaged one replaced as the module docstring says. With `crop` (a
  `crop.RandomResizedCrop`), each image is the crop of the key of the example read in its place
  (`preprocess.example_keys(seed, read, epoch)`); images decode on `threads` threads."""

  def read_checked(rows, epochs):
    keys = None if crop is None else preprocess.example_keys(seed, rows, epochs)
    return reader.read_checked(rows, crop=crop, keys=keys, threads=threads)

  examples, problems = read_checked(index, epoch)
  skipped = skips.note(index, problems)
  damaged = np.array([p is not None for p in problems], bool)
  read = np.array(index, np.int64)
  for attempt in range(1, _MAX_ATTEMPTS + 1):
    if not damaged.any():
      return examples, read, skipped
    rows = np.flatnonzero(damaged)
    read[rows] = replacement(seed, np.asarray(index)[rows], np.asarray(epoch)[rows], attempt,
                             reader.num_examples)
    again, problems = read_checked(read[rows], np.asarray(epoch)[rows])
    for key, column in again.items():
      examples[key][rows] = column
    skipped += skips.note(read[rows], problems)
    damaged[rows] = [p is not None for p in problems]
  raise UserError(f"{_MAX_ATTEMPTS} examples in a row were damaged; check the shards with "
                  "`jaxmm data stats --files ...`")
