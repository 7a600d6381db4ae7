"""Diffusion transformer (DiT, Peebles & Xie 2023) with adaLN-Zero conditioning.

Patchify -> + fixed 2-D sin-cos position code -> blocks -> final adaptive
LayerNorm -> linear -> unpatchify. Each block regresses a shift, scale and
gate per branch from the conditioning vector c (noise level plus labels,
`jaxmm.models.embeddings`):

    x = x + gate_a · MHSA(LN(x)·(1 + scale_a) + shift_a)
    x = x + gate_m · MLP(LN(x)·(1 + scale_m) + shift_m)

with LayerNorms without parameters and the regression zero-initialised, so
every block starts as the identity ("adaLN-Zero", the paper's section 3.2);
the output layer starts at zero too, so F is exactly 0 at initialisation.
Conditioned on a caption (`text`), each block also reads the caption's tokens
between the two branches, x = x + CrossAttn(LN(x), context), as PixArt-α does
(Chen et al. 2023), its output projection also zero-initialised
(`caption_conditioning`).
Attention and MLP are the contrastive towers' (`jaxmm.models.transformer`),
with the same logical names and float32 accumulation of `dtype` products.
"""
import math
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxmm import errors
from jaxmm.models.caption_conditioning import CrossAttention, read_condition
from jaxmm.models.embeddings import Conditioning, check_conditioning, modulate, zero_modulations
from jaxmm.models.transformer import Dense, MlpBlock, MultiHeadAttention, layer_norm

_ACT = ("batch", "length", "act_embed")


def sincos_position_embedding(grid_h: int, grid_w: int, width: int) -> np.ndarray:
  """[grid_h·grid_w, width] float32, row-major: sin and cos of the row, then of the column.

  The fixed 2-D code of DiT / MAE: each coordinate takes width/2 channels,
  Vaswani et al.'s 1-D code at width/4 frequencies 1 ... 1/10000.
  """
  freqs = 1.0 / 10000**(np.arange(width // 4) / (width // 4))
  rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
  parts = []
  for coord in (rows.reshape(-1), cols.reshape(-1)):
    angles = coord[:, None] * freqs
    parts += [np.sin(angles), np.cos(angles)]
  return np.concatenate(parts, axis=1).astype(np.float32)


class DiTBlock(nn.Module):
  """One adaLN-Zero transformer block: x [B, N, D], c [B, E] -> [B, N, D].

  context: None, or a caption's (tokens [B, S, W], mask bool [B, S]) to cross-attend to.
  """
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, c, context=None):
    width = x.shape[-1]
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = zero_modulations(
        c[:, None], 6, width, self.dtype, "adaln")
    y = modulate(layer_norm("ln_attn", affine=False)(x), shift_a, scale_a)
    y = MultiHeadAttention(self.num_heads, self.dtype, name="attn")(y, y)
    x = nn.with_logical_constraint(x + gate_a * y, _ACT)
    if context is not None:
      x = nn.with_logical_constraint(
          CrossAttention(self.num_heads, self.dtype, name="cross_attn")(x, *context), _ACT)
    y = modulate(layer_norm("ln_mlp", affine=False)(x), shift_m, scale_m)
    y = MlpBlock(self.mlp_dim, self.dtype, name="mlp")(y)
    return nn.with_logical_constraint(x + gate_m * y, _ACT)


class DiT(nn.Module):
  """DiT denoiser F(x, c_noise, labels or caption) for images (see the module docstring).

  Attributes:
    patch_size: p; H and W must be multiples of p, giving (H/p)·(W/p) tokens.
    width: token width D (a multiple of 4 for the 2-D position code); also the
      width of the conditioning vector.
    depth: number of blocks.
    num_heads: attention heads, dividing width.
    mlp_dim: hidden width of each block's MLP (4·width in the paper).
    embedding_type: noise embedding, 'positional' (as DiT) or 'fourier'.
    num_classes: class count per label type, () for an unconditional model.
    dtype: operand dtype of the matrix products (float32 accumulation).
    remat: recompute each block in the backward pass.
    text: None, or the TextTransformer arguments of a caption's text tower
      (`caption_conditioning`): the model is then conditioned on captions, not labels.
  """
  patch_size: int = 4
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  embedding_type: str = "positional"
  num_classes: Sequence[int] = ()
  dtype: Any = jnp.float32
  remat: bool = False
  text: Optional[Mapping[str, Any]] = None

  def check(self, image_shape: Sequence[int]) -> None:
    """Raises a UserError naming the `model.*` key that cannot work for [B, H, W, C] images."""
    for key in ("patch_size", "width", "depth", "num_heads", "mlp_dim"):
      errors.positive(f"model.{key}", getattr(self, key))
    check_conditioning(self.num_classes, self.embedding_type)
    _, h, w, _ = image_shape
    p = self.patch_size
    if h % p or w % p:
      fits = max(d for d in range(1, p + 1) if math.gcd(h, w) % d == 0)
      raise errors.UserError(f"model.patch_size={p} does not divide {h}×{w} images; "
                             f"e.g. model.patch_size={fits}")
    if self.width % 4:
      raise errors.UserError(f"model.width={self.width} must be a multiple of 4 (the 2-D "
                             f"position code), e.g. model.width={self.width // 4 * 4 or 4}")
    if self.width % self.num_heads:
      fits = max(d for d in range(1, self.num_heads + 1) if self.width % d == 0)
      raise errors.UserError(f"model.num_heads={self.num_heads} does not divide "
                             f"model.width={self.width}; e.g. model.num_heads={fits}")

  @nn.compact
  def __call__(self, x, noise_labels, condition=None):
    """x [B, H, W, C], noise_labels float [B], condition -> F [B, H, W, C].

    condition: class labels int [B, K] or None; with `text`, a caption's tokens
    int [B, L] (all padding: the empty caption). F is float32.
    """
    self.check(x.shape)
    class_labels, text, context = read_condition(self.text, self.dtype, condition)
    b, h, w, channels = x.shape
    p, gh, gw = self.patch_size, h // self.patch_size, w // self.patch_size
    c = Conditioning(self.width,
                     self.width,
                     self.num_classes,
                     self.embedding_type,
                     self.dtype,
                     name="conditioning")(noise_labels, class_labels, text)

    patches = x.astype(jnp.float32).reshape(b, gh, p, gw, p, channels).transpose(0, 1, 3, 2, 4, 5)
    tokens = Dense((p, p, channels, self.width), (None, None, None, "embed"),
                   3,
                   self.dtype,
                   name="patch_embed")(patches).reshape(b, gh * gw, self.width)
    tokens = tokens + sincos_position_embedding(gh, gw, self.width)
    tokens = nn.with_logical_constraint(tokens, _ACT)

    block = nn.remat(DiTBlock) if self.remat else DiTBlock
    for i in range(self.depth):
      tokens = block(self.num_heads, self.mlp_dim, self.dtype, name=f"block_{i}")(tokens, c,
                                                                                  context)

    shift, scale = zero_modulations(c[:, None], 2, self.width, self.dtype, "final_adaln")
    tokens = modulate(layer_norm("ln_final", affine=False)(tokens), shift, scale)
    out = Dense((self.width, p, p, channels), ("embed", None, None, None),
                1,
                self.dtype,
                kernel_init=nn.initializers.zeros,
                name="final")(tokens)
    return out.reshape(b, gh, gw, p, p, channels).transpose(0, 1, 3, 2, 4, 5).reshape(x.shape)
