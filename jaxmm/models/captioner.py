"""Image captioner: a ViT whose tokens a text decoder reads (CapPa), optionally with a
contrastive head (CoCa).

CapPa (Tschannen et al. 2023): the ViT's patch tokens are the decoder's
cross-attention memory, and the captioning loss is the only one. CoCa (Yu et
al. 2022): the same, plus the mean of the image tokens and the decoder's
unimodal text feature, each projected to `embed_dim` and L2-normalised, for a
contrastive loss (`jaxmm.models.text_decoder`); `embed_dim` None leaves the
contrastive head out.
"""
import math
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax.numpy as jnp

from jaxmm import errors
from jaxmm.models.text_decoder import TextDecoder
from jaxmm.models.two_tower import joint_projection, l2_normalize, logit_scale_and_bias
from jaxmm.models.vit import ViT


class Captioner(nn.Module):
  """ViT (pool 'none': every token) and `TextDecoder`, and CoCa's contrastive head.

  Attributes:
    image: ViT keyword arguments; its pool must be 'none' (the decoder reads every token).
    decoder: TextDecoder keyword arguments (vocab_size, width, depth, unimodal_depth,
      num_heads, mlp_dim, max_len, pad_id).
    embed_dim: the contrastive embedding's dimension E (CoCa); None: no contrastive head.
    dtype, activation_dtype, remat, attention: as `TwoTower`'s, for both towers.
    init_log_scale, init_bias: the contrastive logits' scale and bias, as `TwoTower`'s.
  """
  image: Mapping[str, Any]
  decoder: Mapping[str, Any]
  embed_dim: Optional[int] = None
  dtype: Any = jnp.float32
  remat: bool = False
  attention: str = "xla"
  activation_dtype: Any = jnp.float32
  init_log_scale: float = math.log(10.0)
  init_bias: Optional[float] = -10.0

  def setup(self):
    if self.image.get("pool") != "none":
      raise errors.UserError(f"model.image.pool={self.image.get('pool')!r}: a captioner's "
                             "decoder reads every image token; set --config.model.image.pool=none")
    shared = dict(dtype=jnp.dtype(self.dtype),
                  remat=self.remat,
                  attention=self.attention,
                  activation_dtype=jnp.dtype(self.activation_dtype))
    self.image_tower = ViT(**self.image, **shared)
    self.text_decoder = TextDecoder(**self.decoder, image_width=self.image["width"], **shared)
    if self.embed_dim is None:
      return
    if not self.decoder.get("unimodal_depth"):
      raise errors.UserError("a contrastive head (model.embed_dim) reads the decoder's unimodal "
                             "layers: set --config.model.decoder.unimodal_depth to 1 or more")
    self.image_proj = joint_projection(self.embed_dim)
    self.text_proj = joint_projection(self.embed_dim)
    self.log_scale, self.bias = logit_scale_and_bias(self, self.init_log_scale, self.init_bias)

  def image_tokens(self, images, train: bool = False):
    """images [B, H, W, C] -> the ViT's tokens [B, N, image.width]."""
    return self.image_tower(images, train)

  def _image_embedding(self, tokens):
    """Image tokens [B, N, D] -> unit-norm float32 [B, E] (the projected mean with a contrastive
    head; the mean itself without, for probes)."""
    pooled = jnp.mean(tokens.astype(jnp.float32), axis=1)
    return l2_normalize(self.image_proj(pooled) if self.embed_dim is not None else pooled)

  def encode_image(self, images, train: bool = False):
    """images [B, H, W, C] -> unit-norm float32 [B, E] (module docstring)."""
    return self._image_embedding(self.image_tokens(images, train))

  def encode_text(self, tokens):
    """tokens int [B, L] -> unit-norm float32 [B, E]: the unimodal text feature, projected."""
    return l2_normalize(self.text_proj(self.text_decoder.text_features(tokens)))

  def logits(self, image_tokens, tokens):
    """Image tokens [B, N, D], tokens int [B, L] -> logits [B, L, V], position i predicting
    tokens[:, i] from tokens[:, :i] (what decoding calls)."""
    return self.text_decoder(tokens, image_tokens)[0]

  def __call__(self, images, tokens, parallel=None, train: bool = False):
    """images [B, H, W, C], tokens int [B, L], parallel bool [B] or None (CapPa's parallel
    prediction) -> {'logits': [B, L, V]}, and with a contrastive head also 'zimg', 'ztxt' [B, E],
    'log_scale' [] and 'bias' [] (with init_bias)."""
    image_tokens = self.image_tokens(images, train)
    logits, text_features = self.text_decoder(tokens, image_tokens, parallel)
    out = {"logits": logits}
    if self.embed_dim is not None:
      out.update(zimg=self._image_embedding(image_tokens),
                 ztxt=l2_normalize(self.text_proj(text_features)),
                 log_scale=self.log_scale)
      if self.init_bias is not None:
        out["bias"] = self.bias
    return out
