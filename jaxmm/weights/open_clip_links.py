"""The parameter table of open_clip's ViT CLIP <-> jaxmm's two-tower (`jaxmm.weights.links`).

torch's Linear weights [out, in] are jaxmm's kernels [in, out], heads split
out. Where the two models differ in form but not in function, the import
folds: the key bias of the fused q/k/v projection is dropped (it adds q·b_k
to a whole row of logits, which the softmax ignores, so jaxmm's attention has
none); the class token's position embedding is added into jaxmm's class
token, which has none (the sum open_clip computes on every call, done once);
the patch embedding's bias, which open_clip lacks, is zero. An export writes
a zero key bias and a zero class position, and adds jaxmm's patch bias into
the position embeddings.
"""
import math

import jax.numpy as jnp
import numpy as np

from jaxmm.weights.links import Link, same


def _torch_weight(kernel, num_in):
  """A jaxmm kernel [*in, *out] as torch's Linear weight [out, in]."""
  return kernel.reshape(math.prod(kernel.shape[:num_in]), -1).T


def _position_table(peer: str, param: str) -> Link:
  """open_clip's [L, D] position embeddings <-> jaxmm's [1, L, D]."""
  return Link((peer,), (param,), lambda p: (p[0],), lambda t, shapes: (t.reshape(shapes[0]),))


def _layer_norm(peer: str, param: str) -> list[Link]:
  return [same(f"{peer}.weight", f"{param}/scale"), same(f"{peer}.bias", f"{param}/bias")]


def _linear(peer: str, param: str, num_in: int = 1) -> list[Link]:
  """torch's Linear weight [out, in] and bias <-> a `transformer.Dense` of `num_in` in axes."""
  weight = Link((f"{peer}.weight",), (f"{param}/kernel",),
                lambda kernel: (_torch_weight(kernel, num_in),),
                lambda weight, shapes: (weight.T.reshape(shapes[0]),))
  bias = Link((f"{peer}.bias",), (f"{param}/bias",), lambda b: (b.reshape(-1),),
              lambda b, shapes: (b.reshape(shapes[0]),))
  return [weight, bias]


def _fused_qkv(peer: str, param: str) -> Link:
  """nn.MultiheadAttention's in_proj [3D, D] and its bias [3D] <-> the query, key and value
  kernels [D, H, K] and the query and value biases (the key bias is dropped: module docstring)."""

  def to_peer(query, key, value, query_bias, value_bias):
    weight = jnp.concatenate([_torch_weight(kernel, 1) for kernel in (query, key, value)])
    query_bias, value_bias = query_bias.reshape(-1), value_bias.reshape(-1)
    return weight, jnp.concatenate([query_bias, jnp.zeros_like(query_bias), value_bias])

  def from_peer(weight, bias, shapes):
    kernels = [w.T.reshape(shape) for w, shape in zip(np.split(weight, 3), shapes)]
    query_bias, _, value_bias = np.split(bias, 3)
    return (*kernels, query_bias.reshape(shapes[3]), value_bias.reshape(shapes[4]))

  kernels = tuple(f"{param}/{name}/kernel" for name in ("query", "key", "value"))
  return Link((f"{peer}.in_proj_weight", f"{peer}.in_proj_bias"),
              kernels + (f"{param}/query/bias", f"{param}/value/bias"), to_peer, from_peer)


def _vision_embedding() -> list[Link]:
  """The class token and position embeddings (folded: module docstring), and the patch
  embedding, a stride-p convolution [D, 3, p, p] <-> jaxmm's kernel [p, p, 3, D]."""

  def to_peer(cls, pos, patch_bias):
    width = cls.shape[-1]
    return cls.reshape(width), jnp.concatenate([jnp.zeros((1, width), pos.dtype),
                                                pos[0] + patch_bias])

  def from_peer(class_embedding, positional_embedding, shapes):
    cls = class_embedding + positional_embedding[0]  # the class token's input, as open_clip sums it
    return (cls.reshape(shapes[0]), positional_embedding[1:].reshape(shapes[1]),
            np.zeros(shapes[2], np.float32))

  return [
      Link(("visual.class_embedding", "visual.positional_embedding"),
           ("image_tower/cls", "image_tower/pos_embedding", "image_tower/patch_embed/bias"),
           to_peer, from_peer),
      Link(("visual.conv1.weight",), ("image_tower/patch_embed/kernel",),
           lambda kernel: (kernel.transpose(3, 2, 0, 1),),
           lambda weight, shapes: (weight.transpose(2, 3, 1, 0).reshape(shapes[0]),)),
  ]


def _blocks(peer: str, param: str, depth: int) -> list[Link]:
  table = []
  for i in range(depth):
    block, ours = f"{peer}.{i}", f"{param}/block_{i}"
    table += _layer_norm(f"{block}.ln_1", f"{ours}/ln_attn")
    table += [_fused_qkv(f"{block}.attn", f"{ours}/attn")]
    table += _linear(f"{block}.attn.out_proj", f"{ours}/attn/out", num_in=2)
    table += _layer_norm(f"{block}.ln_2", f"{ours}/ln_mlp")
    table += _linear(f"{block}.mlp.c_fc", f"{ours}/mlp/fc1")
    table += _linear(f"{block}.mlp.c_proj", f"{ours}/mlp/fc2")
  return table


def links(model) -> list[Link]:
  """The table of open_clip's CLIP state dict <-> jaxmm's params for config.model `model`
  (one that `run_settings` wrote, or that `model_config` accepts)."""
  table = _vision_embedding()
  if model.image.get("ln_pre", False):
    table += _layer_norm("visual.ln_pre", "image_tower/ln_pre")
  table += _blocks("visual.transformer.resblocks", "image_tower/encoder", model.image.depth)
  table += _layer_norm("visual.ln_post", "image_tower/ln_final")
  table += [same("visual.proj", "image_proj/kernel")]
  table += [
      same("token_embedding.weight", "text_tower/token_embed/embedding"),
      _position_table("positional_embedding", "text_tower/pos_embedding")
  ]
  table += _blocks("transformer.resblocks", "text_tower/encoder", model.text.depth)
  table += _layer_norm("ln_final", "text_tower/ln_final")
  table += [same("text_projection", "text_proj/kernel"), same("logit_scale", "log_scale")]
  if model.init_bias is not None:
    table += [same("logit_bias", "bias")]
  return table
