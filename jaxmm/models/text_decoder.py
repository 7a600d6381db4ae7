"""Text decoder: a causal transformer over caption tokens with cross-attention to image tokens.

The decoder reads its targets shifted right by one, behind a begin-of-text
id (teacher forcing), so position i predicts token i from tokens < i and the
image. Two extra embedding rows beyond the tokenizer's ids hold that
begin-of-text id (`vocab_size`) and the mask id of parallel prediction
(`vocab_size + 1`). The tokenizer's pad id doubles as end of text: the first
pad after a caption is a target like any token, so decoding stops by
predicting it.

CoCa (Yu et al. 2022, Sec. 3.2) splits the text layers in two:
`unimodal_depth` causal blocks without cross-attention, whose output at the
end of the text is the caption's contrastive feature, then `depth` blocks with
cross-attention that predict the tokens. CapPa (Tschannen et al. 2023, Sec. 3)
has no unimodal layers and, for the examples marked `parallel`, replaces
every input by the mask id and the causal mask by a full one, so the decoder
predicts all tokens at once from the image alone.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.models.transformer import (Dense, Encoder, MlpBlock, MultiHeadAttention,
                                      layer_norm, partitioned)

_ACT = ("batch", "length", "act_embed")


def shift_right(tokens: jax.Array, bos_id: int) -> jax.Array:
  """int [B, L] -> [B, L]: bos_id, then tokens[:, :L-1] (the decoder's inputs)."""
  return jnp.pad(tokens, ((0, 0), (1, 0)), constant_values=bos_id)[:, :-1]


def text_end(tokens: jax.Array, pad_id: int) -> jax.Array:
  """int [B]: the index of each row's first pad (its end of text), L − 1 for a full row."""
  is_pad = tokens == pad_id
  return jnp.where(is_pad.any(axis=1), jnp.argmax(is_pad, axis=1), tokens.shape[1] - 1)


class DecoderBlock(nn.Module):
  """x + MHSA(LN(x)), x + CrossAttn(LN(x), image), x + MLP(LN(x)) (Vaswani et al. 2017, Sec. 3.1,
  pre-LN)."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  attention: str = "xla"
  activation_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, image, mask):
    """x [B, L, D], image [B, N, D], mask bool broadcastable to [B, 1, L, L] -> [B, L, D]."""
    attend = dict(dtype=self.dtype, attention=self.attention,
                  activation_dtype=self.activation_dtype)
    y = layer_norm("ln_attn", dtype=self.activation_dtype)(x)
    x = nn.with_logical_constraint(
        x + MultiHeadAttention(self.num_heads, **attend, name="attn")(y, y, mask), _ACT)
    y = layer_norm("ln_cross", dtype=self.activation_dtype)(x)
    x = nn.with_logical_constraint(
        x + MultiHeadAttention(self.num_heads, **attend, name="cross")(y, image), _ACT)
    y = layer_norm("ln_mlp", dtype=self.activation_dtype)(x)
    y = MlpBlock(self.mlp_dim, self.dtype, self.activation_dtype, name="mlp")(y)
    return nn.with_logical_constraint(x + y, _ACT)


class TextDecoder(nn.Module):
  """Token logits of a caption given image tokens (module docstring).

  Attributes:
    vocab_size: the tokenizer's ids V; the embedding has V + 2 rows (begin of text, mask).
    width, num_heads, mlp_dim: of every block.
    depth: blocks with cross-attention to the image.
    unimodal_depth: causal blocks before them without cross-attention (CoCa; 0: none).
    max_len: the longest caption L.
    image_width: the width of the image tokens, projected to `width` for cross-attention.
    pad_id: the tokenizer's pad id, also the end of text.
  """
  vocab_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  max_len: int
  image_width: int
  unimodal_depth: int = 0
  pad_id: int = 0
  dtype: Any = jnp.float32
  remat: bool = False
  attention: str = "xla"
  activation_dtype: Any = jnp.float32

  @property
  def bos_id(self) -> int:
    return self.vocab_size

  @property
  def mask_id(self) -> int:
    return self.vocab_size + 1

  def setup(self):
    self.token_embed = nn.Embed(self.vocab_size + 2,
                                self.width,
                                embedding_init=partitioned(nn.initializers.normal(0.02),
                                                           ("vocab", "embed")))
    self.pos_embedding = self.param(
        "pos_embedding", partitioned(nn.initializers.normal(0.01), (None, None, "embed")),
        (1, self.max_len, self.width))
    shared = dict(dtype=self.dtype, attention=self.attention,
                  activation_dtype=self.activation_dtype)
    if self.unimodal_depth:
      self.unimodal = Encoder(self.unimodal_depth, self.num_heads, self.mlp_dim,
                              remat=self.remat, **shared)
      self.ln_unimodal = layer_norm()
    block = nn.remat(DecoderBlock) if self.remat else DecoderBlock
    self.blocks = [block(self.num_heads, self.mlp_dim, **shared) for _ in range(self.depth)]
    self.image_proj = Dense((self.image_width, self.width), (None, "embed"), 1, self.dtype)
    self.ln_final = layer_norm()
    # Zero logits at the start, as big_vision's CapPa decoder: every token starts equally likely.
    self.logits = Dense((self.width, self.vocab_size), ("embed", "vocab"),
                        1,
                        self.dtype,
                        kernel_init=nn.initializers.zeros)

  def _embed(self, tokens, parallel):
    """Decoder inputs [B, L, width]: the shifted tokens, or mask ids where `parallel`."""
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
    inputs = shift_right(tokens, self.bos_id)
    if parallel is not None:
      inputs = jnp.where(parallel[:, None], self.mask_id, inputs)
    x = self.token_embed(inputs) + self.pos_embedding[:, :length]
    return nn.with_logical_constraint(x.astype(self.activation_dtype), _ACT)

  def _unimodal(self, x, tokens):
    """The unimodal layers: x [B, L, width] -> (x [B, L, width], text features [B, width]
    float32, their output at the end of text).

    That position reads the whole caption under the causal mask, as CoCa's
    appended class token does.
    """
    x = self.unimodal(x, causal=True)
    end = text_end(tokens, self.pad_id)
    features = jnp.take_along_axis(self.ln_unimodal(x), end[:, None, None], axis=1)[:, 0]
    return x, features.astype(jnp.float32)

  def text_features(self, tokens):
    """tokens int [B, L] -> [B, width] float32, the caption's contrastive feature (CoCa)."""
    return self._unimodal(self._embed(tokens, None), tokens)[1]

  def __call__(self, tokens, image, parallel=None):
    """tokens int [B, L], image tokens [B, N, D_img], parallel bool [B] or None
    -> (logits [B, L, V] float32, position i predicting tokens[:, i],
        text features [B, width] as `text_features`, or None without unimodal layers)."""
    x = self._embed(tokens, parallel)
    length = tokens.shape[1]
    mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
    if parallel is not None:
      mask = mask | parallel[:, None, None, None]
    features = None
    if self.unimodal_depth:
      x, features = self._unimodal(x, tokens)
    image = nn.with_logical_constraint(self.image_proj(image), _ACT)
    for block in self.blocks:
      x = block(x, image, mask)
    logits = self.logits(self.ln_final(x)).astype(jnp.float32)
    return nn.with_logical_constraint(logits, ("batch", "length", "act_mlp")), features
