"""ResNet image encoder with the CIFAR stem (He et al. 2016) and an MLP head.

The CIFAR layout of He et al. (2016, Sec. 4.2), as in the CIFAR ResNet-18
that Khosla et al. (2020) train: a 3×3 stride-1 stem convolution and no
max-pool, so a 32×32 image keeps its full resolution in the first stage;
stages of basic blocks (two 3×3 convolutions and an identity shortcut), each
stage after the first halving the resolution with a stride-2 first
convolution and a 1×1 projection shortcut (option B). Global average pooling
gives the representation h [B, F] (F = widths[-1]) that a linear probe reads.
The head, an MLP with ReLU between its layers, maps h to what the loss uses: a
projection for a contrastive loss (SimCLR, Chen et al. 2020; SupCon, Khosla et
al. 2020, a 2-layer MLP) or class logits for cross-entropy (one layer).

BatchNorm (Ioffe & Szegedy 2015): in training each BatchNorm normalises with
the mean and variance of the batch and updates its running averages in the
'batch_stats' collection (apply with `mutable=['batch_stats']`); at evaluation
(`train=False`) it normalises with the running averages, so an example's
output does not depend on the rest of its batch. The batch statistics are those
of the global batch in both ways of running the model on a mesh:
- under `jax.jit` with the batch sharded over devices (how jaxmm's train step
  runs), a mean over the batch axis of the global array is the global mean:
  XLA adds the cross-device reduction itself, and `axis_name` stays None;
- inside `jax.shard_map` (or pmap), where each device sees only its rows, set
  `axis_name` to the mesh's batch axes (`jaxmm.parallel.BATCH_AXES`), and
  BatchNorm averages the per-device moments over them.
The last BatchNorm of each residual branch starts with scale 0 (Goyal et al.
2017), so every block starts as its shortcut.

Logical names pair as in the U-Net: a block's first convolution is
[*, *, embed, mlp] and its second [*, *, mlp, embed]; shortcut projections
[*, *, (unnamed), embed]; the image's channels stay unnamed; each BatchNorm's
scale and bias carry the name of their channels. Head layers alternate
[embed, mlp], [mlp, embed], ... and the last one's outputs are 'joint'.

Precision: parameters, statistics and activations are float32; convolutions
and dense layers take operands in `dtype`.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.models.transformer import Dense, partitioned

_ACT = ("batch", None, None, "act_embed")
_HIDDEN = ("batch", None, None, "act_mlp")
# He et al. (2015) initialisation for ReLU networks, over the output fan as torchvision's ResNet.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(features: int, kernel_size: int, strides: int, axes: tuple, dtype: Any,
         name: str) -> nn.Conv:
  """A bias-free k×k convolution padded by k // 2 on each side; kernel axes (None, None, *axes)."""
  pad = kernel_size // 2
  return nn.Conv(features, (kernel_size, kernel_size),
                 strides=strides,
                 padding=((pad, pad), (pad, pad)),
                 use_bias=False,
                 dtype=dtype,
                 kernel_init=partitioned(_CONV_INIT, (None, None) + tuple(axes)),
                 name=name)


def batch_norm(axis: Optional[str], momentum: float, axis_name: Any, name: str,
               zero_scale: bool = False) -> nn.BatchNorm:
  """BatchNorm in float32 whose scale and bias are named `axis`; running averages
  r ← momentum·r + (1 − momentum)·batch moment."""
  return nn.BatchNorm(momentum=momentum,
                      epsilon=1e-5,
                      axis_name=axis_name,
                      dtype=jnp.float32,
                      scale_init=partitioned(
                          nn.initializers.zeros if zero_scale else nn.initializers.ones, (axis,)),
                      bias_init=partitioned(nn.initializers.zeros, (axis,)),
                      name=name)


class BasicBlock(nn.Module):
  """relu(shortcut(x) + BN(conv(relu(BN(conv(x)))))): [B, H, W, Cin] -> [B, H/s, W/s, features]."""
  features: int
  strides: int = 1
  bn_momentum: float = 0.9
  axis_name: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda axis, name, zero=False: batch_norm(axis, self.bn_momentum, self.axis_name, name,
                                                     zero)
    h = conv(self.features, 3, self.strides, ("embed", "mlp"), self.dtype, "conv0")(x)
    h = nn.relu(norm("mlp", "norm0")(h, use_running_average=not train))
    h = nn.with_logical_constraint(h, _HIDDEN)
    h = conv(self.features, 3, 1, ("mlp", "embed"), self.dtype, "conv1")(h)
    h = norm("embed", "norm1", zero=True)(h, use_running_average=not train)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, 1, self.strides, (None, "embed"), self.dtype, "shortcut")(x)
      shortcut = norm("embed", "shortcut_norm")(shortcut, use_running_average=not train)
    return nn.with_logical_constraint(nn.relu(shortcut + h), _ACT)


class ResNet(nn.Module):
  """CIFAR-style ResNet encoder and MLP head (see the module docstring).

  Attributes:
    stage_sizes: basic blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    widths: channels per stage, e.g. (64, 128, 256, 512); F = widths[-1].
    head: output sizes of the head's layers, e.g. (512, 128) for a projection
      or (10,) for the logits of 10 classes.
    bn_momentum: BatchNorm's running-average decay (0.9 is PyTorch's momentum 0.1).
    axis_name: None under jit; the batch mesh axes inside shard_map.
    dtype: operand dtype of convolutions and dense layers.
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  head: Sequence[int] = (512, 128)
  bn_momentum: float = 0.9
  axis_name: Any = None
  dtype: Any = jnp.float32

  def setup(self):
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(f"stage_sizes {tuple(self.stage_sizes)} and widths {tuple(self.widths)} "
                       "need one entry per stage")
    dtype = jnp.dtype(self.dtype)
    self.stem = conv(self.widths[0], 3, 1, (None, "embed"), dtype, "stem")
    self.stem_norm = batch_norm("embed", self.bn_momentum, self.axis_name, "stem_norm")
    self.blocks = [
        BasicBlock(width,
                   strides=2 if stage > 0 and i == 0 else 1,
                   bn_momentum=self.bn_momentum,
                   axis_name=self.axis_name,
                   dtype=dtype,
                   name=f"stage{stage}_block{i}")
        for stage, (size, width) in enumerate(zip(self.stage_sizes, self.widths))
        for i in range(size)
    ]
    names = ["embed"] + ["mlp" if i % 2 == 0 else "embed" for i in range(len(self.head) - 1)]
    names.append("joint")
    self.head_layers = [
        Dense((fan_in, fan_out), (names[i], names[i + 1]), 1, dtype, name=f"head{i}")
        for i, (fan_in, fan_out) in enumerate(zip((self.widths[-1],) + tuple(self.head), self.head))
    ]

  def encode(self, images: jax.Array, train: bool = False) -> jax.Array:
    """images [B, H, W, C] -> the representation h, float32 [B, F]."""
    x = nn.relu(self.stem_norm(self.stem(images), use_running_average=not train))
    x = nn.with_logical_constraint(x, _ACT)
    for block in self.blocks:
      x = block(x, train)
    return jnp.mean(x, axis=(1, 2))

  def project(self, h: jax.Array) -> jax.Array:
    """h [B, F] -> the head's output, float32 [B, head[-1]]."""
    for i, layer in enumerate(self.head_layers):
      h = layer(nn.relu(h) if i else h)
    return h

  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """images [B, H, W, C] -> (h [B, F], head output [B, head[-1]]).

    With `train` the BatchNorms use batch statistics and the call needs
    `mutable=['batch_stats']`.
    """
    h = self.encode(images, train)
    return h, self.project(h)
