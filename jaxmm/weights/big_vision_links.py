"""The parameter table of big_vision's two-tower SigLIP <-> jaxmm's two-tower (`links`).

big_vision's parameters are flax's, named by its modules (`models/vit.py`,
`models/proj/image_text/text_transformer.py`, `two_towers.py`) and held in
its .npz checkpoints under '/'-joined keys: 'img/...' the ViT, 'txt/...' the
text transformer, 't' the log of the logit scale, 'b' the logit bias. Their
kernels have jaxmm's layouts ([in, out], heads split out, the patch
embedding [p, p, 3, D]), so every link but two is a rename: the attention's
key bias is dropped on import (it adds q·b_k to a whole row of logits, which
the softmax ignores; jaxmm's attention has none) and exported as zero, and
the scalars t and b are [1] there, [] here.
"""
import jax.numpy as jnp

from jaxmm.weights.links import Link, same


def _scalar(peer: str, param: str) -> Link:
  """big_vision's [1] <-> jaxmm's []."""
  return Link((peer,), (param,), lambda p: (p.reshape(1),), lambda t, shapes: (t.reshape(()),))


def _layer_norm(peer: str, param: str) -> list[Link]:
  return [same(f"{peer}/scale", f"{param}/scale"), same(f"{peer}/bias", f"{param}/bias")]


def _dense(peer: str, param: str) -> list[Link]:
  return [same(f"{peer}/kernel", f"{param}/kernel"), same(f"{peer}/bias", f"{param}/bias")]


def _attention(peer: str, param: str) -> list[Link]:
  """flax's MultiHeadDotProductAttention <-> `transformer.MultiHeadAttention` (the key bias is
  dropped: module docstring)."""
  key = Link((f"{peer}/key/kernel", f"{peer}/key/bias"), (f"{param}/key/kernel",),
             lambda kernel: (kernel, jnp.zeros(kernel.shape[1:], kernel.dtype)),
             lambda kernel, bias, shapes: (kernel.reshape(shapes[0]),))
  return _dense(f"{peer}/query", f"{param}/query") + [key] + _dense(
      f"{peer}/value", f"{param}/value") + _dense(f"{peer}/out", f"{param}/out")


def _mlp(peer: str, param: str) -> list[Link]:
  return _dense(f"{peer}/Dense_0", f"{param}/fc1") + _dense(f"{peer}/Dense_1", f"{param}/fc2")


def _encoder(peer: str, param: str, depth: int) -> list[Link]:
  """vit.Encoder's blocks (not its final norm) <-> `transformer.Encoder`'s."""
  table = []
  for i in range(depth):
    block, ours = f"{peer}/encoderblock_{i}", f"{param}/block_{i}"
    table += _layer_norm(f"{block}/LayerNorm_0", f"{ours}/ln_attn")
    table += _attention(f"{block}/MultiHeadDotProductAttention_0", f"{ours}/attn")
    table += _layer_norm(f"{block}/LayerNorm_1", f"{ours}/ln_mlp")
    table += _mlp(f"{block}/MlpBlock_0", f"{ours}/mlp")
  return table


def _image(model) -> list[Link]:
  image = model.image
  table = _dense("img/embedding", "image_tower/patch_embed")
  table += [same("img/pos_embedding", "image_tower/pos_embedding")]
  if image.pool == "cls":
    table += [same("img/cls", "image_tower/cls")]
  table += _encoder("img/Transformer", "image_tower/encoder", image.depth)
  table += _layer_norm("img/Transformer/encoder_norm", "image_tower/ln_final")
  if image.pool == "map":
    table += [same("img/MAPHead_0/probe", "image_tower/map_head/probe")]
    table += _attention("img/MAPHead_0/MultiHeadDotProductAttention_0",
                        "image_tower/map_head/attn")
    table += _layer_norm("img/MAPHead_0/LayerNorm_0", "image_tower/map_head/ln")
    table += _mlp("img/MAPHead_0/MlpBlock_0", "image_tower/map_head/mlp")
  if model.get("image_projection", True):
    table += _dense("img/head", "image_proj")
  return table


def links(model) -> list[Link]:
  """The table of big_vision's two-tower parameters <-> jaxmm's params for config.model
  `model` (one that `big_vision.run_settings` wrote, or that `big_vision.model_config`
  accepts), in the order big_vision's checkpoints list them."""
  table = _image(model)
  table += [same("txt/Embed_0/embedding", "text_tower/token_embed/embedding"),
            same("txt/pos_embedding", "text_tower/pos_embedding")]
  table += _encoder("txt/Encoder_0", "text_tower/encoder", model.text.depth)
  table += _layer_norm("txt/Encoder_0/encoder_norm", "text_tower/ln_final")
  table += _dense("txt/head", "text_proj")
  table += [_scalar("t", "log_scale")]
  if model.init_bias is not None:
    table += [_scalar("b", "bias")]
  return table
