"""make_optimizer and make_schedule against closed-form values, and their config errors."""
import math

import ml_collections
import numpy as np
import optax
import pytest

from jaxmm import train
from jaxmm.errors import UserError
from jaxmm.train.optim import check_optim_config


def optim_config(**overrides):
  """A full `config.optim`: constant lr 0.1, no warmup, decay or clipping unless overridden."""
  values = dict(name="adamw",
                lr=0.1,
                weight_decay=0.0,
                b1=0.9,
                b2=0.999,
                eps=1e-8,
                momentum=0.0,
                warmup_steps=0,
                schedule="constant",
                grad_clip_norm=None)
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def run_updates(tx, params, grads):
  """The updates `tx` returns for each gradient of `grads` in turn, as float64 numpy."""
  state = tx.init(params)
  updates = []
  for g in grads:
    u, state = tx.update(g, state, params)
    updates.append({k: np.asarray(v, np.float64) for k, v in u.items()})
  return updates


def test_warmup_boundary():
  """Linear warmup from 0 reaches exactly lr at step warmup_steps, where the decay starts."""
  lr, warmup, total = 0.1, 4, 10
  _, schedule = train.make_optimizer(
      optim_config(lr=lr, warmup_steps=warmup, schedule="cosine"), total)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(warmup - 1)), lr * (warmup - 1) / warmup, rtol=1e-6)
  assert schedule(warmup) == np.float32(lr)  # the peak, exactly
  np.testing.assert_allclose(float(schedule(warmup + 1)),
                             lr * 0.5 * (1 + math.cos(math.pi / (total - warmup))),
                             rtol=1e-6)
  _, no_warmup = train.make_optimizer(optim_config(lr=lr, schedule="cosine"), total)
  assert no_warmup(0) == np.float32(lr)


# The factor on lr after warmup, as a function of the fraction of the decay steps done.
DECAYS = {
    "cosine": lambda frac: 0.5 * (1 + math.cos(math.pi * frac)),
    "linear": lambda frac: 1 - frac,
    "constant": lambda frac: 1.0,
}


@pytest.mark.parametrize("name", DECAYS)
def test_schedule_after_warmup(name):
  """Each schedule after warmup, up to the last step, matches its closed form."""
  lr, warmup, total = 0.3, 2, 10
  schedule = train.make_schedule(optim_config(lr=lr, warmup_steps=warmup, schedule=name), total)
  # total - 1 is the last step trained; total is where the decay ends.
  for step in (warmup, warmup + 1, 6, total - 1, total):
    expected = lr * DECAYS[name]((step - warmup) / (total - warmup))
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-6, atol=1e-8)


def test_adamw_decays_matrices_only():
  """With zero gradients AdamW scales 2-D kernels by 1 - lr * wd and leaves the rest."""
  lr, wd = 0.1, 0.01
  tx, _ = train.make_optimizer(optim_config(lr=lr, weight_decay=wd), 10)
  rng = np.random.default_rng(0)
  params = {
      "kernel": rng.normal(size=(3, 4)).astype(np.float32),
      "bias": rng.normal(size=(4,)).astype(np.float32),
      "norm_scale": rng.normal(size=(4,)).astype(np.float32),
      "log_scale": np.float32(2.3),
  }
  zeros = {k: np.zeros_like(v) for k, v in params.items()}
  new = optax.apply_updates(params, run_updates(tx, params, [zeros])[0])
  # Zero gradients leave Adam's moments at 0, so only the decoupled decay moves a parameter.
  np.testing.assert_allclose(np.asarray(new["kernel"], np.float64),
                             params["kernel"].astype(np.float64) * (1 - lr * wd),
                             rtol=1e-6)
  for key in ("bias", "norm_scale", "log_scale"):
    np.testing.assert_array_equal(new[key], params[key])


GRADS = {"a": np.array([3.0, 4.0], np.float32), "b": np.array([[12.0]], np.float32)}  # norm 13


@pytest.mark.parametrize("clip,scale", [(1.0, 1 / 13), (6.5, 0.5), (20.0, 1.0), (0.0, 1.0),
                                        (None, 1.0)],
                         ids=["above", "half", "below", "zero", "none"])
def test_grad_clipping(clip, scale):
  """A gradient above grad_clip_norm is rescaled to that norm before SGD; others are not."""
  lr = 0.5
  tx, _ = train.make_optimizer(optim_config(name="sgd", lr=lr, grad_clip_norm=clip), 10)
  params = {k: np.zeros_like(v) for k, v in GRADS.items()}
  update = run_updates(tx, params, [GRADS])[0]
  for key, g in GRADS.items():
    np.testing.assert_allclose(update[key], -lr * scale * g.astype(np.float64), rtol=1e-6)
  if clip and clip < 13:
    norm = math.sqrt(sum(np.sum(u**2) for u in update.values()))
    np.testing.assert_allclose(norm, lr * clip, rtol=1e-6)


def test_sgd_momentum_is_heavy_ball():
  """SGD's updates are -lr * v with v = momentum * v + g (heavy ball)."""
  lr, momentum = 0.1, 0.9
  tx, _ = train.make_optimizer(optim_config(name="sgd", lr=lr, momentum=momentum), 10)
  g1 = {"w": np.array([1.0, -2.0, 0.5], np.float32)}
  g2 = {"w": np.array([0.25, 3.0, -1.0], np.float32)}
  u1, u2 = run_updates(tx, {"w": np.zeros(3, np.float32)}, [g1, g2])
  v1 = g1["w"].astype(np.float64)
  v2 = momentum * v1 + g2["w"].astype(np.float64)
  np.testing.assert_allclose(u1["w"], -lr * v1, rtol=1e-6)
  np.testing.assert_allclose(u2["w"], -lr * v2, rtol=1e-6)


def test_edge_values_are_accepted_and_mean_what_they_say():
  """The closed ends of the valid ranges: b1 = b2 = eps = 0 make Adam's update lr·sign(g)
  (m = g, v = g²), warmup_steps = total - 1 ramps from 0, grad_clip_norm = 0 clips nothing, and
  SGD without momentum is -lr·g."""
  lr, warmup, total = 0.1, 9, 10
  tx, _ = train.make_optimizer(
      optim_config(lr=lr, warmup_steps=warmup, b1=0.0, b2=0.0, eps=0.0, grad_clip_norm=0.0), total)
  grads = [{"w": np.array([3e3, -2e-3, 5.0], np.float32)} for _ in range(3)]
  for step, update in enumerate(run_updates(tx, {"w": np.zeros(3, np.float32)}, grads)):
    np.testing.assert_allclose(update["w"], -lr * step / warmup * np.array([1, -1, 1]), rtol=1e-6)
  sgd, _ = train.make_optimizer(optim_config(name="sgd", momentum=0.0, weight_decay=0.0), total)
  (update,) = run_updates(sgd, {"w": np.zeros(3, np.float32)}, grads[:1])
  np.testing.assert_allclose(update["w"], -0.1 * grads[0]["w"], rtol=1e-6)


WARMUP_RANGE = "[0, total_steps=10): an integer >= 0 and smaller than total_steps"
BAD_VALUES = [
    (dict(name="adam"), "optim.name", "'adamw', 'sgd'"),
    (dict(schedule="cosin"), "optim.schedule", "'cosine', 'linear', 'constant'"),
    (dict(schedule=None), "optim.schedule", "'cosine', 'linear', 'constant'"),
    (dict(lr=0.0), "optim.lr", "> 0"),
    (dict(lr=-1e-3), "optim.lr", "> 0"),
    (dict(weight_decay=-1e-4), "optim.weight_decay", ">= 0"),
    (dict(grad_clip_norm=-1.0), "optim.grad_clip_norm", ">= 0 (0 or None: no clipping)"),
    (dict(warmup_steps=10), "optim.warmup_steps", WARMUP_RANGE),
    (dict(warmup_steps=-1), "optim.warmup_steps", WARMUP_RANGE),
    (dict(b1=1.0), "optim.b1", "[0, 1)"),
    (dict(b1=-0.1), "optim.b1", "[0, 1)"),
    (dict(b2=1.5), "optim.b2", "[0, 1)"),
    (dict(eps=-1e-8), "optim.eps", ">= 0"),
    (dict(name="sgd", momentum=1.0), "optim.momentum", "[0, 1)"),
    (dict(name="sgd", momentum=-0.5), "optim.momentum", "[0, 1)"),
]


@pytest.mark.parametrize("overrides,key,valid",
                         BAD_VALUES,
                         ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, _, _ in BAD_VALUES])
def test_bad_values_raise_user_error(overrides, key, valid):
  """A bad value raises UserError naming the key and its valid values or range."""
  config = optim_config(**overrides)
  for check in (check_optim_config, train.make_optimizer):
    with pytest.raises(UserError) as error:
      check(config, 10)
    message = str(error.value)
    assert message.startswith(key + "=") and valid in message, message
