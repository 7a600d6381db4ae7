"""Schedules and the denoising objective against Table 1 of Karras et al. (2022), in float64 NumPy."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import diffusion
from jaxmm import errors

SIGMAS = np.array([0.002, 0.03, 0.2, 0.5, 1.0, 3.0, 17.0, 80.0, 150.0])


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


# Table 1, written out independently of jaxmm: name -> (c_skip, c_out, c_in, c_noise, λ) of σ.
def _vp_sigma(t, beta_d=19.9, beta_min=0.1):
  return np.sqrt(np.exp(0.5 * beta_d * t**2 + beta_min * t) - 1)


def _vp_t(sigma, beta_d=19.9, beta_min=0.1):
  return (np.sqrt(beta_min**2 + 2 * beta_d * np.log(sigma**2 + 1)) - beta_min) / beta_d


def _table1(name, s):
  one = np.ones_like(s)
  if name == "vp":
    return one, -s, 1 / np.sqrt(s**2 + 1), 999 * _vp_t(s), 1 / s**2
  if name == "ve":
    return one, s, one, np.log(0.5 * s), 1 / s**2
  if name == "edm":
    sd = 0.5
    return (sd**2 / (s**2 + sd**2), s * sd / np.sqrt(s**2 + sd**2), 1 / np.sqrt(sd**2 + s**2),
            0.25 * np.log(s), (s**2 + sd**2) / (s * sd)**2)
  assert name == "flow"
  t = s / (1 + s)
  return 1 - t, -t, 1 - t, t, 1 / t**2


@pytest.mark.parametrize("name", ["vp", "ve", "edm", "flow"])
def test_preconditioning_and_weight_match_table_1(x64, name):
  schedule = diffusion.get_schedule(name)
  c_skip, c_out, c_in, c_noise, weight = _table1(name, SIGMAS)
  got = schedule.precondition(jnp.asarray(SIGMAS))
  for value, expected in zip(got + (schedule.loss_weight(jnp.asarray(SIGMAS)),),
                             (c_skip, c_out, c_in, c_noise, weight)):
    assert value.dtype == jnp.float64
    # 1e-10: the reference's log(σ² + 1) loses digits at small σ that log1p keeps.
    np.testing.assert_allclose(value, expected, rtol=1e-10)


def test_vp_c_noise_is_m_minus_1_times_t(x64):
  t = np.array([1e-5, 1e-3, 0.1, 0.5, 1.0])
  _, _, _, c_noise = diffusion.get_schedule("vp").precondition(jnp.asarray(_vp_sigma(t)))
  np.testing.assert_allclose(c_noise, 999 * t, rtol=1e-9)


def test_sampling_ranges():
  vp = diffusion.get_schedule("vp")
  assert vp.sigma_max == pytest.approx(_vp_sigma(1.0), rel=1e-12)
  assert vp.sigma_min == pytest.approx(_vp_sigma(1e-3), rel=1e-12)
  assert 152 < vp.sigma_max < 153 and 0.010 < vp.sigma_min < 0.011
  ve, edm, flow = (diffusion.get_schedule(n) for n in ("ve", "edm", "flow"))
  assert (ve.sigma_min, ve.sigma_max) == (0.02, 100.0)
  assert (edm.sigma_min, edm.sigma_max) == (0.002, 80.0)
  t_range = [s / (1 + s) for s in (flow.sigma_min, flow.sigma_max)]
  np.testing.assert_allclose(t_range, [1 / 1001, 1000 / 1001], rtol=1e-12)


def test_flow_convention(x64):
  """x_t = (1 − t)·x0 + t·ε is what the network sees; F = v = ε − x0 gives D = x0."""
  rng = np.random.default_rng(0)
  x0, eps = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  t = np.array([0.001, 0.1, 0.3, 0.5, 0.9, 0.999])
  sigma = t / (1 - t)
  x = x0 + sigma[:, None] * eps
  c_skip, c_out, c_in, c_noise = diffusion.get_schedule("flow").precondition(jnp.asarray(sigma))
  np.testing.assert_allclose(c_in[:, None] * x, (1 - t[:, None]) * x0 + t[:, None] * eps,
                             atol=1e-12)
  np.testing.assert_allclose(c_noise, t, rtol=1e-12)
  v = eps - x0
  np.testing.assert_allclose(c_skip[:, None] * x + c_out[:, None] * v, x0, atol=1e-9)


def test_flow_weighted_loss_is_velocity_loss(x64):
  """λ(σ)·‖D − x0‖² = ‖F − v‖² for any network output F."""
  schedule = diffusion.get_schedule("flow")
  rng = np.random.default_rng(1)
  x0, eps, out = (rng.normal(size=(5, 3, 4)) for _ in range(3))
  sigma = np.exp(rng.normal(size=5) * 2)
  x = x0 + sigma[:, None, None] * eps
  denoised = diffusion.denoiser(lambda x_in, c_noise: jnp.asarray(out),
                                schedule)(jnp.asarray(x), jnp.asarray(sigma))
  weighted = schedule.loss_weight(jnp.asarray(sigma)) * np.mean((denoised - x0)**2, axis=(1, 2))
  np.testing.assert_allclose(weighted, np.mean((out - (eps - x0))**2, axis=(1, 2)), rtol=1e-10)


def _net_np(x_in, c_noise):
  return np.tanh(0.7 * x_in + 0.3 * c_noise[:, None, None]) + 0.1 * x_in**2


def _net_jax(x_in, c_noise):
  return jnp.tanh(0.7 * x_in + 0.3 * c_noise[:, None, None]) + 0.1 * x_in**2


@pytest.mark.parametrize("name", ["vp", "ve", "edm", "flow"])
def test_denoising_loss_matches_numpy(x64, name):
  schedule = diffusion.get_schedule(name)
  x0 = np.random.default_rng(2).normal(size=(8, 3, 4)) * 0.5
  rng = jax.random.key(3)
  loss = diffusion.denoising_loss(_net_jax, schedule, jnp.asarray(x0), rng)
  # The documented draws: σ from the first half of split(rng), n from the second.
  sigma_rng, noise_rng = jax.random.split(rng)
  sigma = np.asarray(schedule.sample_sigma(sigma_rng, (8,), jnp.float64))
  noise = np.asarray(jax.random.normal(noise_rng, x0.shape, jnp.float64))
  c_skip, c_out, c_in, c_noise, weight = _table1(name, sigma)
  x = x0 + sigma[:, None, None] * noise
  expand = lambda c: c[:, None, None]
  denoised = expand(c_skip) * x + expand(c_out) * _net_np(expand(c_in) * x, c_noise)
  expected = weight * np.mean((denoised - x0)**2, axis=(1, 2))
  assert loss.shape == (8,) and loss.dtype == jnp.float64
  np.testing.assert_allclose(loss, expected, rtol=1e-10)


@pytest.mark.parametrize("name", ["vp", "edm"])
def test_denoising_loss_gradient_under_jit_is_the_closed_form(x64, name):
  """For F(x_in, c) = a·x_in, D = (c_skip + a·c_out·c_in)·x, so the mean loss
  λ·mean((D − x0)²) has ∂/∂a = mean over the batch of λ·mean(2·(D − x0)·c_out·c_in·x)."""
  schedule = diffusion.get_schedule(name)
  x0 = np.random.default_rng(4).normal(size=(6, 2, 2)) * 0.5
  rng, scale = jax.random.key(5), 0.8

  def mean_loss(a):
    return jnp.mean(diffusion.denoising_loss(lambda x, c: a * x, schedule, jnp.asarray(x0), rng))

  value, grad = jax.jit(jax.value_and_grad(mean_loss))(scale)
  sigma_rng, noise_rng = jax.random.split(rng)
  sigma = np.asarray(schedule.sample_sigma(sigma_rng, (6,), jnp.float64))
  noise = np.asarray(jax.random.normal(noise_rng, x0.shape, jnp.float64))
  c_skip, c_out, c_in, _, weight = (c[:, None, None] for c in _table1(name, sigma))
  x = x0 + sigma[:, None, None] * noise
  residual = (c_skip + scale * c_out * c_in) * x - x0
  np.testing.assert_allclose(value, np.mean(weight * residual**2), rtol=1e-10)
  np.testing.assert_allclose(grad, np.mean(weight * 2 * residual * c_out * c_in * x), rtol=1e-10)


def test_edm_and_flow_sample_log_normal_sigma():
  for name, mean, std in [("edm", -1.2, 1.2), ("flow", 0.0, 1.0)]:
    log_sigma = np.log(diffusion.get_schedule(name).sample_sigma(jax.random.key(0), (200_000,)))
    assert abs(log_sigma.mean() - mean) < 0.015, name
    assert abs(log_sigma.std() - std) < 0.015, name
    # Normal, not merely right mean and std: the 2.5% and 97.5% quantiles.
    np.testing.assert_allclose(np.quantile(log_sigma, [0.025, 0.975]),
                               [mean - 1.96 * std, mean + 1.96 * std],
                               atol=0.04)


def _check_uniform(values, lo, hi):
  assert values.min() >= lo - 1e-6 * abs(lo) and values.max() <= hi + 1e-6 * abs(hi)
  width = hi - lo
  deciles = np.quantile(values, np.linspace(0.1, 0.9, 9))
  np.testing.assert_allclose(deciles, lo + width * np.linspace(0.1, 0.9, 9), atol=0.01 * width)
  assert values.min() < lo + 0.001 * width and values.max() > hi - 0.001 * width


def test_ve_samples_log_uniform_sigma():
  sigma = diffusion.get_schedule("ve").sample_sigma(jax.random.key(1), (200_000,))
  _check_uniform(np.log(np.asarray(sigma, np.float64)), math.log(0.02), math.log(100.0))


def test_vp_samples_uniform_t(x64):
  sigma = diffusion.get_schedule("vp").sample_sigma(jax.random.key(2), (200_000,), jnp.float64)
  _check_uniform(_vp_t(np.asarray(sigma)), 1e-5, 1.0)


def test_schedule_hyperparameters_are_passed_through(x64):
  edm = diffusion.get_schedule("edm", sigma_data=1.0)
  c_skip, _, _, _ = edm.precondition(jnp.asarray([1.0]))
  np.testing.assert_allclose(c_skip, [0.5])
  sigma = diffusion.get_schedule("ve", sigma_min=1.0,
                                 sigma_max=2.0).sample_sigma(jax.random.key(0), (1000,))
  assert sigma.min() >= 1.0 and sigma.max() <= 2.0


def test_bad_schedule_arguments_raise_user_error():
  with pytest.raises(errors.UserError, match="'edm'.*'flow'.*did you mean 'edm'"):
    diffusion.get_schedule("edn")
  with pytest.raises(errors.UserError, match="sigma_dat.*sigma_data"):
    diffusion.get_schedule("edm", sigma_dat=1.0)
  with pytest.raises(errors.UserError, match="sigma_max"):
    diffusion.get_schedule("ve", sigma_min=10.0, sigma_max=1.0)
  with pytest.raises(errors.UserError, match="P_std"):
    diffusion.get_schedule("flow", P_std=0.0)
