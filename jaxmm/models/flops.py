"""Forward-pass matmul FLOPs per example, for model FLOPs utilisation (MFU).

Counts 2·M·N·K for every matrix product, attention scores and weighted sums
included; elementwise work (LayerNorm, GELU, softmax) and embedding lookups are
left out, as in the PaLM appendix B convention. A training step costs about
3× the forward pass (one forward, two matmuls per matmul in the backward).
"""
from typing import Any, Mapping, Optional, Sequence, Union

from jaxmm.models.patch_dropout import kept_count


def encoder_flops(length: int, width: int, depth: int, mlp_dim: int) -> int:
  """One example through `depth` pre-LN blocks of L tokens of width D, MLP width M.

  Per block: q, k, v and output projections 8·L·D², scores q·kᵀ and the
  weighted sum of values 4·L²·D, MLP 4·L·D·M.
  """
  per_block = 8 * length * width**2 + 4 * length**2 * width + 4 * length * width * mlp_dim
  return depth * per_block


def conv_stem_flops(h: int, w: int, channels: int, patch_size: int, width: int) -> int:
  """The ViT's ConvStem: log2(p) stride-2 3×3 convolutions, then a 1×1 projection."""
  layers = patch_size.bit_length() - 1
  flops = 0
  for i in range(layers):
    h, w = -(-h // 2), -(-w // 2)
    out = width >> (layers - i)
    flops += 2 * h * w * 9 * channels * out
    channels = out
  return flops + 2 * h * w * channels * width


def vit_flops(image_size: Union[int, Sequence[int]],
              channels: int,
              patch_size: int,
              width: int,
              depth: int,
              mlp_dim: int,
              pool: str = "gap",
              stem: str = "patch",
              patch_dropout: float = 0.0,
              train: bool = False,
              **unused) -> int:
  """One image [H, W, C] through the ViT tower (stem, encoder, pooling head).

  With `train`, the encoder and the pooling head see only the ⌊(1 − patch_dropout)·N⌋
  patches FLIP keeps (`jaxmm.models.patch_dropout`); the stem embeds all N.
  """
  del unused  # num_heads does not change the count: heads·kv = width.
  h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
  patches = (h // patch_size) * (w // patch_size)
  if stem == "conv":
    flops = conv_stem_flops(h, w, channels, patch_size, width)
  else:
    flops = 2 * patches * (patch_size**2 * channels) * width
  tokens = kept_count(patches, patch_dropout) if train else patches
  flops += encoder_flops(tokens + (pool == "cls"), width, depth, mlp_dim)
  if pool == "map":
    # One query over `tokens` keys: q and out projections on 1 token, k and v on all.
    flops += 4 * width**2 + 4 * tokens * width**2 + 4 * tokens * width + 4 * width * mlp_dim
  return flops


def text_flops(length: int, width: int, depth: int, mlp_dim: int, **unused) -> int:
  """One sequence of `length` tokens through the text tower (the embedding is a lookup)."""
  del unused
  return encoder_flops(length, width, depth, mlp_dim)


def two_tower_flops(config_model: Mapping[str, Any],
                    image_size,
                    text_len: Optional[int] = None,
                    channels: int = 3,
                    train: bool = False) -> int:
  """Both towers and both projections to embed_dim for one (image, text) pair; `train` counts
  the image tokens a training step keeps after patch dropout."""
  image, text, embed_dim = config_model["image"], config_model["text"], config_model["embed_dim"]
  text_len = text["max_len"] if text_len is None else text_len
  projected = text["width"] + (image["width"] if config_model.get("image_projection", True) else 0)
  return (vit_flops(image_size, channels, train=train, **image) + text_flops(text_len, **text) +
          2 * projected * embed_dim)


_FLOPS = {
    "two_tower": two_tower_flops,
}


def model_flops_per_example(config_model: Mapping[str, Any], **inputs) -> int:
  """Forward FLOPs of `config.model` per example; `inputs` are the shape arguments of its counter.

  For 'two_tower': image_size (int or (H, W)), text_len (default max_len), channels (default 3),
  train (default False: evaluation; True: a training forward, after FLIP's patch dropout).
  """
  return _FLOPS[config_model["name"]](config_model, **inputs)
