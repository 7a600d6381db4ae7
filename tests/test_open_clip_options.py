"""The model and data options that open_clip's CLIPs need, each on its own, against references."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmm import data
from jaxmm.data import preprocess
from jaxmm.errors import UserError
from jaxmm.models import transformer
from jaxmm.models.text import TextTransformer
from jaxmm.models.two_tower import TwoTower
from jaxmm.models.vit import ViT

U = 2.0**-24  # float32's unit roundoff
TEXT = dict(vocab_size=50, width=16, depth=2, num_heads=2, mlp_dim=32, max_len=8)
IMAGE = dict(patch_size=4, width=16, depth=1, num_heads=2, mlp_dim=32, pool="cls")


def _x(shape, seed=0, scale=3.0):
  return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


def _phi(x):
  """The standard normal CDF in float64."""
  return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@pytest.mark.parametrize("name,reference", [
    ("quick_gelu", lambda x: x / (1 + np.exp(-1.702 * x))),
    ("gelu", lambda x: x * _phi(x)),
    ("gelu_tanh", lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) *
                                                   (x + 0.044715 * x**3)))),
])
def test_activations_match_float64_formulas(name, reference):
  x = _x((4096,))
  got = np.asarray(transformer.ACTIVATIONS[name](jnp.asarray(x)), np.float64)
  # A few float32 roundings of a value of size |x|, and of exp/erf/tanh (each within 2 ulps).
  np.testing.assert_allclose(got, reference(x.astype(np.float64)), rtol=16 * U, atol=16 * U)


def test_erf_and_tanh_gelu_differ_beyond_rounding():
  x = jnp.linspace(-4, 4, 801)
  erf, tanh = (transformer.ACTIVATIONS[name](x) for name in ("gelu", "gelu_tanh"))
  gap = jnp.max(jnp.abs(erf - tanh))
  assert gap > 1e-4  # why an imported model keeps the GELU it trained with


def test_mlp_applies_its_activation():
  x = _x((2, 3, 8), scale=1.0)
  mlp = transformer.MlpBlock(16, activation="quick_gelu")
  params = nn.unbox(mlp.init(jax.random.key(0), x)["params"])
  fc1, fc2 = (jax.tree.map(lambda a: np.asarray(a, np.float64), params[k]) for k in ("fc1", "fc2"))
  h = x.astype(np.float64) @ fc1["kernel"] + fc1["bias"]
  expected = (h / (1 + np.exp(-1.702 * h))) @ fc2["kernel"] + fc2["bias"]
  # Two products of at most 16 terms of size ~1: 16 roundings each, with margin.
  np.testing.assert_allclose(mlp.apply({"params": params}, x), expected, atol=64 * 16 * U)


def test_unknown_activation_lists_the_known_ones():
  with pytest.raises(UserError, match="activation='relu' is not one of 'gelu_tanh', 'gelu', "):
    transformer.activation_fn("relu")


def test_layer_norm_epsilon_matches_float64():
  x = _x((3, 16), scale=3e-3)  # variance ~1e-5, where eps 1e-5 and 1e-6 differ
  mean, var = x.mean(-1, keepdims=True), x.astype(np.float64).var(-1, keepdims=True)
  outputs = {}
  for eps in (1e-5, 1e-6):
    ln = transformer.layer_norm(eps=eps)
    outputs[eps] = np.asarray(ln.apply(ln.init(jax.random.key(0), x), x))
    # Normalised values of size ~3, each within a few roundings (statistics in float32).
    np.testing.assert_allclose(outputs[eps], (x - mean) / np.sqrt(var + eps), atol=64 * 3 * U)
  assert np.abs(outputs[1e-5] - outputs[1e-6]).max() > 0.1


def _apply(module, *inputs, params=None):
  """(outputs, params) of `module` on `inputs` (initialised when `params` is None). Jitted: each
  call compiles the module once, where an op-by-op call compiles each of its operations."""
  if params is None:
    params = nn.unbox(jax.jit(lambda: module.init(jax.random.key(0), *inputs))())
  return np.asarray(jax.jit(lambda p: module.apply(p, *inputs))(params)), params


def test_causal_encoder_outputs_do_not_see_later_tokens():
  x = _x((2, 6, 16), scale=1.0)
  changed = x.copy()
  changed[:, 4:] = _x((2, 2, 16), seed=1, scale=1.0)
  for causal in (True, False):
    encoder = transformer.Encoder(2, 2, 32)
    before, params = _apply(encoder, x, None, causal)
    after, _ = _apply(encoder, changed, None, causal, params=params)
    unchanged = np.array_equal(before[:, :4], after[:, :4])
    assert unchanged == causal


def _tokens(*rows):
  return jnp.asarray(rows, jnp.int32)


def test_eot_pooling_reads_the_largest_id_of_a_causal_tower():
  tower = TextTransformer(**TEXT, pool="eot", causal=True)
  # id 49 (the largest) ends the text at position 3; what follows cannot reach it.
  tokens = _tokens([5, 0, 7, 49, 3, 3, 9, 1])
  out, params = _apply(tower, tokens)
  prefix, _ = _apply(tower, tokens[:, :4], params=params)
  padded, _ = _apply(tower, _tokens([5, 0, 7, 49, 0, 0, 0, 0]), params=params)
  # The same sums over the same 4 tokens, up to the order XLA takes for other lengths.
  np.testing.assert_allclose(out, prefix, atol=1e-6)
  np.testing.assert_allclose(out, padded, atol=1e-6)


def test_a_causal_tower_reads_the_pad_id_inside_a_text():
  # Id 0 pads, but in CLIP's vocabulary it is also '!': a causal tower masks no key for it.
  tower = TextTransformer(**TEXT, pool="eot", causal=True)
  tokens = _tokens([5, 0, 7, 49, 0, 0, 0, 0])
  out, params = _apply(tower, tokens)
  embed = params["params"]["token_embed"]["embedding"]
  params["params"]["token_embed"]["embedding"] = embed.at[0].add(1.0)
  other, _ = _apply(tower, tokens, params=params)
  # A masked key would leave the output the same to the bit.
  assert np.abs(other - out).max() > 1e-6


def test_eot_pooling_picks_the_first_of_equal_largest_ids():
  tower = TextTransformer(**TEXT, pool="eot", causal=True)
  out, params = _apply(tower, _tokens([5, 49, 7, 49, 0, 0, 0, 0]))
  first, _ = _apply(tower, _tokens([5, 49]), params=params)
  np.testing.assert_allclose(out, first, atol=1e-6)


def test_bidirectional_eot_pooling_sees_the_whole_text():
  tower = TextTransformer(**TEXT, pool="eot", causal=False)
  out, params = _apply(tower, _tokens([5, 2, 7, 49, 3, 0, 0, 0]))
  later, _ = _apply(tower, _tokens([5, 2, 7, 49, 4, 0, 0, 0]), params=params)
  assert np.abs(later - out).max() > 1e-3


def test_unknown_text_pool_names_the_key():
  with pytest.raises(UserError, match="model.text.pool='max' is not one of 'mean', 'eot'"):
    _apply(TextTransformer(**TEXT, pool="max"), _tokens([1, 2]))


def _scaled_embeddings(params, factor):
  """The ViT's token embeddings (patches, their bias, positions, class token) times `factor`."""
  inner = dict(params["params"])
  for name in ("patch_embed", "pos_embedding", "cls"):
    inner[name] = jax.tree.map(lambda a: a * factor, inner[name])
  return {"params": inner}


@pytest.mark.parametrize("ln_pre", [True, False])
def test_ln_pre_normalises_the_tokens_before_the_encoder(ln_pre):
  images = _x((2, 8, 8, 3), scale=1.0)
  vit = ViT(**IMAGE, ln_pre=ln_pre)
  params = nn.unbox(jax.jit(vit.init)(jax.random.key(0), images))
  params["params"]["cls"] = _x((1, 1, 16), seed=2, scale=1.0)
  out, _ = _apply(vit, images, params=params)
  scaled, _ = _apply(vit, images, params=_scaled_embeddings(params, 10.0))
  # LN(10·x) = LN(x) up to eps / var(x) ~ 1e-6 of the tokens' variance (~1).
  assert np.allclose(out, scaled, atol=1e-4) == ln_pre
  assert ("ln_pre" in params["params"]) == ln_pre


def test_projections_without_bias():
  model = TwoTower(image=IMAGE, text=TEXT, embed_dim=8, proj_bias=False, init_bias=None)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                          _tokens([1, 2]))["params"]
  assert set(params["image_proj"]) == set(params["text_proj"]) == {"kernel"}


def test_mean_std_normalisation_matches_float64():
  pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
  mean, std = (0.48, 0.45, 0.40), (0.26, 0.26, 0.27)
  expected = (pixels / 255.0 - np.asarray(mean)) / np.asarray(std)
  got = preprocess.normalize(pixels, mean, std)
  assert got.dtype == np.float32
  # Three float32 roundings of values up to 1 / 0.26 ~ 4.
  np.testing.assert_allclose(got, expected, rtol=0, atol=4 * 4 * U)


def test_mean_without_std_says_to_set_both():
  with pytest.raises(UserError, match="data.image_mean and data.image_std go together"):
    preprocess.normalize(np.zeros((1, 2, 2, 3), np.uint8), (0.5,) * 3, None)


@pytest.mark.parametrize("source", ["tfds", "wds"])
def test_the_pipeline_normalises_with_the_data_configs_mean_and_std(shapes_data_dir, shapes_shards,
                                                                    source):
  mean, std = (0.48, 0.45, 0.40), (0.26, 0.26, 0.27)
  config = ml_collections.ConfigDict(
      dict(name="shapes", data_dir=shapes_data_dir, train_split="test", eval_split="test",
           image_size=32, max_len=48, tokenizer="bytes", augment=False, image_mean=mean,
           image_std=std))
  if source != "tfds":
    config.update(source=source, files=shapes_shards[source], eval_files=shapes_shards[source],
                  image_key="png", text_key="txt")
  batch = next(iter(data.eval_batches(config, split="test[:64]", batch_size=64)))
  stored = data.data_source("shapes", "test", data_dir=shapes_data_dir)
  pixels = np.stack([stored[i]["image"] for i in range(64)])
  # The stored 32 px images, unresized: three float32 roundings of values up to 1 / 0.26 ~ 4.
  np.testing.assert_allclose(batch["image"], (pixels / 255.0 - np.asarray(mean)) / np.asarray(std),
                             rtol=0, atol=4 * 4 * U)
