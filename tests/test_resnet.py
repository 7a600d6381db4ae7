"""The CIFAR ResNet: logical names, shapes, and BatchNorm statistics of the global batch."""
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from jaxmm import models
from jaxmm import parallel

CONFIG = dict(name="resnet", stage_sizes=(1, 1), widths=(4, 8), head=(8, 5))


@pytest.fixture(scope="module")
def model_and_variables():
  model = models.get_model(CONFIG)
  boxed = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  # Non-trivial BatchNorm affine parameters and running averages, so that every term counts.
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda x: np.asarray(x) + rng.uniform(0, 0.1, x.shape).astype(x.dtype),
                           nn.unbox(boxed))
  return model, boxed, variables


def _images(n=16, size=8):
  return jax.random.normal(jax.random.key(2), (n, size, size, 3))


def _train_apply(model, variables, x):
  """(h, head output, new batch_stats) of a training call."""
  (h, out), state = model.apply(variables, x, train=True, mutable=["batch_stats"])
  return h, out, state["batch_stats"]


def _encode(model, variables, x):
  """The representation h with the running averages."""
  return jax.jit(lambda v, x: model.apply(v, x, method=model.encode))(variables, x)


def test_every_parameter_has_logical_names(model_and_variables):
  _, boxed, variables = model_and_variables
  leaves = jax.tree.leaves(boxed["params"],
                           is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert len(leaves) == len(jax.tree.leaves(variables["params"]))
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned)
    assert len(leaf.names) == leaf.value.ndim and any(leaf.names)
  params = variables["params"]
  assert params["stem"]["kernel"].shape == (3, 3, 3, 4)
  assert params["stage1_block0"]["conv0"]["kernel"].shape == (3, 3, 4, 8)
  assert params["stage1_block0"]["shortcut"]["kernel"].shape == (1, 1, 4, 8)
  assert "shortcut" not in params["stage0_block0"]
  assert params["head0"]["kernel"].shape == (8, 8) and params["head1"]["kernel"].shape == (8, 5)
  stats = variables["batch_stats"]
  assert stats["stem_norm"]["mean"].shape == (4,)
  assert stats["stage1_block0"]["norm1"]["var"].shape == (8,)


def test_logical_names_pair_like_the_unet(model_and_variables):
  _, boxed, _ = model_and_variables
  specs = nn.get_partition_spec(boxed["params"])
  block = specs["stage1_block0"]
  assert block["conv0"]["kernel"] == P(None, None, "embed", "mlp")
  assert block["conv1"]["kernel"] == P(None, None, "mlp", "embed")
  assert block["norm0"]["scale"] == P("mlp") and block["norm1"]["bias"] == P("embed")
  assert block["shortcut"]["kernel"] == P(None, None, None, "embed")
  assert specs["stem"]["kernel"] == P(None, None, None, "embed")
  assert specs["head0"]["kernel"] == P("embed", "mlp")
  assert specs["head1"]["kernel"] == P("mlp", "joint")


def test_shapes_and_the_cifar_stem(model_and_variables):
  model, _, variables = model_and_variables
  # The stem keeps the resolution; one halving per later stage.
  (h, out), state = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["intermediates", "batch_stats"],
      capture_intermediates=lambda mdl, _: mdl.name in ("stem", "stage1_block0")))(variables,
                                                                                  _images(4, 32))
  assert h.shape == (4, 8) and out.shape == (4, 5) and h.dtype == jnp.float32
  assert state["intermediates"]["stem"]["__call__"][0].shape == (4, 32, 32, 4)
  assert state["intermediates"]["stage1_block0"]["__call__"][0].shape == (4, 16, 16, 8)


def test_evaluation_uses_the_running_averages(model_and_variables):
  model, _, variables = model_and_variables
  x = _images()
  np.testing.assert_allclose(_encode(model, variables, x[:3]),
                             _encode(model, variables, x)[:3], rtol=1e-5, atol=1e-6)
  shifted = dict(variables, batch_stats=jax.tree.map(lambda s: s + 1.0, variables["batch_stats"]))
  assert not np.allclose(_encode(model, shifted, x), _encode(model, variables, x))
  # In training, the batch statistics normalise instead: an example depends on its batch.
  train_h = jax.jit(lambda v, x: _train_apply(model, v, x)[0])
  assert not np.allclose(train_h(variables, x[:3]), train_h(variables, x)[:3], atol=1e-4)


def _assert_same(sharded, reference):
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(reference)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_batch_statistics_under_jit_are_those_of_the_global_batch(model_and_variables):
  model, _, variables = model_and_variables
  x = _images()
  reference = jax.jit(lambda v, x: _train_apply(model, v, x))(variables, x)  # on one device
  mesh = parallel.make_mesh({"data": -1})
  sharded_x = jax.device_put(x, parallel.batch_sharding(mesh))
  with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.DEFAULT_RULES):
    sharded = jax.jit(lambda v, x: _train_apply(model, v, x))(variables, sharded_x)
  assert len(sharded[0].sharding.device_set) == 8
  _assert_same(sharded, reference)


def _under_shard_map(model, variables, x, mesh):
  batch = P(parallel.BATCH_AXES)
  return jax.jit(
      jax.shard_map(lambda v, x: _train_apply(model, v, x),
                    mesh=mesh,
                    in_specs=(P(), batch),
                    out_specs=(batch, batch, P()),
                    check_vma=False))(variables, x)


def test_batch_statistics_inside_shard_map_need_the_batch_axes(model_and_variables):
  model, _, variables = model_and_variables
  x = _images()
  reference = jax.jit(lambda v, x: _train_apply(model, v, x))(variables, x)
  mesh = parallel.make_mesh({"data": 4, "fsdp": 2})
  synced = models.get_model(dict(CONFIG, axis_name=parallel.BATCH_AXES))
  _assert_same(_under_shard_map(synced, variables, x, mesh), reference)
  # Without the axis names each device normalises by its own 2 rows: different statistics.
  local = _under_shard_map(model, variables, x, mesh)
  assert not np.allclose(local[0], reference[0], atol=1e-3)
