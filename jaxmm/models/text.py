"""Text transformer tower: token + position embedding, Encoder with padding mask, masked mean pool."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxmm.models.transformer import Encoder, layer_norm, partitioned


class TextTransformer(nn.Module):
  """Bidirectional text encoder returning the mean of its non-pad token outputs."""
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

  @nn.compact
  def __call__(self, tokens):
    """tokens int [B, L] with L <= max_len, `pad_id` marking padding -> [B, width] float32.

    Pad positions are masked as attention keys and left out of the mean, so the
    output does not depend on how much padding follows the text.
    """
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
    x = Encoder(self.depth,
                self.num_heads,
                self.mlp_dim,
                self.dtype,
                self.remat,
                self.attention,
                self.activation_dtype,
                name="encoder")(x, padding_mask=is_token)
    x = layer_norm("ln_final")(x)

    weights = is_token.astype(jnp.float32)[..., None]
    total = jnp.sum(x * weights, axis=1)
    # An all-pad row (empty text) pools to zero rather than 0/0.
    return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
