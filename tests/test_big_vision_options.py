"""The model options that big_vision's SigLIPs need, each on its own, against references."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmm.errors import UserError
from jaxmm.models import model_flops_per_example
from jaxmm.models.text import TextTransformer
from jaxmm.models.two_tower import TwoTower

U = 2.0**-24  # float32's unit roundoff
EOS = 1
TEXT = dict(vocab_size=50, width=16, depth=1, num_heads=2, mlp_dim=32, max_len=8, pad_id=EOS)
IMAGE = dict(patch_size=4, width=16, depth=1, num_heads=2, mlp_dim=32, pool="map")


def _layer_norm(x, p, eps=1e-6):
  x = x - x.mean(-1, keepdims=True)
  return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * p["scale"] + p["bias"]


def _text_last_reference(params, tokens):
  """float64 NumPy: embeddings, one pre-LN block attending to every position (pads too), the
  final LayerNorm, the last position's output."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = p["token_embed"]["embedding"][tokens] + p["pos_embedding"][:, :tokens.shape[1]]
  block = p["encoder"]["block_0"]
  attn = block["attn"]
  h = _layer_norm(x, block["ln_attn"])
  q = np.einsum("bld,dhk->blhk", h, attn["query"]["kernel"]) + attn["query"]["bias"]
  k = np.einsum("bld,dhk->blhk", h, attn["key"]["kernel"])
  v = np.einsum("bld,dhk->blhk", h, attn["value"]["kernel"]) + attn["value"]["bias"]
  logits = np.einsum("blhk,bshk->bhls", q, k) / math.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  o = np.einsum("bhls,bshk->blhk", weights, v)
  x = x + np.einsum("blhk,hkd->bld", o, attn["out"]["kernel"]) + attn["out"]["bias"]
  h = _layer_norm(x, block["ln_mlp"])
  mlp = block["mlp"]
  h = h @ mlp["fc1"]["kernel"] + mlp["fc1"]["bias"]
  h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
  x = x + h @ mlp["fc2"]["kernel"] + mlp["fc2"]["bias"]
  return _layer_norm(x, p["ln_final"])[:, -1]


def test_last_pooling_without_pad_mask_reads_pads_as_big_vision_does():
  tokens = np.array([[7, 3, 9, EOS, EOS, EOS, EOS, EOS], [4, 4, 12, 30, 2, 8, 11, EOS]], np.int32)
  tower = TextTransformer(**TEXT, pool="last", mask_pad=False)
  params = nn.unbox(jax.jit(tower.init)(jax.random.key(0), tokens)["params"])
  # Random biases and LayerNorms, so that no parameter sits at 0 or 1.
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(0)
  params = tree.unflatten([a + 0.2 * rng.standard_normal(a.shape).astype(np.float32)
                           for a in leaves])
  got = np.asarray(jax.jit(tower.apply)({"params": params}, tokens), np.float64)
  # Outputs of the final LayerNorm (size ~1) after 7 products in sequence of at most 32 terms:
  # √7·√32·u ≈ 15u of rounding in each, amplified at most ~10x by the LayerNorms' 1/σ; 512u.
  np.testing.assert_allclose(got, _text_last_reference(params, tokens), rtol=0, atol=512 * U)
  masked = jax.jit(TextTransformer(**TEXT, pool="last", mask_pad=True).apply)({"params": params},
                                                                             tokens)
  assert np.abs(np.asarray(masked) - got).max() > 1e-2  # pads as keys change the first text


def _two_tower(**kw):
  return dict(name="two_tower", embed_dim=16, image=IMAGE, text=dict(TEXT, pool="last",
                                                                     mask_pad=False), **kw)


def test_without_image_projection_the_pooled_vector_is_the_embedding():
  model = TwoTower(**{k: v for k, v in _two_tower(image_projection=False).items() if k != "name"})
  images, tokens = np.random.default_rng(1).normal(size=(2, 8, 8, 3)), np.ones((2, 8), np.int32)
  variables = jax.jit(model.init)(jax.random.key(0), images, tokens)
  assert "image_proj" not in variables["params"]
  pooled, embedded = jax.jit(lambda v, x: (model.apply(v, x, method=lambda m, x: m.image_tower(x)),
                                           model.apply(v, x, method=model.encode_image)))(
                                               variables, images)
  pooled = np.asarray(pooled, np.float64)
  expected = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
  # A division and a float32 sum of 16 squares: a few u on unit-norm entries.
  np.testing.assert_allclose(embedded, expected, rtol=0, atol=8 * U)


def test_an_unprojected_image_tower_needs_the_embedding_width():
  model = TwoTower(**{k: v for k, v in _two_tower(image_projection=False).items() if k != "name"
                      and k != "embed_dim"}, embed_dim=24)
  with pytest.raises(UserError, match="model.image.width=16 is not model.embed_dim=24"):
    model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), jnp.ones((1, 8), jnp.int32))


def test_flops_leave_out_the_missing_image_projection():
  with_projection = ml_collections.ConfigDict(_two_tower())
  without = ml_collections.ConfigDict(_two_tower(image_projection=False))
  flops = lambda config: model_flops_per_example(config, image_size=8)
  # The image projection: one [1, 16] x [16, 16] product, 2·16·16 FLOPs.
  assert flops(with_projection) - flops(without) == 2 * 16 * 16
