"""Tests for jaxmm.models: shapes, logical axes, sharding, remat, dtypes, masking, references, FLOPs."""
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmm.models import get_model, matmul, model_flops_per_example
from jaxmm.models.transformer import EncoderBlock, dot_product_attention

PARAM_AXES = {"embed", "mlp", "heads", "kv", "vocab", "joint", None}
RULES = [("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"),
         ("vocab", "tensor"), ("kv", None), ("joint", None), ("length", None), ("act_embed", None),
         ("act_mlp", "tensor"), ("act_heads", "tensor")]
BATCH, IMAGE_SIZE, MAX_LEN = 8, 16, 16


def tiny_config(**overrides):
  config = ml_collections.ConfigDict(
      dict(name="two_tower",
           embed_dim=16,
           dtype="float32",
           remat=False,
           image=dict(patch_size=4, width=32, depth=2, num_heads=4, mlp_dim=64, pool="gap"),
           text=dict(vocab_size=64, width=32, depth=2, num_heads=4, mlp_dim=64, max_len=MAX_LEN),
           init_log_scale=math.log(10.0),
           init_bias=-10.0))
  config.update(overrides)
  return config


def batch(seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  lengths = rng.integers(1, MAX_LEN - 4, size=BATCH)
  tokens = rng.integers(1, 64, size=(BATCH, MAX_LEN))
  tokens[np.arange(MAX_LEN)[None] >= lengths[:, None]] = 0
  return jnp.asarray(images), jnp.asarray(tokens, jnp.int32)


def init(config):
  model = get_model(config)
  images, tokens = batch()
  # Jitted: one compilation instead of one per operation of an op-by-op call.
  return model, nn.unbox(jax.jit(model.init)(jax.random.key(0), images, tokens))


@pytest.fixture(scope="module")
def f32():
  return init(tiny_config())


def test_shapes_dtypes_unit_norm_and_scalars(f32):
  model, variables = f32
  images, tokens = batch()
  zimg, ztxt, aux = jax.jit(model.apply)(variables, images, tokens)
  assert zimg.shape == ztxt.shape == (BATCH, 16)
  assert zimg.dtype == ztxt.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(np.float64(zimg), axis=-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(np.float64(ztxt), axis=-1), 1.0, atol=1e-5)
  assert aux["log_scale"].shape == aux["bias"].shape == ()
  assert aux["log_scale"].dtype == aux["bias"].dtype == jnp.float32
  np.testing.assert_allclose(aux["log_scale"], math.log(10.0), rtol=1e-6)
  np.testing.assert_allclose(aux["bias"], -10.0)
  # Each side alone, as evaluators call it.
  encode = jax.jit(model.apply, static_argnames="method")
  np.testing.assert_allclose(encode(variables, images, method="encode_image"), zimg, atol=1e-6)
  np.testing.assert_allclose(encode(variables, tokens, method="encode_text"), ztxt, atol=1e-6)


def test_no_bias_param_when_init_bias_is_none():
  model = get_model(tiny_config(init_bias=None, init_log_scale=math.log(1 / 0.07)))
  variables = jax.eval_shape(model.init, jax.random.key(0), *batch())
  assert "bias" not in variables["params"] and "log_scale" in variables["params"]
  _, _, aux = jax.eval_shape(model.apply, variables, *batch())
  assert set(aux) == {"log_scale"}


def test_get_model_rejects_unknown_name():
  with pytest.raises(ValueError, match="two_tower"):
    get_model(tiny_config(name="nope"))


@pytest.mark.parametrize("pool,stem", [("gap", "patch"), ("cls", "patch"), ("map", "patch"),
                                       ("gap", "conv")])
def test_every_param_has_logical_axes(pool, stem):
  config = tiny_config()
  config.image.pool = pool
  config.image.stem = stem
  model = get_model(config)
  boxed = jax.eval_shape(model.init, jax.random.key(0), *batch())["params"]
  leaves = jax.tree_util.tree_leaves_with_path(boxed,
                                               is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert len(leaves) > 20
  for path, leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), jax.tree_util.keystr(path)
    assert len(leaf.names) == leaf.value.ndim, (jax.tree_util.keystr(path), leaf.names)
    assert set(leaf.names) <= PARAM_AXES, leaf.names
    assert leaf.value.dtype == jnp.float32


def test_sharded_forward_equals_unsharded(f32):
  model, variables = f32
  images, tokens = batch()
  expected = jax.jit(model.apply)(variables, images, tokens)

  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
  specs = nn.get_partition_spec(jax.eval_shape(model.init, jax.random.key(0), images, tokens))
  param_shardings = nn.logical_to_mesh_sharding(specs, mesh, RULES)
  mlp_kernel = param_shardings["params"]["image_tower"]["encoder"]["block_0"]["mlp"]["fc1"][
      "kernel"]
  assert mlp_kernel.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  query = param_shardings["params"]["text_tower"]["encoder"]["block_1"]["attn"]["query"]["kernel"]
  assert query.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  data_sharding = nn.logical_to_mesh_sharding(jax.sharding.PartitionSpec("batch"), mesh, RULES)

  sharded_vars = jax.device_put(variables, param_shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    forward = jax.jit(model.apply, in_shardings=(param_shardings, data_sharding, data_sharding))
    assert "sharding_constraint" in forward.lower(sharded_vars, images, tokens).as_text()
    got = forward(sharded_vars, images, tokens)
  assert len(got[0].sharding.device_set) == 8
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(g, e, atol=2e-5, rtol=2e-5)


def _loss(model, variables, images, tokens):
  zimg, ztxt, aux = model.apply(variables, images, tokens)
  return jnp.sum(zimg @ ztxt.T) * jnp.exp(aux["log_scale"]) + aux["bias"]


def test_remat_gives_same_outputs_and_gradients(f32):
  model, variables = f32
  images, tokens = batch()
  remat_model = get_model(tiny_config(remat=True))
  results = [
      jax.jit(jax.value_and_grad(lambda v, m=m: _loss(m, v, images, tokens)))(variables)
      for m in (model, remat_model)
  ]
  assert jax.tree.structure(results[0]) == jax.tree.structure(results[1])
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  assert float(jnp.abs(results[0][1]["params"]["image_tower"]["patch_embed"]["kernel"]).sum()) > 0


def test_bfloat16_compute_keeps_float32_params_and_is_close(f32):
  model, variables = f32
  images, tokens = batch()
  bf16 = get_model(tiny_config(dtype="bfloat16"))
  shapes = jax.eval_shape(bf16.init, jax.random.key(0), images, tokens)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))
  zimg, ztxt, _ = jax.jit(bf16.apply)(variables, images, tokens)
  assert zimg.dtype == ztxt.dtype == jnp.float32
  # bf16 is the operand dtype of the products; the activations between them stay float32.
  features = bf16.apply(variables, images, method=lambda m, x: m.image_tower(x))
  assert features.dtype == jnp.float32
  ref_img, ref_txt, _ = jax.jit(model.apply)(variables, images, tokens)
  # Same parameters, so each embedding should point the same way as in float32.
  for z, ref in ((zimg, ref_img), (ztxt, ref_txt)):
    cosine = np.sum(np.float64(z) * np.float64(ref), axis=-1)
    assert cosine.min() > 0.98, cosine


def _residual_streams(model, variables, images, tokens):
  """{(tower, block name): output} of every EncoderBlock of both towers."""
  _, state = model.apply(variables,
                         images,
                         tokens,
                         capture_intermediates=lambda m, _: isinstance(m, EncoderBlock),
                         mutable=["intermediates"])
  streams = {}
  for tower in ("image_tower", "text_tower"):
    for name, block in state["intermediates"][tower]["encoder"].items():
      streams[tower, name] = block["__call__"][0]
  return streams


def test_bfloat16_activations_make_a_bfloat16_residual_stream_and_stay_close(f32):
  model, variables = f32
  images, tokens = batch()
  bf16 = get_model(tiny_config(dtype="bfloat16", activation_dtype="bfloat16"))
  shapes = jax.eval_shape(bf16.init, jax.random.key(0), images, tokens)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))
  streams = _residual_streams(bf16, variables, images, tokens)
  assert len(streams) == 4 and all(x.dtype == jnp.bfloat16 for x in streams.values())
  # The default keeps them float32, whatever the operand dtype.
  default = get_model(tiny_config(dtype="bfloat16"))
  assert all(x.dtype == jnp.float32
             for x in _residual_streams(default, variables, images, tokens).values())
  zimg, ztxt, _ = jax.jit(bf16.apply)(variables, images, tokens)
  assert zimg.dtype == ztxt.dtype == jnp.float32
  ref_img, ref_txt, _ = jax.jit(model.apply)(variables, images, tokens)
  for z, ref in ((zimg, ref_img), (ztxt, ref_txt)):
    cosine = np.sum(np.float64(z) * np.float64(ref), axis=-1)
    assert cosine.min() > 0.98, cosine
  grads = jax.jit(jax.grad(lambda v: _loss(bf16, v, images, tokens)))(variables)
  assert all(g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))
             for g in jax.tree.leaves(grads))


def test_get_model_rejects_unknown_activation_dtype():
  with pytest.raises(ValueError, match="model.activation_dtype.*bfloat16"):
    get_model(tiny_config(activation_dtype="int8"))


def test_text_embedding_ignores_padding(f32):
  model, variables = f32
  rng = np.random.default_rng(1)
  lengths = np.array([1, 3, 5, 7])
  content = rng.integers(1, 64, size=(4, 7))
  encode = jax.jit(lambda t: model.apply(variables, t, method="encode_text"))

  def padded(total_len):
    tokens = np.zeros((4, total_len), np.int32)
    for i, n in enumerate(lengths):
      tokens[i, :n] = content[i, :n]
    return tokens

  reference = encode(padded(7))
  for total_len in (8, 11, MAX_LEN):
    np.testing.assert_allclose(encode(padded(total_len)), reference, atol=1e-5)
  # The mask must not hide real tokens: changing one changes the embedding.
  changed = padded(MAX_LEN)
  changed[3, 6] = changed[3, 6] % 63 + 1
  assert np.abs(np.asarray(encode(changed))[3] - np.asarray(reference)[3]).max() > 1e-3


def test_patch_embedding_matches_numpy_patchify(f32):
  model, variables = f32
  images, _ = batch()
  _, state = model.apply(variables,
                         images,
                         method="encode_image",
                         capture_intermediates=lambda mdl, _: mdl.name == "patch_embed")
  got = state["intermediates"]["image_tower"]["patch_embed"]["__call__"][0]
  params = variables["params"]["image_tower"]["patch_embed"]
  p, n = 4, IMAGE_SIZE // 4
  x = np.float64(images).reshape(BATCH, n, p, n, p, 3).transpose(0, 1, 3, 2, 4,
                                                                 5).reshape(BATCH, n, n, -1)
  want = x @ np.float64(params["kernel"]).reshape(p * p * 3, -1) + np.float64(params["bias"])
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_attention_matches_float64_reference():
  rng = np.random.default_rng(2)
  b, l, s, h, k = 2, 5, 6, 3, 4
  q, kk, v = (rng.normal(size=shape) for shape in ((b, l, h, k), (b, s, h, k), (b, s, h, k)))
  valid = np.ones((b, s), bool)
  valid[0, 4:] = False
  got = dot_product_attention(jnp.float32(q), jnp.float32(kk), jnp.float32(v), valid[:, None,
                                                                                     None, :])

  want = np.zeros((b, l, h, k))
  for bi in range(b):
    for hi in range(h):
      logits = q[bi, :, hi] @ kk[bi, :, hi].T / math.sqrt(k)
      logits[:, ~valid[bi]] = -np.inf
      weights = np.exp(logits - logits.max(-1, keepdims=True))
      weights /= weights.sum(-1, keepdims=True)
      want[bi, :, hi] = weights @ v[bi, :, hi]
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("pool,stem", [("gap", "patch"), ("map", "patch"), ("gap", "conv")])
def test_flop_count_matches_xla_cost_analysis(pool, stem):
  # Wide enough that elementwise work is a few percent of the matmuls.
  config = ml_collections.ConfigDict(
      dict(name="two_tower",
           embed_dim=64,
           dtype="float32",
           remat=False,
           image=dict(patch_size=4,
                      width=128,
                      depth=1,
                      num_heads=4,
                      mlp_dim=512,
                      pool=pool,
                      stem=stem),
           text=dict(vocab_size=64, width=128, depth=1, num_heads=4, mlp_dim=512, max_len=24),
           init_log_scale=0.0,
           init_bias=None))
  model = get_model(config)
  images = jnp.zeros((2, 32, 32, 3))
  tokens = jnp.ones((2, 24), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images, tokens)
  cost = jax.jit(model.apply).lower(variables, images, tokens).compile().cost_analysis()
  xla_flops = (cost[0] if isinstance(cost, list) else cost)["flops"] / 2
  ours = model_flops_per_example(config, image_size=32)
  # XLA also counts the elementwise work that the matmul count leaves out.
  assert 0.9 < ours / xla_flops <= 1.0, (ours, xla_flops)


def _operands(seed=3):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(2, 5, 6)), rng.normal(size=(6, 3, 4))


def test_low_precision_tensordot_value_and_gradients_match_float64():
  x, w = _operands()
  cotangent = np.random.default_rng(4).normal(size=(2, 5, 3, 4))

  def loss(x, w):
    return jnp.sum(matmul.tensordot(x, w, 1, jnp.bfloat16).astype(jnp.float32) * cotangent)

  y = matmul.tensordot(jnp.float32(x), jnp.float32(w), 1, jnp.bfloat16)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float64(y.astype(jnp.float32)),
                             np.tensordot(x, w, 1),
                             atol=0.1,
                             rtol=0.02)
  dx, dw = jax.grad(loss, argnums=(0, 1))(jnp.float32(x), jnp.float32(w))
  assert dx.dtype == dw.dtype == jnp.float32  # float32 parameters get float32 gradients
  np.testing.assert_allclose(dx, np.tensordot(cotangent, w, ((2, 3), (1, 2))), atol=0.1, rtol=0.02)
  np.testing.assert_allclose(dw, np.tensordot(x, cotangent, ((0, 1), (0, 1))), atol=0.1, rtol=0.02)


def test_float32_products_are_the_plain_jax_numpy_ones():
  x, w = (jnp.float32(a) for a in _operands())
  assert np.array_equal(matmul.tensordot(x, w, 1, jnp.float32), jnp.tensordot(x, w, 1))
  q = jnp.float32(np.random.default_rng(5).normal(size=(2, 5, 3, 4)))
  got = matmul.einsum("blhk,bshk->bhls", q, q, jnp.float32)
  assert np.array_equal(got, jnp.einsum("blhk,bshk->bhls", q, q))


def test_bfloat16_step_runs_dense_layers_as_bf16_dots_with_float32_accumulation(f32):
  _, variables = f32
  images, tokens = batch()
  model = get_model(tiny_config(dtype="bfloat16"))
  grad_fn = jax.jit(jax.grad(lambda v: _loss(model, v, images, tokens)))
  hlo = grad_fn.lower(variables).compile().as_text()
  dtypes = dict(re.findall(r"%(\S+) = (\w+)\[", hlo))
  fast = sum(
      dtypes.get(a) == dtypes.get(b) == "bf16"
      for a, b in re.findall(r"= f32\[[^\]]*\]\S* dot\(%(\S+?), %(\S+?)\)", hlo))
  # Per tower 2 blocks x (q, k, v, out, fc1, fc2), plus the patch embedding:
  # each is one forward and two backward bf16 x bf16 -> f32 dots.
  assert fast >= 3 * (2 * 2 * 6 + 1), fast
  grads = grad_fn(variables)  # XLA:CPU must also be able to run them
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
