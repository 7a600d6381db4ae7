"""The same train steps on different meshes give the same loss and parameters as 1 device."""
import jax
import numpy as np
import pytest

from jaxmm import models
from jaxmm import parallel
from jaxmm import train
from jaxmm.experiments import image_text
from jaxmm.train import model_init

STEPS = 3


def random_batch(config):
  rng = np.random.default_rng(0)
  size = config.data.image_size
  tokens = rng.integers(1, 256, (config.batch_size, config.data.max_len), dtype=np.int32)
  tokens[:, 5:] = 0  # padding
  return {
      "image": rng.uniform(-1, 1, (config.batch_size, size, size, 3)).astype(np.float32),
      "tokens": tokens
  }


def run_steps(config, mesh_shape, devices):
  mesh = parallel.make_mesh(dict(zip(parallel.MESH_AXES, mesh_shape)), devices)
  model = models.get_model(config.model)
  init_variables = model_init.make_init_variables(model, config)
  tx, schedule = train.make_optimizer(config.optim, config.total_steps)
  shardings = train.state_shardings(init_variables, tx, config.ema, mesh)
  state = train.init_state(init_variables, tx, config.ema, shardings, train.init_rng(config.seed))
  step = train.compile_train_step(
      train.make_train_step(image_text.make_loss_fn(model, config.loss, mesh), tx, schedule,
                            config.seed, config.ema), mesh, shardings)
  batch = random_batch(config)
  losses = []
  for _ in range(STEPS):
    state, metrics = step(state, parallel.global_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  return np.array(losses), jax.device_get(state.params), state


# SigLIP on every kind of mesh; CLIP, whose loss shards alike, on the mixed one; Muon,
# whose Newton–Schulz iterations multiply whole kernels, with kernels split over fsdp
# and tensor.
@pytest.mark.parametrize("loss,optim,meshes", [
    pytest.param("siglip", (), [(8, 1, 1), (2, 2, 2), (1, 8, 1)], id="siglip"),
    # test_losses and test_clip_ring compare CLIP's sharded loss and gradients by default.
    pytest.param("clip", (), [(2, 2, 2)], id="clip", marks=pytest.mark.slow),
    # test_muon compares Muon with a NumPy reference by default.
    pytest.param("siglip", ("optim.name=muon", "optim.momentum=0.95"), [(2, 2, 2)],
                 id="siglip-muon", marks=pytest.mark.slow),
])
def test_meshes_match_one_device(loss, optim, meshes, tiny_config):
  # Adam divides by sqrt(v) + eps: with a tiny eps a gradient that is zero up
  # to rounding would get an update of size lr and random sign.
  config = tiny_config(loss, "optim.eps=1e-4", *optim)
  ref_losses, ref_params, _ = run_steps(config, (1, 1, 1), jax.devices()[:1])
  assert ref_losses[-1] < ref_losses[0], ref_losses  # it trains: the numbers mean something
  for shape in meshes:
    losses, params, state = run_steps(config, shape, jax.devices())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, err_msg=str(shape))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, err_msg=str(shape)),
                 params, ref_params)


def test_parameters_are_sharded_by_the_rules(tiny_config):
  config = tiny_config("siglip")
  *_, state = run_steps(config, (2, 2, 2), jax.devices())
  mlp_kernel = [
      x for path, x in jax.tree_util.tree_leaves_with_path(state.params)
      if "mlp" in jax.tree_util.keystr(path).lower() and x.ndim == 2
  ]
  assert mlp_kernel, "expected MLP kernels in the model"
  # [embed, mlp] kernels: embed over fsdp, mlp over tensor, as DEFAULT_RULES say.
  specs = {tuple(x.sharding.spec) for x in mlp_kernel}
  assert ("fsdp", "tensor") in specs or ("tensor", "fsdp") in specs, specs
  # Adam's moments follow their parameters.
  leaves = [x for x in jax.tree.leaves(state.opt_state) if x.ndim == 2]
  assert any(tuple(x.sharding.spec) == ("fsdp", "tensor") for x in leaves)


def test_batch_that_does_not_divide_the_mesh_names_the_numbers():
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  with pytest.raises(ValueError, match=r"batch_size=10 .*data=2 x fsdp=2 = 4 shards"):
    parallel.check_batch_size(10, mesh)


def test_mesh_sizes():
  assert parallel.mesh_shape({"data": -1, "fsdp": 2}, 8) == (4, 2, 1)
  assert parallel.mesh_shape({"data": 1, "fsdp": -1, "tensor": 1}, 8) == (1, 8, 1)
  with pytest.raises(ValueError, match="needs 12 devices, but 8"):
    parallel.mesh_shape({"data": 3, "fsdp": 4}, 8)
  with pytest.raises(ValueError, match="does not divide the 8 devices"):
    parallel.mesh_shape({"data": -1, "fsdp": 3}, 8)
  with pytest.raises(ValueError, match="unknown mesh axes"):
    parallel.mesh_shape({"model": 2}, 8)
