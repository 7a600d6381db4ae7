"""Text tokenizers: byte-level (no vocabulary file) and SentencePiece.

Both map texts to fixed-length int32 ids, truncated or right-padded with the
pad id to `max_len`, so text batches have static shapes under jit.
"""
import numpy as np


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

  def decode(self, ids) -> str:
    ids = np.asarray(ids)
    return bytes(ids[ids != self.pad_id].astype(np.uint8)).decode("utf-8", "ignore")


class SentencePieceTokenizer:
  """A SentencePiece model file; its pad id if it has one, else 0."""

  def __init__(self, model_path: str):
    try:
      import sentencepiece  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(f"tokenizer {model_path!r} needs the `sentencepiece` package: "
                        "pip install 'jaxmm[sentencepiece]'") from e
    self._model = sentencepiece.SentencePieceProcessor(model_file=model_path)
    self.vocab_size = self._model.get_piece_size()
    self.pad_id = max(self._model.pad_id(), 0)

  def encode(self, text, max_len: int) -> np.ndarray:
    """int32 [max_len]."""
    text = text.decode("utf-8") if isinstance(text, bytes) else text
    return _pad(np.asarray(self._model.encode(text), np.int32), max_len, self.pad_id)

  def encode_batch(self, texts, max_len: int) -> np.ndarray:
    """int32 [N, max_len]."""
    return np.stack([self.encode(t, max_len) for t in texts]).reshape(-1, max_len)

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids) if i != self.pad_id]
    return self._model.decode(ids)


def get_tokenizer(spec: str):
  """'bytes' -> BytesTokenizer; a path ending in '.model' -> SentencePiece."""
  if spec == "bytes":
    return BytesTokenizer()
  if spec.endswith(".model"):
    return SentencePieceTokenizer(spec)
  raise ValueError(f"unknown tokenizer {spec!r}: use 'bytes' or a SentencePiece .model path")
