"""Text transformer tower: token + position embedding, Encoder, one vector per text.

Two ways to read a text, by `pool`:
  'mean': bidirectional attention with pad tokens masked, and the mean of the
          non-pad outputs (jaxmm's default);
  'eot':  the output at the end-of-text token, found as the largest token id
          (the end-of-text token is the last id of CLIP's vocabulary), as
          CLIP's text tower reads it (Radford et al. 2021, section 2.4), which
          trains with `causal` attention;
  'last': the output at the last position, as big_vision's SigLIP text tower
          reads it (Zhai et al. 2023): its tokenizer ends every text with the
          end-of-text id and pads with that id too ("sticky" EOS), so the last
          position holds one; such a tower trains with `mask_pad` off.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxmm import errors
from jaxmm.models.transformer import NORM_EPS, Encoder, layer_norm, partitioned

POOLS = ("mean", "eot", "last")


class TextTransformer(nn.Module):
  """Text encoder returning one vector per text (module docstring).

  causal: token i attends to tokens j <= i only. Such a tower needs no padding
  mask (pads follow the text, so no text token attends to them) and has none,
  which matters where id `pad_id` is also a word: CLIP's tokenizer pads with
  id 0, its '!'.
  mask_pad: whether padding is masked as attention keys (without `causal`).
  Off, every position attends to every other, pads included, as in big_vision's
  text tower, whose pads are end-of-text ids the model was trained to read.
  activation, norm_eps: the MLPs' nonlinearity (`transformer.ACTIVATIONS`) and
  every LayerNorm's epsilon.
  """
  vocab_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  max_len: int
  pad_id: int = 0
  dtype: Any = jnp.float32
  remat: bool = False
  attention: str = "xla"
  activation_dtype: Any = jnp.float32  # the encoder's residual stream; the output is float32
  pool: str = "mean"
  causal: bool = False
  mask_pad: bool = True
  activation: str = "gelu_tanh"
  norm_eps: float = NORM_EPS

  @nn.compact
  def __call__(self, tokens, *, return_tokens: bool = False):
    """tokens int [B, L] with L <= max_len, `pad_id` marking padding -> [B, width] float32.

    return_tokens: also return every position's output, as (outputs [B, L, width],
    pooled [B, width]), for a model that attends to the text (a text-to-image denoiser).

    With `mask_pad` or `causal`, the output does not depend on how much
    padding follows the text: pad positions are masked as attention keys (or,
    `causal`, come after every text token) and left out of the pooling.
    """
    errors.one_of("model.text.pool", self.pool, POOLS)
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
    x = nn.Embed(self.vocab_size,
                 self.width,
                 name="token_embed",
                 embedding_init=partitioned(nn.initializers.normal(0.02),
                                            ("vocab", "embed")))(tokens)
    pos = self.param("pos_embedding",
                     partitioned(nn.initializers.normal(0.01), (None, None, "embed")),
                     (1, self.max_len, self.width))
    x = x + pos[:, :length]

    is_token = tokens != self.pad_id
    padding_mask = is_token if self.mask_pad and not self.causal else None
    x = Encoder(self.depth,
                self.num_heads,
                self.mlp_dim,
                self.dtype,
                self.remat,
                self.attention,
                self.activation_dtype,
                activation=self.activation,
                norm_eps=self.norm_eps,
                name="encoder")(x, padding_mask, causal=self.causal)
    x = layer_norm("ln_final", eps=self.norm_eps)(x)

    pooled = self._pool(x, tokens, is_token)
    return (x, pooled) if return_tokens else pooled

  def _pool(self, x, tokens, is_token):
    """outputs [B, L, width] -> [B, width] by `pool`."""
    if self.pool == "last":
      return x[:, -1]
    if self.pool == "eot":
      # argmax returns the first of equal ids, as torch's does in open_clip.
      eot = jnp.argmax(tokens, axis=1)
      return jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
    weights = is_token.astype(jnp.float32)[..., None]
    total = jnp.sum(x * weights, axis=1)
    # An all-pad row (empty text) pools to zero rather than 0/0.
    return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
