"""Guidance on a σ interval (Kynkäänniemi et al. 2024) and autoguidance's combination, on the
2-D mixture's exact denoisers: identity outside the interval, and the network calls counted."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import diffusion
from jaxmm import errors

MIXTURE = diffusion.mixture_2d()
# A worse model of the same data: every component's covariance widened by 0.3²·I.
BLURRED = diffusion.GaussianMixture(MIXTURE.weights, MIXTURE.means,
                                    MIXTURE.covariances + 0.09 * np.eye(2))
INTERVAL = (0.3, 2.0)


def _points(sigma, n=64):
  x = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32) * np.float32(sigma)
  return jnp.asarray(x), jnp.full((n,), sigma, jnp.float32)


@pytest.mark.parametrize("sigma", [0.1, 0.3, 5.0, 80.0])  # 0.3 = lo: the interval is (lo, hi]
def test_outside_the_interval_the_guided_denoiser_is_the_main_one_bit_for_bit(sigma):
  guided = jax.jit(diffusion.extrapolate(MIXTURE.denoiser, BLURRED.denoiser, 3.0, INTERVAL))
  x, sigmas = _points(sigma)
  np.testing.assert_array_equal(guided(x, sigmas), jax.jit(MIXTURE.denoiser)(x, sigmas))


@pytest.mark.parametrize("sigma", [0.31, 1.0, 2.0])
def test_inside_the_interval_it_is_the_guide_plus_w_times_the_difference(sigma):
  w = 3.0
  guided = jax.jit(diffusion.extrapolate(MIXTURE.denoiser, BLURRED.denoiser, w, INTERVAL))
  x, sigmas = _points(sigma)
  main = np.asarray(MIXTURE.denoiser(x, sigmas), np.float64)
  guide = np.asarray(BLURRED.denoiser(x, sigmas), np.float64)
  # Two float32 roundings of values |D| <= 2 (the means' scale), times at most w + 1.
  np.testing.assert_allclose(guided(x, sigmas), guide + w * (main - guide), rtol=0, atol=1e-5)


def test_rows_are_guided_by_their_own_sigma():
  guided = diffusion.extrapolate(MIXTURE.denoiser, BLURRED.denoiser, 3.0, INTERVAL)
  x, _ = _points(1.0, n=2)
  sigmas = jnp.array([1.0, 5.0], jnp.float32)
  both = guided(x, sigmas)
  np.testing.assert_array_equal(both[1], MIXTURE.denoiser(x, sigmas)[1])
  assert np.abs(both[0] - MIXTURE.denoiser(x, sigmas)[0]).max() > 1e-3


def _karras_levels(n, sigma_min=0.002, sigma_max=80.0, rho=7.0):
  """Karras et al. (2022) eq. 5 in float64, written out here."""
  i = np.arange(n)
  return (sigma_max**(1 / rho) + i / (n - 1) * (sigma_min**(1 / rho) - sigma_max**(1 / rho)))**rho


@pytest.mark.parametrize("sampler,kw", [("euler", {}), ("heun", {}), ("dpmpp_2m", {}),
                                        ("heun", dict(S_churn=10.0, S_min=0.05, S_max=1.0))])
def test_nfe_counts_the_network_calls_the_guided_sampler_makes(sampler, kw):
  """Unjitted, so that every call of either network reaches the counter."""
  calls = []

  def network(mixture, name):

    def call(x, sigma):
      calls.append((name, float(sigma[0])))
      return mixture.denoiser(x, sigma)

    return call

  guided = diffusion.extrapolate(network(MIXTURE, "main"), network(BLURRED, "guide"), 2.0,
                                 INTERVAL)
  with jax.disable_jit():
    diffusion.sample(guided, jax.random.key(0), (4, 2), sampler=sampler, num_steps=8, **kw)
  assert len(calls) == diffusion.nfe(sampler, 8, guided=True, interval=INTERVAL, **kw)
  assert all(INTERVAL[0] < s <= INTERVAL[1] for name, s in calls if name == "guide")
  assert len(calls) < 2 * diffusion.nfe(sampler, 8, **kw)


def test_nfe_of_heun_on_the_edm_grid_by_hand():
  # 18 levels of eq. 5: Heun calls at σ_0..σ_16 (first slopes), σ_1..σ_17 (second), σ_17 (last).
  levels = _karras_levels(18)
  at = np.concatenate([levels[:-1], levels[1:], levels[-1:]])
  inside = np.sum((0.28 < at) & (at <= 5.42))
  assert diffusion.nfe("heun", 18, guided=True, interval=(0.28, 5.42)) == 35 + inside
  assert diffusion.nfe("heun", 18, guided=True) == 70
  assert diffusion.nfe("heun", 18) == 35
  assert 0 < inside < 35


@pytest.mark.parametrize("interval,message", [
    ((2.0, 1.0), "give 0 <= LO < HI"),
    ((1.0, 1.0), "give 0 <= LO < HI"),
    ((-1.0, 1.0), "give 0 <= LO < HI"),
    ((math.nan, 1.0), "give 0 <= LO < HI"),
    ((1.0,), "give two noise levels LO HI"),
    ("ab", "give two noise levels LO HI"),
])
def test_a_bad_interval_says_what_to_give(interval, message):
  with pytest.raises(errors.UserError, match=message):
    diffusion.check_interval(interval, "--guidance-interval")
