"""Samplers driven by the ideal denoiser of a Gaussian mixture, whose samples are known exactly."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy.integrate import solve_ivp

from jaxmm import diffusion
from jaxmm import errors

MIXTURE = diffusion.mixture_2d()
N_SAMPLES = 4000
# MMD² of 4000 true samples against 4000 others stays within ±2e-4; the
# broken variants below give > 5e-3.
MMD_THRESHOLD = 7e-4

# (sampler, sample() arguments): enough steps for each to be near exact.
CONFIGS = [
    ("euler", dict(num_steps=128)),
    ("heun", dict(num_steps=32)),
    ("heun", dict(num_steps=32, S_churn=20.0, S_min=0.01, S_max=50.0)),
    ("ddim", dict(num_steps=256, eta=1.0)),
    ("dpmpp_2m", dict(num_steps=32)),
    ("unipc", dict(num_steps=16)),
    ("unipc", dict(num_steps=32, order=3, variant="bh1")),
    ("euler_maruyama", dict(num_steps=256)),
    ("langevin", dict(num_steps=10, steps_per_level=50, sigma_min=0.01, sigma_max=5.0,
                      rho=math.inf)),
]
CONFIG_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CONFIGS]


def _ideal_denoiser(xp, x, sigma):
  """E[x0 | x] of MIXTURE written out for 2-D (explicit 2×2 inverses), with xp = np or jnp."""
  w, mu, cov = MIXTURE.weights, MIXTURE.means, MIXTURE.covariances
  s2 = (sigma**2)[:, None]
  a, b, c = cov[:, 0, 0] + s2, cov[:, 0, 1], cov[:, 1, 1] + s2  # [B, K]: Σ_k + σ²I
  det = a * c - b * b
  dx, dy = x[:, None, 0] - mu[:, 0], x[:, None, 1] - mu[:, 1]
  ux, uy = (c * dx - b * dy) / det, (a * dy - b * dx) / det  # (Σ_k + σ²I)⁻¹(x − μ_k)
  logit = xp.log(w) - 0.5 * (dx * ux + dy * uy) - 0.5 * xp.log(det)
  r = xp.exp(logit - logit.max(axis=1, keepdims=True))
  r = r / r.sum(axis=1, keepdims=True)
  mean_x = mu[:, 0] + cov[:, 0, 0] * ux + cov[:, 0, 1] * uy
  mean_y = mu[:, 1] + cov[:, 1, 0] * ux + cov[:, 1, 1] * uy
  return xp.stack([(r * mean_x).sum(axis=1), (r * mean_y).sum(axis=1)], axis=-1), logit


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.fixture(scope="module")
def true_samples():
  return MIXTURE.sample(jax.random.key(100), N_SAMPLES)


def test_mixture_denoiser_and_log_prob_match_numpy(x64):
  rng = np.random.default_rng(0)
  sigmas = np.repeat([0.002, 0.05, 0.5, 3.0, 80.0], 50)
  x = rng.normal(size=(250, 2)) * (1 + sigmas[:, None])
  expected, logit = _ideal_denoiser(np, x, sigmas)
  denoised, log_p = jax.jit(lambda x, s: (MIXTURE.denoiser(x, s), MIXTURE.log_prob(x, s)))(
      jnp.asarray(x), jnp.asarray(sigmas))
  np.testing.assert_allclose(denoised, expected, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(log_p,
                             np.log(np.exp(logit).sum(axis=1)) - math.log(2 * math.pi),
                             rtol=1e-9)


def test_mixture_denoiser_is_tweedie(x64):
  """E[x0 | x] = x + σ²·∇log p(x; σ) (Karras et al. 2022, eq. 3)."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=(20, 2)))
  sigma = jnp.full(20, 0.3)
  score = jax.jit(jax.grad(lambda x: jnp.sum(MIXTURE.log_prob(x, sigma))))(x)
  np.testing.assert_allclose(jax.jit(MIXTURE.denoiser)(x, sigma),
                             x + 0.09 * score,
                             rtol=1e-9,
                             atol=1e-12)


def test_mixture_samples_have_the_mixture_moments():
  x = np.asarray(jax.jit(MIXTURE.sample, static_argnums=1)(jax.random.key(0), 100_000), np.float64)
  w, mu, cov = MIXTURE.weights, MIXTURE.means, MIXTURE.covariances
  mean = w @ mu
  second = np.einsum("k,kij->ij", w, cov + np.einsum("ki,kj->kij", mu, mu))
  np.testing.assert_allclose(x.mean(0), mean, atol=0.01)
  np.testing.assert_allclose(np.cov(x.T), second - np.outer(mean, mean), atol=0.01)


def test_mmd2_matches_the_double_sum(x64):
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(7, 2)), rng.normal(size=(5, 2)) + 0.5
  bandwidths = (0.3, 1.0)

  def k(a, b):
    return np.mean([np.exp(-np.sum((a - b)**2) / (2 * h * h)) for h in bandwidths])

  kxx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / 42
  kyy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
  kxy = sum(k(x[i], y[j]) for i in range(7) for j in range(5)) / 35
  got = diffusion.mmd2(jnp.asarray(x), jnp.asarray(y), bandwidths, block=3)
  np.testing.assert_allclose(got, kxx + kyy - 2 * kxy, rtol=1e-12)


@functools.lru_cache(maxsize=None)
def _jitted_sample(config_index):
  name, kw = CONFIGS[config_index]
  return jax.jit(
      lambda rng: diffusion.sample(MIXTURE.denoiser, rng, (N_SAMPLES, 2), sampler=name, **kw))


@pytest.mark.parametrize("index", range(len(CONFIGS)), ids=CONFIG_IDS)
def test_every_sampler_reproduces_the_mixture(true_samples, index):
  fn = _jitted_sample(index)
  x = fn(jax.random.key(0))
  assert x.shape == (N_SAMPLES, 2) and bool(jnp.all(jnp.isfinite(x)))
  assert float(diffusion.mmd2(x, true_samples)) < MMD_THRESHOLD
  # Deterministic given rng, and the rng matters.
  np.testing.assert_array_equal(fn(jax.random.key(0)), x)
  assert not np.allclose(fn(jax.random.key(1)), x)


def test_threshold_separates_right_from_wrong(true_samples):
  """The threshold is above the noise of true samples and below broken variants."""
  other = MIXTURE.sample(jax.random.key(101), N_SAMPLES)
  assert abs(float(diffusion.mmd2(other, true_samples))) < MMD_THRESHOLD / 3
  wider = diffusion.GaussianMixture(MIXTURE.weights, MIXTURE.means, 2 * MIXTURE.covariances)
  wrong_denoiser = jax.jit(
      lambda rng: diffusion.sample(wider.denoiser, rng, (N_SAMPLES, 2), num_steps=32))
  # A sampler bug: the start is drawn at 0.7·σ_max but treated as σ_max.
  sigmas = diffusion.karras_sigmas(32, 0.002, 80.0)
  wrong_start = jax.jit(lambda rng: diffusion.sample_heun(
      MIXTURE.denoiser, 0.7 * 80.0 * jax.random.normal(rng, (N_SAMPLES, 2)), sigmas, rng))
  for wrong in (wrong_denoiser, wrong_start):
    x = wrong(jax.random.key(0))
    assert float(diffusion.mmd2(x, true_samples)) > 5 * MMD_THRESHOLD


@functools.lru_cache(maxsize=None)
def _reference_solution(sigma_max=80.0, sigma_min=0.002, batch=64):
  """(x_T, x0): x_T [batch, 2] at sigma_max, and x0 from the probability-flow ODE solved by scipy
  (DOP853, rtol 1e-12) in log σ down to σ_min, then x0 = D(x; σ_min).

  Every sampler's last step is x = D(x; σ_min), so x0 is their limit as the
  number of steps grows.
  """
  x_start = np.random.default_rng(3).normal(size=(batch, 2)) * sigma_max

  def rhs(log_sigma, flat):
    x = flat.reshape(batch, 2)
    denoised, _ = _ideal_denoiser(np, x, np.full(batch, math.exp(log_sigma)))
    return (x - denoised).ravel()  # dx/dlog σ = σ·dx/dσ

  solution = solve_ivp(rhs, (math.log(sigma_max), math.log(sigma_min)),
                       x_start.ravel(),
                       method="DOP853",
                       rtol=1e-12,
                       atol=1e-12)
  x_min = solution.y[:, -1].reshape(batch, 2)
  return x_start, _ideal_denoiser(np, x_min, np.full(batch, sigma_min))[0]


@pytest.mark.parametrize("name,kw,order", [("euler", {}, 1), ("heun", {}, 2), ("dpmpp_2m", {}, 2),
                                           ("unipc", dict(order=1), 2), ("unipc", {}, 3)])
def test_convergence_order(x64, name, kw, order):
  """The error from a fixed x_T falls as num_steps^−order (log-log slope fitted over 64…256)."""
  x_start, reference = _reference_solution()
  steps = (64, 128, 256)
  errs = []
  for num_steps in steps:
    sigmas = diffusion.karras_sigmas(num_steps, 0.002, 80.0)
    sampler = functools.partial(diffusion.SAMPLERS[name], _denoiser, sigmas=sigmas, **kw)
    x = jax.jit(lambda x: sampler(x, rng=jax.random.key(0)))(jnp.asarray(x_start))
    errs.append(np.sqrt(np.mean(np.sum((np.asarray(x) - reference)**2, axis=1))))
  slope = np.polyfit(np.log(steps), np.log(errs), 1)[0]
  assert abs(slope + order) < 0.3, (errs, slope)


NFE_CONFIGS = [
    ("euler", {}),
    ("heun", {}),
    ("heun", dict(S_churn=5.0)),
    ("ddim", dict(eta=0.5)),
    ("dpmpp_2m", {}),
    ("unipc", dict(order=3)),
    ("euler_maruyama", {}),
    ("langevin", dict(steps_per_level=3)),
]


@pytest.mark.parametrize("name,kw", NFE_CONFIGS)
def test_nfe_counts_denoiser_calls_and_key_types_agree(name, kw):
  """Unjitted, so that every call reaches the Python counter; num_steps from 1 up."""
  for num_steps in (1, 3):
    calls = []

    def counting(x, sigma):
      assert sigma.shape == x.shape[:1]
      calls.append(1)
      return 0.5 * x

    run = functools.partial(diffusion.sample,
                            counting,
                            shape=(3, 2),
                            sampler=name,
                            num_steps=num_steps,
                            **kw)
    with jax.disable_jit():
      new = run(jax.random.key(7))
      assert len(calls) == diffusion.nfe(name, num_steps, **kw)
      legacy = run(jax.random.PRNGKey(7))
    np.testing.assert_array_equal(new, legacy)


def test_nfe_formulas():
  assert diffusion.nfe("heun", 18) == 35  # EDM's 18 steps
  assert diffusion.nfe("euler", 10) == diffusion.nfe("dpmpp_2m", 10) == 10
  assert diffusion.nfe("langevin", 10, steps_per_level=5) == 51
  assert diffusion.nfe("langevin", 2) == 201


def _denoiser(x, sigma):
  return _ideal_denoiser(jnp, x, sigma)[0]


def test_start_keeps_what_low_noise_leaves_and_loses_it_at_high_noise():
  # SDEdit: 300 points at each component's mean, noised to sigma_max and denoised.
  start = jnp.asarray(np.repeat(MIXTURE.means, 300, axis=0), jnp.float32)
  component = np.repeat(np.arange(3), 300)
  rng = jax.random.key(0)

  def kept(sigma_max):
    x = diffusion.sample(MIXTURE.denoiser, rng, start.shape, num_steps=16, sigma_max=sigma_max,
                         start=start)
    nearest = np.argmin(np.linalg.norm(np.asarray(x)[:, None] - MIXTURE.means, axis=-1), axis=1)
    return np.mean(nearest == component)

  assert kept(0.2) > 0.95  # σ well below the components' distance of about a unit
  assert kept(80.0) < 0.5  # components drawn by their weights: 1/3 expected
  np.testing.assert_array_equal(
      diffusion.sample(MIXTURE.denoiser, rng, start.shape, start=jnp.zeros_like(start)),
      diffusion.sample(MIXTURE.denoiser, rng, start.shape))
  with pytest.raises(ValueError, match=r"start has shape \(900, 2\), the samples \(4, 2\)"):
    diffusion.sample(MIXTURE.denoiser, rng, (4, 2), start=start)


def test_ddim_without_noise_is_euler():
  sigmas = diffusion.karras_sigmas(12, 0.002, 80.0)
  x = 80.0 * jax.random.normal(jax.random.key(0), (256, 2))
  ddim = jax.jit(lambda x: diffusion.sample_ddim(_denoiser, x, sigmas, jax.random.key(1)))
  euler = jax.jit(lambda x: diffusion.sample_euler(_denoiser, x, sigmas, jax.random.key(2)))
  np.testing.assert_array_equal(ddim(x), euler(x))


def test_ddim_step_is_ddim_eq_12_in_vp_variables(x64):
  """One step σ0 → σ1 of sample_ddim against DDIM's update in x_vp = x/sqrt(1 + σ²), ᾱ = 1/(1 + σ²).

  The grid [σ0, σ1, 0] makes one noisy step, then D; D(x) = 0.5·x lets the test
  read the step's result back. The step's noise is normal(split(rng, 2)[0]).
  """
  sigma0, sigma1, eta = 3.0, 1.2, 0.8
  x = np.random.default_rng(4).normal(size=(5, 2)) * sigma0
  rng = jax.random.key(5)
  out = diffusion.sample_ddim(lambda x, s: 0.5 * x,
                              jnp.asarray(x),
                              np.array([sigma0, sigma1, 0.0]),
                              rng,
                              eta=eta)
  z = np.asarray(jax.random.normal(jax.random.split(rng, 2)[0], x.shape, jnp.float64))
  a_t, a_prev = 1 / (1 + sigma0**2), 1 / (1 + sigma1**2)
  x_vp, x0_hat = x * np.sqrt(a_t), 0.5 * x
  eps_hat = (x_vp - np.sqrt(a_t) * x0_hat) / np.sqrt(1 - a_t)
  sigma_eta = eta * np.sqrt((1 - a_prev) / (1 - a_t)) * np.sqrt(1 - a_t / a_prev)  # eq. 16
  x_vp_prev = (np.sqrt(a_prev) * x0_hat + np.sqrt(1 - a_prev - sigma_eta**2) * eps_hat +
               sigma_eta * z)  # eq. 12
  np.testing.assert_allclose(2 * np.asarray(out), x_vp_prev / np.sqrt(a_prev), rtol=1e-12)


def test_heun_churn_only_inside_its_sigma_range():
  sigmas = diffusion.karras_sigmas(8, 0.002, 80.0)
  x = 80.0 * jax.random.normal(jax.random.key(0), (64, 2))
  run = lambda **kw: jax.jit(lambda x: diffusion.sample_heun(_denoiser, x, sigmas, jax.random.key(
      1), **kw))(x)
  plain = run()
  np.testing.assert_array_equal(run(S_churn=30.0, S_min=100.0, S_max=200.0), plain)
  assert not np.allclose(run(S_churn=30.0), plain)


def test_batch_sharded_run_equals_unsharded():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  batch = NamedSharding(mesh, P("data"))
  # The noise of the start and of every step is drawn inside the sharded program.
  run = lambda rng: diffusion.sample(_denoiser, rng, (64, 2), sampler="euler_maruyama", num_steps=4)
  sharded = jax.jit(run, out_shardings=batch)(jax.random.key(0))
  assert len(sharded.sharding.device_set) == 8
  np.testing.assert_allclose(sharded, jax.jit(run)(jax.random.key(0)), rtol=1e-6, atol=1e-6)
  # A sampler given an already sharded start.
  sigmas = diffusion.karras_sigmas(4, 0.002, 80.0)
  start = 80.0 * jax.random.normal(jax.random.key(1), (64, 2))
  solve = jax.jit(lambda x: diffusion.sample_unipc(_denoiser, x, sigmas, jax.random.key(2)))
  np.testing.assert_allclose(solve(jax.device_put(start, batch)),
                             solve(start),
                             rtol=1e-6,
                             atol=1e-6)


def test_karras_grid_is_eq_5():
  sigmas = diffusion.karras_sigmas(5, 0.002, 80.0, rho=7.0)
  i = np.arange(5)
  expected = (80.0**(1 / 7) + i / 4 * (0.002**(1 / 7) - 80.0**(1 / 7)))**7
  np.testing.assert_allclose(sigmas, np.append(expected, 0.0), rtol=1e-12)
  np.testing.assert_array_equal(diffusion.karras_sigmas(1, 0.002, 80.0), [80.0, 0.0])
  loglinear = diffusion.karras_sigmas(5, 0.002, 80.0, rho=math.inf)
  np.testing.assert_allclose(loglinear[:-1], np.geomspace(80.0, 0.002, 5), rtol=1e-12)
  np.testing.assert_allclose(diffusion.karras_sigmas(5, 0.002, 80.0, rho=1e6), loglinear, rtol=1e-4)


def test_a_traced_sigma_max_gives_the_grid_and_samples_of_its_value():
  for rho in (7.0, math.inf):
    traced = jax.jit(lambda sigma_max, rho=rho: diffusion.karras_sigmas(5, 0.002, sigma_max, rho))
    np.testing.assert_allclose(traced(80.0), diffusion.karras_sigmas(5, 0.002, 80.0, rho),
                               rtol=1e-5)
  start, rng = jnp.asarray(MIXTURE.means, jnp.float32), jax.random.key(0)
  sample = jax.jit(lambda sigma_max, sampler="heun": diffusion.sample(
      _denoiser, rng, start.shape, sampler=sampler, num_steps=8, sigma_max=sigma_max, start=start),
                   static_argnames="sampler")
  np.testing.assert_allclose(
      sample(4.0),
      diffusion.sample(_denoiser, rng, start.shape, num_steps=8, sigma_max=4.0, start=start),
      atol=1e-5)
  with pytest.raises(errors.UserError, match="'unipc'.*numbers, not traced values"):
    sample(4.0, sampler="unipc")


def test_bad_arguments_raise_user_error():
  run = functools.partial(diffusion.sample, MIXTURE.denoiser, jax.random.key(0), (4, 2))
  with pytest.raises(errors.UserError, match="'euler'.*'heun'.*did you mean 'heun'"):
    run(sampler="huen")
  for num_steps in (0, 2.5):
    with pytest.raises(errors.UserError, match="num_steps.*integer >= 1"):
      run(num_steps=num_steps)
  with pytest.raises(errors.UserError, match="S_churn"):
    run(sampler="heun", s_churn=1.0)
  with pytest.raises(errors.UserError, match="takes no arguments"):
    run(sampler="euler", eta=1.0)
  with pytest.raises(errors.UserError, match="sigma_min"):
    run(sigma_min=10.0, sigma_max=1.0)
  with pytest.raises(errors.UserError, match="order"):
    run(sampler="unipc", order=5)
  with pytest.raises(errors.UserError, match="'langevin'"):
    diffusion.nfe("langevn", 10)
  with pytest.raises(errors.UserError, match="num_steps"):
    diffusion.nfe("heun", 0)
