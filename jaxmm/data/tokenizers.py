"""Text tokenizers: byte-level (no vocabulary file), SentencePiece, big_vision's SigLIP
SentencePiece (sticky end-of-text), CLIP's BPE, and padding only (no vocabulary file).

All map texts to fixed-length int32 ids, truncated or right-padded with the
pad id to `max_len`, so text batches have static shapes under jit;
`token_count(text)` is the length before truncation.
"""
import os

import numpy as np

from jaxmm.data import clip_bpe
from jaxmm.errors import UserError

# data.tokenizer='big_vision:PATH.model' tokenizes as big_vision's SigLIP (StickyEosTokenizer).
BIG_VISION_PREFIX = "big_vision:"
# data.tokenizer='padding:ID' makes every text all padding ID (PaddingTokenizer).
PADDING_PREFIX = "padding:"


def _as_bytes(text) -> bytes:
  return text if isinstance(text, bytes) else str(text).encode("utf-8")


def _pad(ids, max_len, pad_id):
  out = np.full([max_len], pad_id, np.int32)
  ids = ids[:max_len]
  out[:len(ids)] = ids
  return out


class BytesTokenizer:
  """UTF-8 bytes as ids; vocab 256, id 0 (the NUL byte) doubles as padding."""

  vocab_size = 256
  pad_id = 0

  def encode(self, text, max_len: int) -> np.ndarray:
    """int32 [max_len]."""
    return _pad(np.frombuffer(_as_bytes(text), np.uint8), max_len, self.pad_id)

  def encode_batch(self, texts, max_len: int) -> np.ndarray:
    """int32 [N, max_len]."""
    out = np.zeros([len(texts), max_len], np.int32)
    for row, text in zip(out, texts):
      ids = np.frombuffer(_as_bytes(text), np.uint8)[:max_len]
      row[:len(ids)] = ids
    return out

  def token_count(self, text) -> int:
    """The number of ids `text` encodes to before truncation: its UTF-8 length."""
    return len(_as_bytes(text))

  def decode(self, ids) -> str:
    ids = np.asarray(ids)
    return bytes(ids[ids != self.pad_id].astype(np.uint8)).decode("utf-8", "ignore")


class PaddingTokenizer:
  """Every text as `max_len` copies of `pad_id`, vocab pad_id + 1: the int32 [max_len] of every
  tokenizer, without its vocabulary. Memory and step time do not depend on which ids a text
  has, so the memory planner tokenizes with this one (`padding:` model.text.pad_id)."""

  def __init__(self, pad_id: int):
    self.pad_id = pad_id
    self.vocab_size = pad_id + 1

  def encode(self, text, max_len: int) -> np.ndarray:
    """int32 [max_len]."""
    return np.full([max_len], self.pad_id, np.int32)

  def encode_batch(self, texts, max_len: int) -> np.ndarray:
    """int32 [N, max_len]."""
    return np.full([len(texts), max_len], self.pad_id, np.int32)

  def token_count(self, text) -> int:
    """0: no text has an id besides padding, so none is cut."""
    return 0

  def decode(self, ids) -> str:
    return ""


def _padding_tokenizer(spec: str) -> PaddingTokenizer:
  pad_id = spec[len(PADDING_PREFIX):]
  if not pad_id.isdigit():
    raise UserError(f"data.tokenizer={spec!r} names no pad id; set --config.data.tokenizer to "
                    "'padding:' and the text tower's model.text.pad_id, e.g. 'padding:0'")
  return PaddingTokenizer(int(pad_id))


class SentencePieceTokenizer:
  """A SentencePiece model file; its pad id if it has one, else 0.

  `model_path` is data.tokenizer: a missing or unreadable file raises UserError.
  """

  def __init__(self, model_path: str):
    try:
      import sentencepiece  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(f"tokenizer {model_path!r} needs the `sentencepiece` package: "
                        "pip install 'jaxmm[sentencepiece]'") from e
    if not os.path.isfile(model_path):
      raise UserError(f"data.tokenizer={model_path!r} is not a file; set --config.data.tokenizer "
                      "to the path of a SentencePiece .model file, or to 'bytes'")
    try:
      self._model = sentencepiece.SentencePieceProcessor(model_file=model_path)
    except RuntimeError as e:
      raise UserError(f"data.tokenizer={model_path!r} is not a SentencePiece model file (it does "
                      "not parse); set --config.data.tokenizer to one, or to 'bytes'") from e
    self.vocab_size = self._model.get_piece_size()
    self.pad_id = max(self._model.pad_id(), 0)

  def _ids(self, text) -> list:
    return self._model.encode(text.decode("utf-8") if isinstance(text, bytes) else text)

  def encode(self, text, max_len: int) -> np.ndarray:
    """int32 [max_len]."""
    return _pad(np.asarray(self._ids(text), np.int32), max_len, self.pad_id)

  def encode_batch(self, texts, max_len: int) -> np.ndarray:
    """int32 [N, max_len]."""
    return np.stack([self.encode(t, max_len) for t in texts]).reshape(-1, max_len)

  def token_count(self, text) -> int:
    """The number of ids `text` encodes to before truncation."""
    return len(self._ids(text))

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids) if i != self.pad_id]
    return self._model.decode(ids)


class StickyEosTokenizer(SentencePieceTokenizer):
  """big_vision's SigLIP text preprocessing: `tokenize(eos='sticky', pad_value=EOS)`.

  A text is lowercased (ASCII letters only, as TensorFlow's `strings.lower`),
  encoded by the SentencePiece model with its end-of-text id appended, cut to
  `max_len` keeping that id last, and padded with it: with max_len 3 and EOS
  1, 'a' -> [a, 1, 1], 'a a a' -> [a, a, 1]. So the last id is always EOS,
  which the text tower's pool='last' reads. `model_path` is the part of
  data.tokenizer after 'big_vision:'; big_vision's English SigLIPs use T5's
  c4_en vocabulary (32,000 ids), the multilingual ones mc4 (250,000).
  """

  def __init__(self, model_path: str, spec: str):
    if not os.path.isfile(model_path):
      what = f"{model_path} is not a file" if model_path else "names no vocabulary"
      raise UserError(f"data.tokenizer={spec!r}: {what}; big_vision's SigLIP models tokenize "
                      "with a SentencePiece model that jaxmm does not ship (T5's c4_en, "
                      "gs://t5-data/vocabs/cc_en.32000/sentencepiece.model, for the English "
                      "ones): set --config.data.tokenizer=big_vision:PATH.model")
    super().__init__(model_path)
    self.pad_id = self._model.eos_id()
    if self.pad_id < 0:
      raise UserError(f"data.tokenizer={spec!r}: {model_path} has no end-of-text piece, which "
                      "big_vision's SigLIP tokenization ends and pads every text with")

  def _ids(self, text) -> list:
    return super()._ids(_as_bytes(text).lower()) + [self.pad_id]

  def encode(self, text, max_len: int) -> np.ndarray:
    """int32 [max_len], its last id the end-of-text id."""
    ids = self._ids(text)
    if len(ids) > max_len:
      ids = ids[:max_len - 1] + ids[-1:]
    return _pad(np.asarray(ids, np.int32), max_len, self.pad_id)


def get_tokenizer(spec: str):
  """'bytes' -> BytesTokenizer; a path ending in '.model' -> SentencePiece; 'clip_bpe' -> CLIP's
  BPE with jaxmm's copy of its vocabulary, a path ending in '.txt.gz' -> with that one
  (`clip_bpe`); 'big_vision:PATH.model' -> `StickyEosTokenizer` with that SentencePiece model;
  'padding:ID' -> `PaddingTokenizer` of pad id ID.

  `spec` is data.tokenizer; anything else raises UserError naming it.
  """
  if spec == "bytes":
    return BytesTokenizer()
  if spec == "clip_bpe":
    return clip_bpe.ClipBpeTokenizer(clip_bpe.BUNDLED_VOCAB, spec)
  if isinstance(spec, str) and spec.startswith(BIG_VISION_PREFIX):
    return StickyEosTokenizer(spec[len(BIG_VISION_PREFIX):], spec)
  if isinstance(spec, str) and spec.startswith(PADDING_PREFIX):
    return _padding_tokenizer(spec)
  if isinstance(spec, str) and spec.endswith(".model"):
    return SentencePieceTokenizer(spec)
  if isinstance(spec, str) and spec.endswith(".txt.gz"):
    return clip_bpe.ClipBpeTokenizer(spec, spec)
  raise UserError(f"data.tokenizer={spec!r} is not a tokenizer; set --config.data.tokenizer to "
                  "'bytes', 'clip_bpe', or the path of a SentencePiece .model file or of a CLIP "
                  "BPE vocabulary .txt.gz, or 'big_vision:' and a SentencePiece model's path, or "
                  "'padding:' and a pad id")
