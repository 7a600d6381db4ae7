"""Tests for the diffusion denoisers (U-Net, DiT, MLP): contract, zero-init, labels, sharding."""
import ast
import functools
import re

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmm import errors
from jaxmm.models import get_model, unet
from jaxmm.models.embeddings import Conditioning
from jaxmm.parallel import DEFAULT_RULES, shardings_of

NUM_CLASSES = (3, 4)
# XLA:CPU compiles threefry once per parameter (≈ 0.2 s each: ≈ 30 s for the
# test U-Net's init); the rbg generator compiles in a fraction of that.
INIT_KEY = jax.random.key(0, impl="rbg")
BATCH = 8
# Tiny configs: every named axis divides 2, so the (2, 2, 2) mesh can shard them.
CONFIGS = {
    "unet":
        dict(
            name="unet",
            channels=8,
            channel_mult=(1, 2),
            num_blocks=1,
            attn_resolutions=(),  # the middle block always attends; fewer ops to compile
            num_heads=2,
            num_classes=NUM_CLASSES),
    "dit":
        dict(name="dit",
             patch_size=2,
             width=32,
             depth=2,
             num_heads=2,
             mlp_dim=64,
             num_classes=NUM_CLASSES),
    "mlp":
        dict(name="mlp_denoiser", width=32, depth=2, mlp_dim=64, num_classes=NUM_CLASSES),
}
SHAPES = {"unet": (BATCH, 8, 8, 3), "dit": (BATCH, 8, 8, 3), "mlp": (BATCH, 2)}
# Per model: the leaves of the residual branches, and the zero-initialised
# leaves that gate them (U-Net: each block's second conv and attention output;
# DiT and MLP: the adaLN regression).
BRANCH = {
    "unet": r"(enc|mid|dec).*/(conv0|norm0|norm1|affine|norm_attn|attn/(query|key|value))/",
    "dit": r"block_\d+/(attn|mlp)/",
    "mlp": r"block_\d+/(fc1|fc2)/",
}
GATE = {"unet": r"/(conv1|attn/out)/", "dit": r"block_\d+/adaln/", "mlp": r"block_\d+/adaln/"}
OUTPUT = {"unet": r"conv_out/", "dit": r"final/", "mlp": r"fc_out/"}


def make_model(kind, **overrides):
  return get_model(ml_collections.ConfigDict(dict(CONFIGS[kind], **overrides)))


def inputs(kind, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=SHAPES[kind]).astype(np.float32)
  noise = rng.uniform(-1.5, 1.5, size=BATCH).astype(np.float32)
  labels = np.stack([rng.integers(0, n, BATCH) for n in NUM_CLASSES], axis=1).astype(np.int32)
  return jnp.asarray(x), jnp.asarray(noise), jnp.asarray(labels)


def init_params(model, x, noise, labels):
  return nn.unbox(jax.jit(model.init)(INIT_KEY, x, noise, labels))["params"]


def path_of(key_path):
  return "/".join(str(getattr(k, "key", k)) for k in key_path) + "/"


def perturb(params, pattern=".", scale=0.1, seed=1):
  """params with N(0, scale²) added to every leaf whose path matches `pattern`."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: leaf + np.float32(scale * rng.normal(size=leaf.shape))
      if re.search(pattern, path_of(p)) else leaf, params)


class Setup:
  """A model, its initial parameters, a perturbed copy and a jitted forward."""

  def __init__(self, kind, **overrides):
    self.kind = kind
    self.model = make_model(kind, **overrides)
    x, noise, labels = inputs(kind)
    self.init_params = init_params(self.model, x, noise, labels)
    self.params = perturb(self.init_params)
    self.forward = jax.jit(lambda p, x, n, y: self.model.apply({"params": p}, x, n, y))


@functools.cache
def built(kind):
  return Setup(kind)


@pytest.fixture(params=list(CONFIGS))
def setup(request):
  return built(request.param)


def test_output_has_input_shape_and_is_zero_at_init(setup):
  x, noise, labels = inputs(setup.kind)
  out = setup.forward(setup.init_params, x, noise, labels)
  assert out.shape == x.shape and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, 0.0)  # zero-initialised output layer
  out = setup.forward(setup.params, x, noise, labels)
  assert out.shape == x.shape and float(jnp.std(out)) > 1e-3


def test_residual_branches_start_switched_off(setup):
  """With the output layer trained, F ignores every branch until its zero-init gate moves."""
  x, noise, labels = inputs(setup.kind)
  trained_out = perturb(setup.init_params, OUTPUT[setup.kind])
  reference = setup.forward(trained_out, x, noise, labels)
  branches = perturb(trained_out, BRANCH[setup.kind], seed=2)
  assert not jax.tree.all(jax.tree.map(np.array_equal, branches, trained_out))
  np.testing.assert_allclose(setup.forward(branches, x, noise, labels), reference, atol=1e-6)
  gated = perturb(branches, GATE[setup.kind], seed=3)
  assert np.abs(setup.forward(gated, x, noise, labels) - reference).max() > 1e-3


def test_labels_condition_the_output_and_minus_one_is_the_null_token(setup):
  x, noise, labels = inputs(setup.kind)
  forward = lambda p, y: np.asarray(setup.forward(p, x, noise, y))
  out = forward(setup.params, labels)
  changed = labels.at[:, 1].set((labels[:, 1] + 1) % NUM_CLASSES[1])
  assert np.abs(forward(setup.params, changed) - out).max(axis=tuple(range(1, x.ndim))).min() > 1e-4
  dropped = labels.at[:, 0].set(-1)
  assert np.abs(forward(setup.params, dropped) - out).max(axis=tuple(range(1, x.ndim))).min() > 1e-4
  # -1 selects row num_classes[0] of the first table: copying that row over
  # every real class makes each real label give the dropped output.
  table = setup.params["conditioning"]["labels"]["table_0"]
  nulled = dict(setup.params,
                conditioning=dict(setup.params["conditioning"],
                                  labels=dict(setup.params["conditioning"]["labels"],
                                              table_0=jnp.broadcast_to(table[-1], table.shape))))
  np.testing.assert_allclose(forward(nulled, labels), forward(setup.params, dropped), atol=1e-6)


def test_no_labels_is_every_label_dropped():
  _, noise, labels = inputs("mlp")
  conditioning = Conditioning(16, 8, NUM_CLASSES)
  params = perturb(conditioning.init(INIT_KEY, noise, labels)["params"])
  no_labels = conditioning.apply({"params": params}, noise)
  np.testing.assert_array_equal(
      no_labels, conditioning.apply({"params": params}, noise, jnp.full_like(labels, -1)))
  assert float(jnp.abs(no_labels - conditioning.apply({"params": params}, noise, labels)).min()) > 0


def test_noise_level_conditions_the_output(setup):
  x, noise, labels = inputs(setup.kind)
  a = setup.forward(setup.params, x, noise, labels)
  b = setup.forward(setup.params, x, noise + 0.5, labels)
  assert np.abs(np.asarray(a - b)).max(axis=tuple(range(1, x.ndim))).min() > 1e-4


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_every_param_is_named_and_maps_each_mesh_axis_once(kind):
  x, noise, labels = inputs(kind)
  model = make_model(kind)
  boxed = jax.eval_shape(model.init, INIT_KEY, x, noise, labels)["params"]
  leaves = jax.tree_util.tree_leaves_with_path(boxed,
                                               is_leaf=lambda v: isinstance(v, nn.Partitioned))
  rules = dict(DEFAULT_RULES)
  assert len(leaves) > 15
  for path, leaf in leaves:
    where = jax.tree_util.keystr(path)
    assert isinstance(leaf, nn.Partitioned), where
    assert leaf.value.dtype == jnp.float32, where
    assert len(leaf.names) == leaf.value.ndim, (where, leaf.names)
    assert all(name is None or name in rules for name in leaf.names), (where, leaf.names)
    mesh_axes = [rules[name] for name in leaf.names if name is not None]
    mesh_axes = [a for a in mesh_axes if a is not None]
    assert len(mesh_axes) == len(set(mesh_axes)), (where, leaf.names)
  kernels = [leaf for path, leaf in leaves if path_of(path).endswith("kernel/")]
  # Every kernel shards over fsdp, and the blocks' big ones also over tensor.
  assert all("embed" in leaf.names for leaf in kernels)
  assert sum({"embed", "mlp"} <= set(leaf.names) for leaf in kernels) >= 4


def test_sharded_forward_equals_single_device(setup):
  x, noise, labels = inputs(setup.kind)
  expected = setup.forward(setup.params, x, noise, labels)
  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
  boxed = jax.eval_shape(setup.model.init, INIT_KEY, x, noise, labels)["params"]
  param_shardings = shardings_of(boxed, mesh)
  specs = {
      path_of(p): tuple(s.spec) for p, s in jax.tree_util.tree_leaves_with_path(param_shardings)
  }
  assert any(spec[-2:] == ("fsdp", "tensor") for spec in specs.values()), specs
  batch = nn.logical_to_mesh_sharding(jax.sharding.PartitionSpec("batch"), mesh, DEFAULT_RULES)
  params = jax.device_put(setup.params, param_shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
    forward = jax.jit(lambda p, x, n, y: setup.model.apply({"params": p}, x, n, y),
                      in_shardings=(param_shardings, batch, batch, batch))
    assert "sharding_constraint" in forward.lower(params, x, noise, labels).as_text()
    got = forward(params, x, noise, labels)
  assert len(got.sharding.device_set) == 8
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def _loss(model, params, x, noise, labels):
  """Mean squared error of F against x (a stand-in for the denoising loss), and F."""
  out = model.apply({"params": params}, x, noise, labels)
  return jnp.mean((out - x)**2), out


def test_bfloat16_trains_and_is_close_to_float32(setup):
  x, noise, labels = inputs(setup.kind)
  bf16 = make_model(setup.kind, dtype="bfloat16")
  shapes = jax.eval_shape(bf16.init, INIT_KEY, x, noise, labels)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(shapes))
  # XLA:CPU must be able to run every bf16 product of the backward pass.
  (_, out), grads = jax.jit(
      jax.value_and_grad(lambda p: _loss(bf16, p, x, noise, labels), has_aux=True))(setup.params)
  assert jax.tree.all(jax.tree.map(lambda g: g.dtype == jnp.float32, grads))
  assert jax.tree.all(jax.tree.map(lambda g: bool(jnp.all(jnp.isfinite(g))), grads))
  assert out.dtype == jnp.float32
  ref = setup.forward(setup.params, x, noise, labels)
  assert 1e-5 < float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref)) < 0.03


@pytest.mark.parametrize("kind,blocks", [("unet", 10), ("dit", 2), ("mlp", 2)])
def test_remat_recomputes_every_block(kind, blocks):
  x, noise, labels = inputs(kind)
  model = make_model(kind, remat=True)
  params = nn.unbox(jax.eval_shape(model.init, INIT_KEY, x, noise, labels))["params"]
  jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, x, noise, labels))(params)
  assert sum(eqn.primitive.name.startswith(("remat", "checkpoint")) for eqn in jaxpr.eqns) == blocks


def test_unet_dropout_only_when_training():
  x, noise, labels = inputs("unet")
  model = make_model("unet", dropout=0.5, remat=True)
  params = nn.unbox(jax.eval_shape(model.init, INIT_KEY, x, noise, labels))["params"]
  # By default no dropout runs, so no 'dropout' rng is needed; with train=True it is.
  jax.eval_shape(lambda p: model.apply({"params": p}, x, noise, labels), params)
  with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
    jax.eval_shape(lambda p: model.apply({"params": p}, x, noise, labels, train=True), params)
  # What train=True switches on, in one block (the whole U-Net would take seconds to compile).
  h, c = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 8)), jnp.float32), jnp.ones(
      (2, 16))
  block = unet.ResBlock(8, 2, dropout=0.5, deterministic=False)
  block_params = perturb(block.init(INIT_KEY, h, c)["params"])
  apply = jax.jit(lambda rng: block.apply({"params": block_params}, h, c, rngs={"dropout": rng}))
  a, b = (apply(jax.random.key(seed, impl="rbg")) for seed in (0, 1))
  eval_out = block.clone(deterministic=True).apply({"params": block_params}, h, c)
  assert float(jnp.abs(a - eval_out).max()) > 1e-3 and float(jnp.abs(a - b).max()) > 1e-3


def test_unet_attends_at_attn_resolutions_and_in_the_middle():
  x, noise, labels = inputs("unet")
  model = make_model("unet", attn_resolutions=(8,))
  params = jax.eval_shape(model.init, INIT_KEY, x, noise, labels)["params"]
  attending = sorted(name for name, block in params.items() if "attn" in block)
  assert attending == ["dec0_block0", "dec0_block1", "enc0_block0", "mid0"]


def test_fourier_noise_embedding():
  x, noise, labels = inputs("mlp")
  model, params = make_model("mlp", embedding_type="fourier"), built("mlp").params
  a = model.apply({"params": params}, x, noise, labels)
  b = model.apply({"params": params}, x, noise + 0.05, labels)
  positional = built("mlp").forward(params, x, noise, labels)
  assert float(jnp.abs(a - b).max()) > 1e-3 and float(jnp.abs(a - positional).max()) > 1e-3


def test_unet_patches_fold_pixels_into_channels_and_back():
  x = np.random.default_rng(0).normal(size=(2, 8, 6, 3)).astype(np.float32)
  folded = np.asarray(unet.space_to_depth(jnp.asarray(x), 2))
  assert folded.shape == (2, 4, 3, 12)
  for i, j in [(0, 0), (1, 2), (3, 1)]:  # position (i, j) holds patch rows 2i, 2i+1, cols 2j, 2j+1
    np.testing.assert_array_equal(folded[:, i, j], x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(2, 12))
  np.testing.assert_array_equal(np.asarray(unet.depth_to_space(jnp.asarray(folded), 2)), x)


def test_unet_with_patches_runs_at_the_folded_resolution():
  # 8x8 images in 2x2 patches: levels at 4x4 and 2x2, so attention at 2 is valid.
  model = make_model("unet", patch_size=2, attn_resolutions=(2,))
  x, noise, labels = inputs("unet")
  params = perturb(init_params(model, x, noise, labels))
  assert params["conv_in"]["kernel"].shape[2] == 12 and params["conv_out"]["kernel"].shape[3] == 12
  assert "attn" in params["enc1_block0"]
  forward = jax.jit(lambda p: model.apply({"params": p}, x, noise, labels))  # compiled once
  assert forward(params).shape == x.shape


BAD = [
    ("dit", dict(num_heads=3), "model.num_heads"),
    ("dit", dict(patch_size=3), "model.patch_size"),
    ("dit", dict(width=30, num_heads=1), "model.width"),
    ("unet", dict(channel_mult=(1, 2, 2, 2, 2)), "model.channel_mult"),
    ("unet", dict(attn_resolutions=(5,)), "model.attn_resolutions"),
    ("unet", dict(num_heads=3), "model.num_heads"),
    ("unet", dict(patch_size=3), "model.patch_size"),
    ("unet", dict(embedding_type="sinusoidal"), "model.embedding_type"),
    ("dit", dict(embedding_type="fourrier"), "model.embedding_type"),
    ("mlp", dict(num_classes=(3, 0)), "model.num_classes"),
    ("mlp", dict(depth=0), "model.depth"),
]


@pytest.mark.parametrize("kind,overrides,key", BAD)
def test_bad_attributes_raise_user_error_naming_the_key(kind, overrides, key):
  x, noise, labels = inputs(kind)
  if "num_classes" in overrides:
    labels = labels[:, :len(overrides["num_classes"])]
  with pytest.raises(errors.UserError, match=re.escape(key)) as info:
    jax.eval_shape(make_model(kind, **overrides).init, INIT_KEY, x, noise, labels)
  # Where the message offers a value ("e.g. model.KEY=VALUE"), that value works.
  suggestion = re.search(r"e\.g\. (model\.\w+)=(.+)$", str(info.value))
  if suggestion:
    assert suggestion.group(1) == key
    fixed = dict(overrides, **{key.split(".")[1]: ast.literal_eval(suggestion.group(2))})
    jax.eval_shape(make_model(kind, **fixed).init, INIT_KEY, x, noise, labels)
