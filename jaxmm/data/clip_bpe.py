"""CLIP's byte-pair-encoding tokenizer (Radford et al. 2021), giving the ids open_clip gives.

A text is cleaned (ftfy's `fix_text`, HTML entities unescaped twice, runs of
whitespace made one space, lower case) and split into words by CLIP's
pattern; each word's UTF-8 bytes, written as printable characters, are then
merged pair by pair, lowest merge rank first (Sennrich et al. 2016). A text's
ids are [<start_of_text>, words..., <end_of_text>], cut to max_len with the
last id kept <end_of_text>, then padded with id 0 (which is also '!').

The vocabulary file holds the merges in rank order. Ids: the 256 byte
characters, the same 256 ending a word ('</w>'), one per merge (48,894), then
<start_of_text> and <end_of_text>: 49,408 in all, the end-of-text id the
largest, which is how CLIP's text tower finds it (`jaxmm.models.text`,
pool 'eot'). Words are split with the `regex` module's Unicode classes, as
open_clip splits them, so both need the `open_clip` extra of jaxmm.
"""
import gzip
import html
import os

import numpy as np

from jaxmm.errors import UserError

# CLIP's vocabulary (MIT licence, OpenAI; see the .LICENSE file beside it).
BUNDLED_VOCAB = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "bpe_simple_vocab_16e6.txt.gz")
NUM_MERGES = 49152 - 256 - 2  # open_clip reads this many merges, after the header line
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
# Special tokens, English contractions, letter runs, single digits, runs of anything else.
_WORD_PATTERN = "|".join(SPECIAL_TOKENS) + (r"|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
                                            r"|[^\s\p{L}\p{N}]+")


def _byte_characters() -> tuple[list[int], list[str]]:
  """(bytes, characters): each of the 256 bytes and the printable character that stands for it.

  Printable Latin-1 bytes stand for themselves; the others (controls, the
  space, ...) take the characters from U+0100 on, in byte order. The order of
  the two lists is the vocabulary's: the printable bytes first.
  """
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  others = [b for b in range(256) if b not in printable]
  characters = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
  return printable + others, characters


def _text_modules(spec: str):
  """(ftfy, regex), or a `UserError` saying how to install them."""
  try:
    import ftfy  # pylint: disable=import-outside-toplevel
    import regex  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise UserError(f"data.tokenizer={spec!r} needs the `ftfy` and `regex` packages, which clean "
                    "and split text as open_clip does: pip install 'jaxmm[open_clip]'") from e
  return ftfy, regex


def _read_merges(path: str, spec: str) -> list[tuple[str, str]]:
  """The NUM_MERGES merges of the gzipped vocabulary at `path`, in rank order."""
  if not os.path.isfile(path):
    raise UserError(f"data.tokenizer={spec!r}: the vocabulary {path} is not a file; set "
                    "--config.data.tokenizer to the path of CLIP's bpe_simple_vocab_16e6.txt.gz "
                    "(open_clip's package holds one), or to 'clip_bpe' for jaxmm's copy")
  try:
    with gzip.open(path, "rt", encoding="utf-8") as f:
      lines = f.read().split("\n")
  except (OSError, EOFError, UnicodeDecodeError) as e:
    raise UserError(f"data.tokenizer={spec!r}: {path} is not a gzipped BPE vocabulary ({e}); "
                    "set --config.data.tokenizer to CLIP's bpe_simple_vocab_16e6.txt.gz") from e
  merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
  if len(merges) != NUM_MERGES or any(len(merge) != 2 for merge in merges):
    raise UserError(f"data.tokenizer={spec!r}: {path} does not hold CLIP's {NUM_MERGES} merges "
                    "(one pair per line after a header line); set --config.data.tokenizer to "
                    "CLIP's bpe_simple_vocab_16e6.txt.gz")
  return merges


class ClipBpeTokenizer:
  """CLIP's BPE with the vocabulary at `vocab_path` (module docstring); `spec` is
  data.tokenizer, named in errors. Pads with id 0, as open_clip does."""

  pad_id = 0

  def __init__(self, vocab_path: str, spec: str):
    self._ftfy, regex = _text_modules(spec)
    merges = _read_merges(vocab_path, spec)
    byte_order, characters = _byte_characters()
    self._byte_character = dict(zip(byte_order, characters))
    self._character_byte = dict(zip(characters, byte_order))
    tokens = characters + [c + "</w>" for c in characters] + ["".join(m) for m in merges]
    tokens += SPECIAL_TOKENS
    self._token_ids = {token: i for i, token in enumerate(tokens)}
    self._tokens = tokens
    self._word_cache = {}  # word -> its ids: captions repeat their words
    self._ranks = {merge: rank for rank, merge in enumerate(merges)}
    self._pattern = regex.compile(_WORD_PATTERN, regex.IGNORECASE)
    self.vocab_size = len(tokens)
    self.sot_id, self.eot_id = (self._token_ids[t] for t in SPECIAL_TOKENS)

  def _clean(self, text) -> str:
    text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    text = html.unescape(html.unescape(self._ftfy.fix_text(text)))
    return " ".join(text.split()).lower()

  def _word_ids(self, word: str) -> list[int]:
    """The ids of one word (its characters stand for its UTF-8 bytes)."""
    if word not in self._word_cache:
      self._word_cache[word] = self._merge(word)
    return self._word_cache[word]

  def _merge(self, word: str) -> list[int]:
    if word in SPECIAL_TOKENS:
      return [self._token_ids[word]]
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    while len(symbols) > 1:
      pair = min(zip(symbols, symbols[1:]), key=lambda p: self._ranks.get(p, NUM_MERGES))
      if pair not in self._ranks:
        break
      merged, i = [], 0
      while i < len(symbols):  # every occurrence of the pair, left to right
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
          merged.append(symbols[i] + symbols[i + 1])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    return [self._token_ids[s] for s in symbols]

  def _text_ids(self, text) -> list[int]:
    """The ids of a text's words, without <start_of_text> and <end_of_text>."""
    ids = []
    for word in self._pattern.findall(self._clean(text)):
      ids.extend(self._word_ids("".join(self._byte_character[b] for b in word.encode("utf-8"))))
    return ids

  def encode(self, text, max_len: int) -> np.ndarray:
    """int32 [max_len]: [<start_of_text>, ..., <end_of_text>, 0, ...]."""
    ids = [self.sot_id] + self._text_ids(text) + [self.eot_id]
    if len(ids) > max_len:
      ids = ids[:max_len - 1] + [self.eot_id]
    out = np.full([max_len], self.pad_id, np.int32)
    out[:len(ids)] = ids
    return out

  def encode_batch(self, texts, max_len: int) -> np.ndarray:
    """int32 [N, max_len]."""
    return np.stack([self.encode(t, max_len) for t in texts]).reshape(-1, max_len)

  def token_count(self, text) -> int:
    """The number of ids `text` encodes to before truncation, the two special ones included."""
    return len(self._text_ids(text)) + 2

  def decode(self, ids) -> str:
    """The text of the ids between <start_of_text> and the first <end_of_text>."""
    ids = [int(i) for i in np.asarray(ids)]
    if self.eot_id in ids:
      ids = ids[:ids.index(self.eot_id)]
    text = bytearray()
    for i in ids:
      if i != self.sot_id:
        token = self._tokens[i]
        text += bytes(self._character_byte[c] for c in token.removesuffix("</w>"))
        text += b" " if token.endswith("</w>") else b""
    return text.decode("utf-8", "replace").strip()
