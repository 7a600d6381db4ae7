"""Vision Transformer image tower (Dosovitskiy et al. 2021) returning one vector per image."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxmm.models.patch_dropout import drop_patches, kept_count
from jaxmm.models.transformer import (NORM_EPS, Dense, Encoder, MlpBlock, MultiHeadAttention,
                                      layer_norm, partitioned)

POOLS = ("gap", "cls", "map", "none")
STEMS = ("patch", "conv")


class MAPHead(nn.Module):
  """Multihead attention pooling: one learned query attends over all tokens (Lee et al. 2019)."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  activation: str = "gelu_tanh"
  norm_eps: float = NORM_EPS

  @nn.compact
  def __call__(self, x):
    """x [B, N, D] -> [B, D]."""
    probe = self.param("probe", partitioned(nn.initializers.xavier_uniform(),
                                            (None, None, "embed")), (1, 1, x.shape[-1]))
    probe = jnp.broadcast_to(probe, (x.shape[0], 1, x.shape[-1]))
    y = MultiHeadAttention(self.num_heads, self.dtype, name="attn")(probe, x)
    mlp = MlpBlock(self.mlp_dim, self.dtype, activation=self.activation, name="mlp")
    y = y + mlp(layer_norm("ln", eps=self.norm_eps)(y))
    return y[:, 0]


def _patch_embed(images, p, width, dtype):
  """[B, H, W, C] -> [B, (H/p)·(W/p), width] tokens, one per p×p patch."""
  b, h, w, c = images.shape
  # A stride-p convolution with a p×p kernel is patchify + one shared linear
  # map; written as that matmul it takes the float32-accumulating bf16 path.
  patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  x = Dense((p, p, c, width), (None, None, None, "embed"),
            3,
            dtype,
            kernel_init=nn.initializers.lecun_normal(),
            name="patch_embed")(patches)
  return x.reshape(b, -1, width)


class ConvStem(nn.Module):
  """log2(p) stride-2 3×3 convolutions with GELU, then a 1×1 projection to `width`.

  The convolutional stem of Xiao et al. (2021), "Early convolutions help
  transformers see better": the same token grid as p×p patches, but with a
  local, translation-equivariant inductive bias that small images and short
  training runs need. Channels double per layer up to width/2.
  """
  patch_size: int
  width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    """images [B, H, W, C] -> tokens [B, (H/p)·(W/p), width]."""
    layers = self.patch_size.bit_length() - 1
    if self.patch_size != 1 << layers:
      raise ValueError(f"the conv stem needs a power-of-two patch_size, got {self.patch_size}")
    x = images
    for i in range(layers):
      channels = self.width >> (layers - i)
      x = nn.Conv(channels, (3, 3),
                  strides=(2, 2),
                  padding="SAME",
                  dtype=self.dtype,
                  kernel_init=partitioned(nn.initializers.lecun_normal(), (None, None, None, None)),
                  bias_init=partitioned(nn.initializers.zeros, (None,)),
                  name=f"conv_{i}")(x)
      x = nn.gelu(x.astype(jnp.float32))
    x = Dense((x.shape[-1], self.width), (None, "embed"), 1, self.dtype, name="proj")(x)
    return x.reshape(x.shape[0], -1, self.width)


class ViT(nn.Module):
  """Patchify -> + position embedding -> [LayerNorm] -> Encoder -> LayerNorm -> pool.

  pool: 'gap' (mean over patches), 'cls' (a learned class token prepended), or
  'map' (multihead attention pooling), or 'none' (every token, for a decoder that
  attends to them, `jaxmm.models.captioner`). The class token carries no position
  embedding of its own: it is one learned vector either way.
  stem: 'patch' (one linear map per p×p patch, as in the paper) or 'conv' (a
  few stride-2 3×3 convolutions down to the same p×p grid, ConvStem).
  patch_dropout: the fraction of patch tokens a training call drops (FLIP, Li
  et al. 2023; `jaxmm.models.patch_dropout`), drawn from the 'patch_dropout'
  rng; evaluation (train=False) keeps them all.
  activation_dtype: the encoder's residual stream (`jaxmm.models.transformer`);
  the final LayerNorm and the pooled vector are float32.
  ln_pre: a LayerNorm on the tokens before the encoder, as CLIP's ViTs have
  (Radford et al. 2021, section 2.4).
  activation: the MLPs' nonlinearity (`transformer.ACTIVATIONS`).
  norm_eps: every LayerNorm's epsilon.
  """
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  pool: str = "gap"
  stem: str = "patch"
  dtype: Any = jnp.float32
  remat: bool = False
  attention: str = "xla"
  patch_dropout: float = 0.0
  activation_dtype: Any = jnp.float32
  ln_pre: bool = False
  activation: str = "gelu_tanh"
  norm_eps: float = NORM_EPS

  @nn.compact
  def __call__(self, images, train: bool = False):
    """images [B, H, W, C] (H, W multiples of patch_size) -> [B, width] float32 ([B, N, width]
    with pool 'none')."""
    b, h, w, c = images.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"image size {h}x{w} is not a multiple of patch_size {p}")
    if self.stem == "patch":
      x = _patch_embed(images, p, self.width, self.dtype)
    elif self.stem == "conv":
      x = ConvStem(p, self.width, self.dtype, name="conv_stem")(images)
    else:
      raise ValueError(f"unknown stem {self.stem!r}; expected one of {STEMS}")
    pos = self.param("pos_embedding",
                     partitioned(nn.initializers.normal(0.02), (None, None, "embed")),
                     (1, x.shape[1], self.width))
    x = x + pos
    kept_count(x.shape[1], self.patch_dropout)  # a bad ratio fails at init, not first in training
    if train and self.patch_dropout > 0:
      # After the position embeddings, so each kept token still knows where it was.
      x = drop_patches(x, self.make_rng("patch_dropout"), self.patch_dropout)

    if self.pool == "cls":
      cls = self.param("cls", partitioned(nn.initializers.zeros, (None, None, "embed")),
                       (1, 1, self.width))
      x = jnp.concatenate(
          [jnp.broadcast_to(cls, (x.shape[0], 1, self.width)), x], 1)
    if self.ln_pre:
      x = layer_norm("ln_pre", eps=self.norm_eps)(x)

    x = Encoder(self.depth,
                self.num_heads,
                self.mlp_dim,
                self.dtype,
                self.remat,
                self.attention,
                self.activation_dtype,
                activation=self.activation,
                norm_eps=self.norm_eps,
                name="encoder")(x)
    x = layer_norm("ln_final", eps=self.norm_eps)(x)

    if self.pool == "gap":
      return jnp.mean(x, axis=1)
    if self.pool == "cls":
      return x[:, 0]
    if self.pool == "none":
      return x
    if self.pool == "map":
      return MAPHead(self.num_heads,
                     self.mlp_dim,
                     self.dtype,
                     self.activation,
                     self.norm_eps,
                     name="map_head")(x)
    raise ValueError(f"unknown pool {self.pool!r}; expected one of {POOLS}")
