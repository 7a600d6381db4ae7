"""U-Net denoiser for images, in the DDPM++ / ADM layout of Karras et al. (2022).

Follows the residual U-Net of Ho et al. (2020) with the refinements of Song et
al. (2021, DDPM++) and Dhariwal & Nichol (2021, ADM) as Karras et al. unify
them (their SongUNet / DhariwalUNet): residual blocks GroupNorm -> SiLU -> 3×3
conv, the conditioning vector as a per-channel scale and shift of the second
GroupNorm, self-attention at chosen resolutions, 2×2 average pooling down and
nearest-neighbour up (the [1, 1] resampling filter), skip connections from
every encoder stage to the decoder. Every residual branch and the output
convolution start at zero (ADM's zero_module), so F is exactly 0 at
initialisation and each block starts as its skip path.

Logical names follow the transformer's pairing: a block's first conv is
[*, *, embed, mlp] and its second [*, *, mlp, embed], like the MLP's
[embed, mlp] / [mlp, embed], so with embed -> fsdp and mlp -> tensor each
block is Megatron-style tensor-parallel with one all-reduce; attention uses
the transformer's [embed, heads, kv] kernels. Channel counts of 3 (the image)
stay unnamed.

Precision: parameters and activations are float32; convolutions and dense
layers take operands in `dtype` with float32 results. XLA:CPU (jax 0.10.2)
runs a bf16 convolution in float32 internally whatever its operand dtype; on
accelerators it takes the bf16 path.
"""
import functools
import math
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm import errors
from jaxmm.models.caption_conditioning import CrossAttention, read_condition
from jaxmm.models.embeddings import Conditioning, check_conditioning, modulate
from jaxmm.models.transformer import Dense, MultiHeadAttention, partitioned

_ACT = ("batch", None, None, "act_embed")
_HIDDEN = ("batch", None, None, "act_mlp")


def downsample(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H/2, W/2, C], the mean of each 2×2 block."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C], each pixel repeated 2×2."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def space_to_depth(x: jax.Array, p: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/p, W/p, p·p·C]: each p×p patch of pixels becomes one position."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // p, w // p, p * p * c)


def depth_to_space(x: jax.Array, p: int) -> jax.Array:
  """The inverse of `space_to_depth`: [B, H/p, W/p, p·p·C] -> [B, H, W, C]."""
  b, h, w, pc = x.shape
  c = pc // (p * p)
  x = x.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * p, w * p, c)


def group_norm(channels: int, axis_name: Optional[str], name: str) -> nn.GroupNorm:
  """GroupNorm (Wu & He 2018) in float32 with up to 32 groups of at least 4 channels.

  The group count follows Karras et al.; scale and bias are named `axis_name`.
  """
  groups = max(g for g in range(1, max(1, min(32, channels // 4)) + 1) if channels % g == 0)
  return nn.GroupNorm(num_groups=groups,
                      dtype=jnp.float32,
                      scale_init=partitioned(nn.initializers.ones, (axis_name,)),
                      bias_init=partitioned(nn.initializers.zeros, (axis_name,)),
                      name=name)


class Conv(nn.Module):
  """k×k convolution with 'SAME' padding: [B, H, W, Cin] -> [B, H, W, features] float32.

  `axes` names the kernel's (in, out) channel axes; the spatial axes are unnamed.
  """
  features: int
  axes: Tuple[Optional[str], Optional[str]]
  kernel_size: int = 3
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", partitioned(self.kernel_init, (None, None) + tuple(self.axes)),
                        (k, k, x.shape[-1], self.features))
    bias = self.param("bias", partitioned(nn.initializers.zeros, self.axes[1:]), (self.features,))
    y = jax.lax.conv_general_dilated(x.astype(self.dtype),
                                     kernel.astype(self.dtype), (1, 1),
                                     "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     preferred_element_type=jnp.float32)
    return y + bias


class ResBlock(nn.Module):
  """x -> skip(x) + conv1(dropout(SiLU(modulate(GN(conv0(SiLU(GN(x))))))), then attention.

  resample: None, 'down' or 'up'; it is applied to the branch before conv0 and
  to the skip path. The skip path gets a 1×1 projection only when the channel
  count changes. With `attention`, x + MHSA(GN(x)) over the H·W positions follows,
  and with a caption's context also cross-attention to it (`CrossAttention`).
  """
  features: int
  num_heads: int
  resample: Optional[str] = None
  attention: bool = False
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, c, context=None):
    """x [B, H, W, Cin], c [B, E] -> [B, H', W', features] (H' = H/2, H or 2H).

    context: None, or a caption's (tokens [B, S, W], mask bool [B, S]).
    """
    resample = {None: lambda t: t, "down": downsample, "up": upsample}[self.resample]
    h = nn.silu(group_norm(x.shape[-1], "embed", "norm0")(x))
    h = Conv(self.features, ("embed", "mlp"), dtype=self.dtype, name="conv0")(resample(h))
    h = nn.with_logical_constraint(h, _HIDDEN)
    # c as [B, 1, 1, E]: the modulation broadcasts over H, W, and XLA:CPU can run
    # its bf16 kernel gradient (see embeddings.zero_modulations).
    affine = Dense((c.shape[-1], 2, self.features), ("embed", None, "mlp"),
                   1,
                   self.dtype,
                   name="affine")(c[:, None, None])
    shift, scale = affine[..., 0, :], affine[..., 1, :]
    h = nn.silu(modulate(group_norm(self.features, "mlp", "norm1")(h), shift, scale))
    h = nn.Dropout(self.dropout, deterministic=self.deterministic)(h)
    h = Conv(self.features, ("mlp", "embed"),
             dtype=self.dtype,
             kernel_init=nn.initializers.zeros,
             name="conv1")(h)
    skip = resample(x)
    if skip.shape[-1] != self.features:
      skip = Dense((skip.shape[-1], self.features), (None, "embed"), 1, self.dtype,
                   name="skip")(skip)
    x = nn.with_logical_constraint(skip + h, _ACT)
    if not self.attention:
      return x
    b, height, width, channels = x.shape
    tokens = group_norm(channels, "embed", "norm_attn")(x).reshape(b, height * width, channels)
    y = MultiHeadAttention(self.num_heads,
                           self.dtype,
                           out_kernel_init=nn.initializers.zeros,
                           name="attn")(tokens, tokens)
    x = nn.with_logical_constraint(x + y.reshape(x.shape), _ACT)
    if context is None:
      return x
    y = CrossAttention(self.num_heads, self.dtype,
                       name="cross_attn")(x.reshape(b, height * width, channels), *context)
    return nn.with_logical_constraint(y.reshape(x.shape), _ACT)


def _largest_divisor(n: int, at_most: int) -> int:
  return max(d for d in range(1, max(1, at_most) + 1) if n % d == 0)


class UNet(nn.Module):
  """U-Net denoiser F(x, c_noise, labels or caption) for images (see the module docstring).

  Level l works at resolution H/2^l with channels·channel_mult[l] channels:
  the encoder has num_blocks blocks per level and a downsampling block between
  levels; the middle has two blocks (the first with attention); the decoder
  mirrors the encoder with num_blocks + 1 blocks per level, each taking one
  encoder activation as a skip, and an upsampling block between levels.

  With patch_size p > 1 the network works on p×p patches folded into channels
  (`space_to_depth`, "pixel unshuffle"), so its first level runs at H/p: a
  p²-times cheaper full-resolution stage, for images whose detail spans more
  than a pixel.

  Attributes:
    channels: base channel count; the conditioning vector has 4·channels.
    channel_mult: channel multiplier per level; len − 1 halvings of the image.
    num_blocks: residual blocks per level in the encoder.
    attn_resolutions: feature-map heights whose blocks add self-attention.
    num_heads: attention heads; must divide the channel count at those resolutions.
    embedding_type: noise embedding, 'positional' (DDPM++ / ADM) or 'fourier' (NCSN++).
    num_classes: class count per label type, () for an unconditional model.
    dropout: dropout rate before each block's second conv (active with train=True).
    dtype: operand dtype of convolutions and dense layers (float32 accumulation).
    remat: recompute each block in the backward pass.
    patch_size: side of the pixel patches folded into channels (1: none).
    text: None, or the TextTransformer arguments of a caption's text tower
      (`caption_conditioning`): the model is then conditioned on captions, not labels.
  """
  channels: int = 64
  channel_mult: Sequence[int] = (1, 2, 2)
  num_blocks: int = 1
  attn_resolutions: Sequence[int] = (8,)
  num_heads: int = 4
  embedding_type: str = "positional"
  num_classes: Sequence[int] = ()
  dropout: float = 0.0
  dtype: Any = jnp.float32
  remat: bool = False
  patch_size: int = 1
  text: Optional[Mapping[str, Any]] = None

  def check(self, image_shape: Sequence[int]) -> None:
    """Raises a UserError naming the `model.*` key that cannot work for [B, H, W, C] images."""
    errors.positive("model.channels", self.channels)
    errors.positive("model.num_heads", self.num_heads)
    errors.positive("model.num_blocks", self.num_blocks)
    if not self.channel_mult or any(
        not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in self.channel_mult):
      raise errors.UserError(f"model.channel_mult={tuple(self.channel_mult)!r} must be a "
                             "non-empty tuple of integers > 0, e.g. (1, 2, 2)")
    if not 0 <= self.dropout < 1:
      raise errors.UserError(f"model.dropout={self.dropout!r} must be in [0, 1), e.g. 0.1")
    check_conditioning(self.num_classes, self.embedding_type)
    _, h, w, _ = image_shape
    p = self.patch_size
    if h % p or w % p:
      raise errors.UserError(f"model.patch_size={p} does not divide {h}×{w} images")
    h, w = h // p, w // p
    levels = len(self.channel_mult)
    if h % 2**(levels - 1) or w % 2**(levels - 1):
      fits = 1
      while h % 2**fits == w % 2**fits == 0:
        fits += 1
      raise errors.UserError(
          f"model.channel_mult={tuple(self.channel_mult)!r} halves {h}×{w} images "
          f"{levels - 1} times, which needs sizes divisible by {2**(levels - 1)}; use at most "
          f"{fits} levels, e.g. model.channel_mult={tuple(self.channel_mult[:fits])!r}")
    resolutions = [h >> level for level in range(levels)]
    unknown = [r for r in self.attn_resolutions if r not in resolutions]
    if unknown:
      raise errors.UserError(f"model.attn_resolutions={tuple(self.attn_resolutions)!r}: {unknown} "
                             f"not among this U-Net's resolutions {resolutions}, e.g. "
                             f"model.attn_resolutions={(resolutions[-1],)!r}")
    attended = {self.channels * self.channel_mult[-1]} | {
        self.channels * m for m, r in zip(self.channel_mult, resolutions)
        if r in self.attn_resolutions
    }
    common = functools.reduce(math.gcd, attended)
    if common % self.num_heads:
      raise errors.UserError(f"model.num_heads={self.num_heads} must divide the channel counts "
                             f"{sorted(attended)} where attention runs; e.g. model.num_heads="
                             f"{_largest_divisor(common, self.num_heads)}")

  @nn.compact
  def __call__(self, x, noise_labels, condition=None, *, train: bool = False):
    """x [B, H, W, C], noise_labels float [B], condition -> F [B, H, W, C].

    condition: class labels int [B, K] or None; with `text`, a caption's tokens
    int [B, L] (all padding: the empty caption). train=True enables dropout
    (needs a 'dropout' rng); F is float32.
    """
    self.check(x.shape)
    class_labels, text, context = read_condition(self.text, self.dtype, condition)
    c = Conditioning(4 * self.channels,
                     self.channels,
                     self.num_classes,
                     self.embedding_type,
                     self.dtype,
                     name="conditioning")(noise_labels, class_labels, text)
    block_cls = nn.remat(ResBlock) if self.remat else ResBlock
    block = functools.partial(block_cls,
                              num_heads=self.num_heads,
                              dropout=self.dropout,
                              deterministic=not train,
                              dtype=self.dtype)
    h = space_to_depth(x.astype(jnp.float32), self.patch_size)
    res = h.shape[1]
    h = Conv(self.channels * self.channel_mult[0], (None, "embed"), dtype=self.dtype,
             name="conv_in")(h)
    h = nn.with_logical_constraint(h, _ACT)
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      if level:
        h = block(h.shape[-1], resample="down", name=f"enc{level}_down")(h, c)
        skips.append(h)
      for i in range(self.num_blocks):
        attn = (res >> level) in self.attn_resolutions
        h = block(self.channels * mult, attention=attn,
                  name=f"enc{level}_block{i}")(h, c, context if attn else None)
        skips.append(h)

    h = block(h.shape[-1], attention=True, name="mid0")(h, c, context)
    h = block(h.shape[-1], name="mid1")(h, c)

    for level, mult in reversed(list(enumerate(self.channel_mult))):
      if level < len(self.channel_mult) - 1:
        h = block(h.shape[-1], resample="up", name=f"dec{level}_up")(h, c)
      for i in range(self.num_blocks + 1):
        attn = (res >> level) in self.attn_resolutions
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(self.channels * mult, attention=attn,
                  name=f"dec{level}_block{i}")(h, c, context if attn else None)

    h = nn.silu(group_norm(h.shape[-1], "embed", "norm_out")(h))
    h = Conv(x.shape[-1] * self.patch_size**2, ("embed", None),
             dtype=self.dtype,
             kernel_init=nn.initializers.zeros,
             name="conv_out")(h)
    return depth_to_space(h, self.patch_size)
