"""CatLIP's model (Mehta et al. 2024): a ViT image tower and one linear layer of label logits."""
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from jaxmm.models.transformer import partitioned
from jaxmm.models.two_tower import l2_normalize
from jaxmm.models.vit import ViT


class CatLIP(nn.Module):
  """ViT -> Dense to `num_labels` logits, one per word of the caption vocabulary.

  There is no text tower: the captions become multi-hot targets
  (`jaxmm.data.caption_labels`). The tower is named `image_tower` as in
  `TwoTower`, so `init_from` copies it between CatLIP and SigLIP runs.

  Attributes:
    image: ViT keyword arguments (patch_size, width, depth, num_heads, mlp_dim, pool).
    num_labels: V, the size of the label vocabulary.
    dtype: operand dtype of the tower's matrix products; parameters and logits are float32.
    activation_dtype: dtype of the tower's residual stream (`jaxmm.models.transformer`).
    remat: recompute each transformer block in the backward pass.
    attention: how the tower computes attention, one of transformer.ATTENTION.
  """
  image: Mapping[str, Any]
  num_labels: int
  dtype: Any = jnp.float32
  remat: bool = False
  attention: str = "xla"
  activation_dtype: Any = jnp.float32

  def setup(self):
    self.image_tower = ViT(**self.image,
                           dtype=jnp.dtype(self.dtype),
                           remat=self.remat,
                           attention=self.attention,
                           activation_dtype=jnp.dtype(self.activation_dtype))
    # Zero-initialised, as big_vision's classification heads: every label starts at
    # probability 1/2 and the first steps move the head, not the tower.
    self.head = nn.Dense(self.num_labels,
                         dtype=jnp.float32,
                         kernel_init=partitioned(nn.initializers.zeros, ("embed", "vocab")),
                         bias_init=partitioned(nn.initializers.zeros, ("vocab",)))

  def encode_image(self, images, train: bool = False):
    """images [B, H, W, C] -> the tower's pooled features, unit-norm float32 [B, width]: the
    representation that the linear probe and k-NN read."""
    return l2_normalize(self.image_tower(images, train))

  def __call__(self, images, train: bool = False):
    """images [B, H, W, C] -> label logits float32 [B, num_labels].

    With `train` (and image.patch_dropout > 0) the call needs rngs={'patch_dropout': key}.
    """
    return self.head(self.image_tower(images, train))
