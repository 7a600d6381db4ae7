"""Two-tower image-text model (CLIP, Radford et al. 2021; SigLIP, Zhai et al. 2023)."""
import math
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax.numpy as jnp

from jaxmm import errors
from jaxmm.models.text import TextTransformer
from jaxmm.models.transformer import partitioned
from jaxmm.models.vit import ViT


def l2_normalize(x, eps=1e-12):
  """x / ||x|| along the last axis, in float32. [B, E] -> [B, E]."""
  x = x.astype(jnp.float32)
  return x * jnp.reciprocal(jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True),
                                                 eps * eps)))


def joint_projection(embed_dim: int, use_bias: bool = True) -> nn.Dense:
  """A tower's projection [.., embed] -> [.., embed_dim] into the joint embedding (float32)."""
  return nn.Dense(embed_dim,
                  dtype=jnp.float32,
                  use_bias=use_bias,
                  kernel_init=partitioned(nn.initializers.lecun_normal(), ("embed", "joint")),
                  bias_init=partitioned(nn.initializers.zeros, ("joint",)))


def logit_scale_and_bias(module: nn.Module, init_log_scale: float, init_bias: Optional[float]):
  """(log_scale [], bias [] or None): the contrastive logits' parameters of `module`, made in its
  setup; init_bias None makes no bias."""
  constant = lambda value: partitioned(nn.initializers.constant(value), ())
  log_scale = module.param("log_scale", constant(init_log_scale), (), jnp.float32)
  if init_bias is None:
    return log_scale, None
  return log_scale, module.param("bias", constant(init_bias), (), jnp.float32)


class TwoTower(nn.Module):
  """ViT and text transformer, each projected to `embed_dim` and L2-normalised.

  Attributes:
    image: ViT keyword arguments (patch_size, width, depth, num_heads, mlp_dim, pool).
    text: TextTransformer keyword arguments (vocab_size, width, depth, num_heads, mlp_dim, max_len).
    embed_dim: joint embedding dimension E.
    dtype: operand dtype of the towers' matrix products; parameters and embeddings
      are float32 (see jaxmm.models.transformer).
    activation_dtype: dtype of the towers' residual streams and the activations between
      products: float32 (the default; the fast choice on CPUs) or bfloat16 (on GPUs and TPUs).
    remat: recompute each transformer block in the backward pass.
    attention: how the towers compute attention, one of transformer.ATTENTION ("cudnn":
      fused flash attention on NVIDIA GPUs).
    init_log_scale: initial log of the logit multiplier (log 10 for SigLIP, log 1/0.07 for CLIP).
    init_bias: initial logit bias (−10 for SigLIP); None creates no bias parameter.
    proj_bias: whether the two projections to embed_dim add a bias (CLIP's have none).
    image_projection: whether the image tower is projected to embed_dim; without, its pooled
      vector is the embedding (image.width must be embed_dim), as in big_vision's SigLIP,
      whose image towers end in their attention-pooling head.
  """
  image: Mapping[str, Any]
  text: Mapping[str, Any]
  embed_dim: int
  dtype: Any = jnp.float32
  remat: bool = False
  attention: str = "xla"
  activation_dtype: Any = jnp.float32
  init_log_scale: float = math.log(10.0)
  init_bias: Optional[float] = -10.0
  proj_bias: bool = True
  image_projection: bool = True

  def setup(self):
    dtype = jnp.dtype(self.dtype)
    shared = dict(dtype=dtype,
                  remat=self.remat,
                  attention=self.attention,
                  activation_dtype=jnp.dtype(self.activation_dtype))
    self.image_tower = ViT(**self.image, **shared)
    self.text_tower = TextTransformer(**self.text, **shared)
    # The heads run in float32: they are cheap and the embeddings feed the loss.
    if self.image_projection:
      self.image_proj = self._projection()
    elif self.image["width"] != self.embed_dim:
      raise errors.UserError(f"model.image_projection=False makes the image tower's output the "
                             f"embedding, but model.image.width={self.image['width']} is not "
                             f"model.embed_dim={self.embed_dim}; set one to the other")
    self.text_proj = self._projection()
    self.log_scale, self.bias = logit_scale_and_bias(self, self.init_log_scale, self.init_bias)

  def _projection(self):
    return joint_projection(self.embed_dim, use_bias=self.proj_bias)

  def encode_image(self, images, train: bool = False):
    """images [B, H, W, C] -> unit-norm float32 [B, E]; `train` turns on patch dropout."""
    pooled = self.image_tower(images, train)
    return l2_normalize(self.image_proj(pooled) if self.image_projection else pooled)

  def encode_text(self, tokens):
    """tokens int [B, L] (0 = pad) -> unit-norm float32 [B, E]."""
    return l2_normalize(self.text_proj(self.text_tower(tokens)))

  def __call__(self, images, tokens, train: bool = False):
    """Returns (zimg [B, E], ztxt [B, E], {'log_scale': [], 'bias': []}); 'bias' only with init_bias.

    With `train` (and image.patch_dropout > 0) the call needs rngs={'patch_dropout': key}.
    """
    aux = {"log_scale": self.log_scale}
    if self.init_bias is not None:
      aux["bias"] = self.bias
    return self.encode_image(images, train), self.encode_text(tokens), aux
