"""Residual MLP denoiser for low-dimensional data (2-D toy distributions).

x [B, D] is lifted to `width`, passed through `depth` residual blocks
conditioned like DiT's (adaLN-Zero, Peebles & Xie 2023: LayerNorm modulated
by a shift and scale regressed from the conditioning vector, the branch scaled
by a zero-initialised gate), and projected back to D by a zero-initialised
layer, so F is exactly 0 at initialisation. The conditioning vector (noise
level plus labels) is `jaxmm.models.embeddings.Conditioning`, shared with the
U-Net and DiT.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxmm import errors
from jaxmm.models.embeddings import Conditioning, check_conditioning, modulate, zero_modulations
from jaxmm.models.transformer import Dense, layer_norm

_ACT = ("batch", "act_embed")


class MLPBlock(nn.Module):
  """h + gate · fc2(SiLU(fc1(LN(h)·(1 + scale) + shift))).

  h [B, width], c [B, E] -> [B, width].
  """
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, c):
    width = h.shape[-1]
    shift, scale, gate = (
        m[:, 0] for m in zero_modulations(c[:, None], 3, width, self.dtype, "adaln"))
    y = modulate(layer_norm("ln", affine=False)(h), shift, scale)
    y = Dense((width, self.mlp_dim), ("embed", "mlp"), 1, self.dtype, name="fc1")(y)
    y = nn.with_logical_constraint(nn.silu(y), ("batch", "act_mlp"))
    y = Dense((self.mlp_dim, width), ("mlp", "embed"), 1, self.dtype, name="fc2")(y)
    return nn.with_logical_constraint(h + gate * y, _ACT)


class MLPDenoiser(nn.Module):
  """Denoiser F(x, c_noise, labels) for points x [B, D].

  Attributes:
    width: hidden width, also the width of the conditioning vector.
    depth: number of residual blocks.
    mlp_dim: hidden width inside each block.
    embedding_type: noise embedding, 'positional' or 'fourier'.
    num_classes: class count per label type, () for an unconditional model.
    dtype: operand dtype of the matrix products (float32 accumulation).
    remat: recompute each block in the backward pass.
  """
  width: int = 128
  depth: int = 3
  mlp_dim: int = 256
  embedding_type: str = "positional"
  num_classes: Sequence[int] = ()
  dtype: Any = jnp.float32
  remat: bool = False

  def check(self) -> None:
    """Raises a UserError naming the `model.*` key whose value cannot work."""
    for key in ("width", "depth", "mlp_dim"):
      errors.positive(f"model.{key}", getattr(self, key))
    check_conditioning(self.num_classes, self.embedding_type)

  @nn.compact
  def __call__(self, x, noise_labels, class_labels=None):
    """x [B, D], noise_labels float [B], class_labels int [B, K] or None -> F [B, D] float32."""
    self.check()
    c = Conditioning(self.width,
                     self.width,
                     self.num_classes,
                     self.embedding_type,
                     self.dtype,
                     name="conditioning")(noise_labels, class_labels)
    h = Dense((x.shape[-1], self.width), (None, "embed"), 1, self.dtype, name="fc_in")(x)
    h = nn.with_logical_constraint(h, _ACT)
    block = nn.remat(MLPBlock) if self.remat else MLPBlock
    for i in range(self.depth):
      h = block(self.mlp_dim, self.dtype, name=f"block_{i}")(h, c)
    shift, scale = (
        m[:, 0] for m in zero_modulations(c[:, None], 2, self.width, self.dtype, "final_adaln"))
    h = modulate(layer_norm("ln_final", affine=False)(h), shift, scale)
    return Dense((self.width, x.shape[-1]), ("embed", None),
                 1,
                 self.dtype,
                 kernel_init=nn.initializers.zeros,
                 name="fc_out")(h)
