"""Captions as multi-label targets: CatLIP's label vocabulary and multi-hot vectors.

CatLIP (Mehta et al. 2024, Sec. 3) maps each caption's nouns to WordNet
synsets and keeps the synsets that occur at least a minimum number of times
in the training captions as its labels. WordNet is not available offline,
so here a label is a caption word itself: the captions are lower-cased and
split into runs of letters (digits and punctuation separate words), common
English function words (`STOP_WORDS`) are dropped, and the words that occur
at least `min_count` times in the training split's captions form the
vocabulary, ordered by falling count, then alphabetically. A caption's
target is the multi-hot vector of the vocabulary words it contains.
"""
import collections
from collections.abc import Iterable, Sequence
import re

import numpy as np

# Function words that name nothing in an image.
STOP_WORDS = frozenset(
    "a an the and or but of in on at to from by with without for as is are was were be been "
    "being it its this that these those there here some any each every no not very than then "
    "into onto over under up down out off above below near next".split())

_WORD = re.compile(r"[^\W\d_]+")


def caption_words(caption: str | bytes) -> list[str]:
  """The lower-cased words of a caption that are not stop words, in order, with repeats."""
  caption = caption.decode("utf-8", "ignore") if isinstance(caption, bytes) else str(caption)
  return [w for w in _WORD.findall(caption.lower()) if w not in STOP_WORDS]


def word_counts(captions: Iterable[str | bytes]) -> collections.Counter:
  """How often each word (`caption_words`) occurs in `captions`, every occurrence counted."""
  counts = collections.Counter()
  for caption in captions:
    counts.update(caption_words(caption))
  return counts


def vocabulary(counts: collections.Counter, min_count: int) -> tuple[str, ...]:
  """The words of `counts` with at least `min_count` occurrences, most frequent first (ties in
  alphabetical order), so the same captions always give the same label indices."""
  kept = [(-n, word) for word, n in counts.items() if n >= min_count]
  return tuple(word for _, word in sorted(kept))


def multi_hot(captions: Sequence[str | bytes], words: Sequence[str]) -> np.ndarray:
  """float32 [N, V]: row i is 1 at the index of each vocabulary word caption i contains."""
  index = {word: k for k, word in enumerate(words)}
  targets = np.zeros((len(captions), len(words)), np.float32)
  for row, caption in zip(targets, captions):
    row[[index[w] for w in caption_words(caption) if w in index]] = 1
  return targets


class CaptionLabelBatches:
  """A training iterator whose batches carry 'caption_labels' float32 [b, V] in place of
  'tokens': the multi-hot targets of the captions the tokens spell (`tokenizer.decode`).

  A caption that data.max_len cut loses the words past the cut. Everything
  else (`get_state`, `set_state`, `metrics`) is the wrapped iterator's.
  """

  def __init__(self, iterator, tokenizer, words: Sequence[str]):
    self._iterator, self._tokenizer, self._words = iterator, tokenizer, tuple(words)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = dict(next(self._iterator))
    captions = [self._tokenizer.decode(row) for row in batch.pop("tokens")]
    batch["caption_labels"] = multi_hot(captions, self._words)
    return batch

  def __getattr__(self, name):
    return getattr(self._iterator, name)
