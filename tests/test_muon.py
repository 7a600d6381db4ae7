"""Muon (`optim.name='muon'`) against a float64 NumPy Newton–Schulz, its choice of matrices,
and a resumed Muon run."""
import pathlib
import shutil

import jax
import numpy as np
import pytest

from jaxmm import config_loading
from jaxmm import errors
from jaxmm import models
from jaxmm import train
from jaxmm.experiments import diffusion as diffusion_experiment
from jaxmm.train import model_init
from jaxmm.train import muon
from jaxmm.train import partition

from test_optim import optim_config

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)


def orthogonalised(matrix: np.ndarray) -> np.ndarray:
  """Five Newton–Schulz steps X <- aX + (b·XXᵀ + c·(XXᵀ)²)X from X = M/‖M‖_F, float64,
  on the wide orientation of M [fan_in, fan_out]."""
  x = np.asarray(matrix, np.float64)
  tall = x.shape[0] > x.shape[1]
  x = x.T if tall else x
  x = x / np.linalg.norm(x)
  a, b, c = NS_COEFFICIENTS
  for _ in range(5):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  return x.T if tall else x


def test_newton_schulz_reference_is_near_orthogonal():
  """The reference itself: singular values of the result lie near 1 (Jordan et al. aim at
  roughly [0.7, 1.2]), whatever the input's."""
  m = np.random.default_rng(0).normal(size=(24, 10)) * np.linspace(0.1, 10, 10)
  s = np.linalg.svd(orthogonalised(m), compute_uv=False)
  assert s.min() > 0.6 and s.max() < 1.25, s


def test_muon_updates_match_a_numpy_reference():
  """First two updates: each matrix gets -lr · 0.2·√max(fan_in, fan_out) · NS(Nesterov
  step of the bias-corrected momentum) on its [input axes, output axes] view; biases and
  the first layer get NAdam."""
  lr, beta, b1 = 0.05, 0.9, 0.9
  config = optim_config(name="muon", lr=lr, momentum=beta, b1=b1, b2=0.999, eps=1e-8)
  tx, _ = train.make_optimizer(config, 10)
  rng = np.random.default_rng(1)
  shapes = {
      "block": {"conv0": {"kernel": (3, 3, 4, 6), "bias": (6,)}},
      "attn": {"query": {"kernel": (8, 2, 3)}, "out": {"kernel": (2, 3, 8)}},
      "conv_in": {"kernel": (3, 3, 2, 4)},
  }
  params = jax.tree.map(lambda s: np.zeros(s, np.float32), shapes, is_leaf=lambda s: isinstance(s, tuple))
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
           for _ in range(2)]
  state = tx.init(params)
  updates = []
  for g in grads:
    u, state = tx.update(g, state, params)
    updates.append(jax.tree.map(lambda x: np.asarray(x, np.float64), u))

  def expected_matrix(name, num_in, step):
    g = [np.asarray(gr_[name[0]][name[1]]["kernel"], np.float64) for gr_ in grads]
    shape = g[0].shape
    fan_in, fan_out = int(np.prod(shape[:num_in])), int(np.prod(shape[num_in:]))
    momentum = (1 - beta) * g[0]
    if step == 1:
      momentum = beta * momentum + (1 - beta) * g[1]
    t = step + 1
    nesterov = beta * momentum / (1 - beta**(t + 1)) + (1 - beta) * g[step] / (1 - beta**t)
    o = orthogonalised(nesterov.reshape(fan_in, fan_out))
    return -lr * 0.2 * np.sqrt(max(fan_in, fan_out)) * o.reshape(shape)

  for step in (0, 1):
    for name, num_in in ((("block", "conv0"), 3), (("attn", "query"), 1), (("attn", "out"), 2)):
      np.testing.assert_allclose(updates[step][name[0]][name[1]]["kernel"],
                                 expected_matrix(name, num_in, step),
                                 rtol=2e-3,
                                 atol=1e-6,
                                 err_msg=f"{name} step {step}")
  # NAdam's first step: -lr·(1 + b1/(1 + b1))·sign(g), elementwise.
  for leaf in (("block", "conv0", "bias"), ("conv_in", "kernel")):
    g = grads[0]
    u = updates[0]
    for key in leaf:
      g, u = g[key], u[key]
    np.testing.assert_allclose(u, -lr * (1 + b1 / (1 + b1)) * np.sign(g), rtol=1e-4)


@pytest.mark.parametrize("name,ndim,expected", [
    ("enc0_block0/conv0/kernel", 4, 3),
    ("dec2_block0/attn/query/kernel", 3, 1),
    ("block_0/attn/value/kernel", 3, 1),
    ("dec2_block0/attn/out/kernel", 3, 2),
    ("dec0_up/affine/kernel", 3, 1),
    ("conditioning/fc0/kernel", 2, 1),
    ("block_0/mlp/fc1/kernel", 2, 1),
    ("enc0_block0/conv0/bias", 1, None),
    ("dec2_block0/attn/query/bias", 2, None),
    ("enc0_block0/norm0/scale", 1, None),
    ("conditioning/labels/table_0", 2, None),
    ("conv_in/kernel", 4, None),
    ("conv_out/kernel", 4, None),
    ("patch_embed/kernel", 4, None),
    ("final/kernel", 4, None),
    ("head0/kernel", 2, None),
])
def test_which_parameters_are_matrices(name, ndim, expected):
  assert muon.input_axes(name, ndim) == expected


def test_every_unet_kernel_is_a_matrix_but_the_first_and_last():
  """On the default U-Net's parameters: all kernels of >= 2 axes but conv_in and conv_out."""
  config = config_loading.load_config(str(CONFIGS / "edm_shapes.py"))
  model = models.get_model(config.model)
  variables = jax.eval_shape(model_init.make_init_variables(model, config),
                             jax.random.key(0))
  params = jax.tree.map(lambda x: x.value, variables["params"],
                        is_leaf=lambda x: hasattr(x, "value"))
  numbers = muon.dimension_numbers(params)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  dims = dict(zip((partition.param_path(p) for p, _ in flat),
                  jax.tree.leaves(numbers, is_leaf=lambda x: x is None or hasattr(x, "reduction_axis"))))
  matrices = {n for n, d in dims.items() if d is not None}
  kernels = {partition.param_path(p) for p, leaf in flat if p[-1].key == "kernel" and leaf.ndim >= 2}
  assert matrices == kernels - {"conv_in/kernel", "conv_out/kernel"}
  assert dims["enc0_block0/conv0/kernel"].reduction_axis == (0, 1, 2)


def test_bad_momentum_names_its_key():
  with pytest.raises(errors.UserError) as error:
    train.make_optimizer(optim_config(name="muon", momentum=1.0), 10)
  assert str(error.value).startswith("optim.momentum=")


@pytest.mark.slow  # test_train_loop's resume test covers resuming in the default suite
def test_resumed_muon_run_equals_an_uninterrupted_one(tmp_path):
  """The toy trained 4 steps straight, and resumed from its step-2 checkpoint: the same
  parameters and optimizer state, bit for bit (Muon's partitioned optimizer state, with its
  empty nodes, checkpoints and restores whole)."""
  config = config_loading.apply_overrides(
      config_loading.load_config(str(CONFIGS / "edm_toy2d.py")), [
          "optim.name=muon", "optim.momentum=0.95", "total_steps=4", "checkpoint_every=2",
          "eval_every=0", "batch_size=64", "optim.warmup_steps=1"
      ])
  straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
  straight = train.train(config, str(straight_dir), diffusion_experiment.build)
  shutil.copytree(straight_dir, resumed_dir)
  shutil.rmtree(resumed_dir / "checkpoints" / "4")
  resumed = train.train(config, str(resumed_dir), diffusion_experiment.build)
  assert int(resumed.step) == 4
  for a, b in zip(jax.tree.leaves(jax.device_get((straight.params, straight.opt_state))),
                  jax.tree.leaves(jax.device_get((resumed.params, resumed.opt_state)))):
    np.testing.assert_array_equal(a, b)
