"""Samplers: from noise at sigma_max to data with a denoiser D(x, sigma) -> x0_hat.

x [B, ...], sigma [B]. All samplers work on x = x0 + σ·n, where the
probability-flow ODE is dx/dσ = (x − D(x; σ))/σ (Karras et al. 2022, eq. 1
with s(t) = 1, σ(t) = t, and the score ∇log p(x; σ) = (D(x; σ) − x)/σ², eq. 3)
and `to_d` is its right-hand side. Each is a function

    sample_NAME(denoiser, x, sigmas, rng, **kw) -> x0 [B, ...]

with x the starting point at sigmas[0] (e.g. sigmas[0]·N(0, I)), sigmas a grid
from `jaxmm.diffusion.sigmas` (num_steps = N levels, then 0) and rng a JAX
key (new-style or legacy), used only where the sampler draws noise. Steps
i = 0 … N−2 run in one `lax.scan`, so a sampler holds a single copy of the
denoiser in its program whatever N is. The last step, from σ_{N−1} to 0, is
Euler, which lands on D(x; σ_{N−1}); for the multistep methods it is their
lower-order final step.

`sample` draws x at sigma_max, builds the grid and runs one sampler by name;
`call_sigmas` lists the σ of the denoiser calls it makes and `nfe` counts them.
"""
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import errors
from jaxmm.diffusion import guidance
from jaxmm.diffusion import sigmas as sigma_grids


def to_d(x, sigma, denoised):
  """dx/dσ = (x − D(x; σ))/σ, the probability-flow ODE (Karras et al. 2022, eqs. 1, 3).

  x, denoised [B, ...]; sigma a scalar.
  """
  return (x - denoised) / sigma


def _denoise(denoiser, x, sigma):
  """D(x, σ) with the scalar σ given to the denoiser as [B]."""
  return denoiser(x, jnp.full(x.shape[:1], sigma, x.dtype))


def _normal(key, x):
  return jax.random.normal(key, x.shape, x.dtype)


def _prepare(x, sigmas, rng):
  """The grid in x's dtype and one key per step, [N + 1] and [N]."""
  sigmas = jnp.asarray(sigmas, x.dtype)
  return sigmas, jax.random.split(rng, sigmas.shape[0] - 1)


def _steps(step, carry, sigmas, keys, *coefficients):
  """Runs carry = step(carry, i, σ_i, σ_{i+1}, key_i, *coefficients_i) for i = 0 … N−2."""
  n = sigmas.shape[0] - 2
  if n == 0:  # a single step, the last one
    return carry

  def body(carry, xs):
    return step(carry, *xs), None

  xs = (jnp.arange(n), sigmas[:-2], sigmas[1:-1], keys[:n]) + tuple(c[:n] for c in coefficients)
  return jax.lax.scan(body, carry, xs)[0]


def sample_euler(denoiser, x, sigmas, rng):
  """Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1, first order).

  x_{i+1} = x_i + (σ_{i+1} − σ_i)·d_i. NFE = N.
  """
  sigmas, keys = _prepare(x, sigmas, rng)

  def step(x, i, sigma, sigma_next, key):
    return x + (sigma_next - sigma) * to_d(x, sigma, _denoise(denoiser, x, sigma))

  return _denoise(denoiser, _steps(step, x, sigmas, keys), sigmas[-2])


def sample_heun(denoiser, x, sigmas, rng, *, S_churn=0.0, S_min=0.0, S_max=math.inf, S_noise=1.0):
  """Heun's 2nd-order method with stochastic churn (Karras et al. 2022, Algorithm 2).

  At each level with S_min ≤ σ_i ≤ S_max, noise raises σ_i to
  σ̂_i = (1 + γ)·σ_i, γ = min(S_churn/N, √2 − 1), scaled by S_noise; then an
  Euler step to σ_{i+1} is corrected with the slope there. The last step is
  Euler (σ_{i+1} = 0). S_churn = 0 is the deterministic sampler
  (Algorithm 1). NFE = 2N − 1.
  """
  errors.non_negative("S_churn", S_churn)
  errors.non_negative("S_noise", S_noise)
  sigmas, keys = _prepare(x, sigmas, rng)
  gamma = min(S_churn / keys.shape[0], math.sqrt(2) - 1)

  def churn(x, sigma, key):
    if gamma == 0:
      return x, sigma
    gamma_i = jnp.where((S_min <= sigma) & (sigma <= S_max), gamma, 0.0)
    # sqrt(σ̂² − σ²) without the cancellation that can make it sqrt(−ε) when γ_i = 0.
    noise_std = sigma * jnp.sqrt(gamma_i * (2 + gamma_i))
    return x + noise_std * S_noise * _normal(key, x), sigma * (1 + gamma_i)

  def step(x, i, sigma, sigma_next, key):
    x, sigma_hat = churn(x, sigma, key)
    d = to_d(x, sigma_hat, _denoise(denoiser, x, sigma_hat))
    x_euler = x + (sigma_next - sigma_hat) * d
    d_next = to_d(x_euler, sigma_next, _denoise(denoiser, x_euler, sigma_next))
    return x + (sigma_next - sigma_hat) * 0.5 * (d + d_next)

  x = _steps(step, x, sigmas, keys)
  return _denoise(denoiser, *churn(x, sigmas[-2], keys[-1]))


def _ancestral_step(sigma, sigma_next, eta):
  """(σ_down, σ_up): step deterministically to σ_down, then add noise σ_up; σ_down² + σ_up² = σ_next²."""
  if eta == 0:
    return sigma_next, 0.0
  sigma_up = jnp.minimum(sigma_next, eta * sigma_next * jnp.sqrt(sigma**2 - sigma_next**2) / sigma)
  return jnp.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def sample_ddim(denoiser, x, sigmas, rng, *, eta=0.0):
  """DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eqs. 12 and 16) in σ.

  With x̃ = x/√ᾱ and σ² = (1 − ᾱ)/ᾱ, DDIM's update from σ to σ' becomes
  x' = D + σ_down·(x − D)/σ + σ_up·z with σ_up = η·σ'·sqrt(σ² − σ'²)/σ
  (eq. 16's σ_t(η) over √ᾱ') and σ_down² = σ'² − σ_up², whatever ᾱ(t) was.
  For eta = 0 that is x + (σ' − σ)·d: DDIM is exactly Euler's method on the
  probability-flow ODE in σ (their Sec. 4.3) and returns what `sample_euler`
  does; eta = 1 is DDPM's ancestral sampling. NFE = N.
  """
  errors.non_negative("eta", eta)
  sigmas, keys = _prepare(x, sigmas, rng)

  def step(x, i, sigma, sigma_next, key):
    sigma_down, sigma_up = _ancestral_step(sigma, sigma_next, eta)
    x = x + (sigma_down - sigma) * to_d(x, sigma, _denoise(denoiser, x, sigma))
    return x + sigma_up * _normal(key, x) if eta else x

  return _denoise(denoiser, _steps(step, x, sigmas, keys), sigmas[-2])


def sample_dpmpp_2m(denoiser, x, sigmas, rng):
  """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), multistep 2nd order.

  In λ = −log σ with h_i = λ_{i+1} − λ_i and r_i = h_{i−1}/h_i:
  x_{i+1} = (σ_{i+1}/σ_i)·x_i − (e^{−h_i} − 1)·((1 + 1/(2r_i))·D_i − 1/(2r_i)·D_{i−1}).
  The first step is first order (no D_{i−1} yet) and so is the last, to
  σ = 0, where h is infinite: without that lower-order final step the method
  is unstable at ≤ 10 steps. NFE = N.
  """
  sigmas, keys = _prepare(x, sigmas, rng)

  def step(carry, i, sigma, sigma_next, key):
    x, denoised_prev, h_prev = carry
    denoised = _denoise(denoiser, x, sigma)
    h = jnp.log(sigma / sigma_next)
    r = h_prev / h
    denoised_d = jnp.where(i == 0, denoised,
                           (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * denoised_prev)
    return (sigma_next / sigma) * x - jnp.expm1(-h) * denoised_d, denoised, h

  carry = (x, jnp.zeros_like(x), jnp.ones((), x.dtype))
  return _denoise(denoiser, _steps(step, carry, sigmas, keys)[0], sigmas[-2])


UNIPC_VARIANTS = ("bh1", "bh2")


def unipc_coefficients(sigmas, order, variant):
  """UniPC's steps on a concrete grid as weights on past denoiser outputs (float64).

  Zhao et al. 2023, "UniPC", Algorithms 2 and 3 (data prediction, multistep).
  For steps i = 0 … N−2, with o_i = min(order, i + 1, N − 1 − i) (warm-up and
  lower-order final steps), returns ratio [N−1] = σ_{i+1}/σ_i, predictor
  [N−1, order] and corrector [N−1, order + 1] such that UniP-o_i gives

      x_{i+1} = ratio_i·x_i + Σ_k predictor[i, k]·D_{i−k}

  and UniC-o_i, once D_{i+1} = D(x_{i+1}) is known, replaces it with

      x_{i+1}^c = ratio_i·x_i + corrector[i, 0]·D_{i+1} + Σ_k corrector[i, k+1]·D_{i−k},

  of order o_i + 1. With h = λ_{i+1} − λ_i the step in λ = −log σ and
  hh = −h, B(h) = hh for "bh1" and e^hh − 1 for "bh2" (their Sec. 3.3).
  """
  sigmas = np.asarray(sigmas, np.float64)
  lambdas = -np.log(sigmas[:-1])
  n = len(sigmas) - 2
  predictor, corrector = np.zeros((n, order)), np.zeros((n, order + 1))
  for i in range(n):
    o = min(order, i + 1, n - i)
    hh = lambdas[i] - lambdas[i + 1]
    rks = np.array([(lambdas[i - k] - lambdas[i]) / -hh for k in range(1, o)] + [1.0])
    h_phi_1 = np.expm1(hh)
    b_h = hh if variant == "bh1" else np.expm1(hh)
    # b_k = k!·hh·φ_{k+1}(hh)/B(h): φ_1(hh) = (e^hh − 1)/hh, hh·φ_{k+1}(hh) = φ_k(hh) − 1/k!.
    b, h_phi_k, factorial = [], h_phi_1 / hh - 1, 1
    for k in range(1, o + 1):
      b.append(h_phi_k * factorial / b_h)
      factorial *= k + 1
      h_phi_k = h_phi_k / hh - 1 / factorial
    big_r, b = np.stack([rks**k for k in range(o)]), np.array(b)
    rhos_p = [0.5] if o == 2 else np.linalg.solve(big_r[:-1, :-1], b[:-1])
    rhos_c = [0.5] if o == 1 else np.linalg.solve(big_r, b)
    # Both start from x_{i+1} = ratio·x_i − h_phi_1·D_i (DDIM) and subtract
    # B(h)·Σ_k ρ_k·(D_{i−k} − D_i)/r_k; the corrector's last term uses D_{i+1}.
    predictor[i, 0] = corrector[i, 1] = -h_phi_1
    for k in range(1, o):
      weight = -b_h * rhos_p[k - 1] / rks[k - 1]
      predictor[i, k] += weight
      predictor[i, 0] -= weight
      weight = -b_h * rhos_c[k - 1] / rks[k - 1]
      corrector[i, k + 1] += weight
      corrector[i, 1] -= weight
    corrector[i, 0] -= b_h * rhos_c[-1]
    corrector[i, 1] += b_h * rhos_c[-1]
  return sigmas[1:-1] / sigmas[:-2], predictor, corrector


def sample_unipc(denoiser, x, sigmas, rng, *, order=2, variant="bh2"):
  """UniPC (Zhao et al. 2023): multistep predictor UniP-p with corrector UniC-p.

  Each step predicts x_{i+1} from the last `order` denoiser outputs (UniP),
  then corrects it with D(x_{i+1}) (UniC), which the next step needs anyway, so
  the corrector costs no denoiser call and raises the order to order + 1. The
  next step starts from the corrected x_{i+1} but keeps D of the predicted one.
  Steps are in λ = −log σ, so the grid must be concrete (numpy, not traced);
  see `unipc_coefficients`. order ∈ {1, 2, 3}; variant is the paper's choice
  of B(h), "bh1" or "bh2" (bh1 tends to do better at the fewest steps). NFE = N.
  """
  errors.one_of("order", order, (1, 2, 3))
  errors.one_of("variant", variant, UNIPC_VARIANTS)
  if isinstance(sigmas, jax.core.Tracer):
    raise errors.UserError("sampler 'unipc' computes its steps from the σ grid before sampling, "
                           "so sigma_min and sigma_max must be numbers, not traced values; use "
                           "another sampler (e.g. 'heun') where σ_max varies")
  ratio, predictor, corrector = (
      jnp.asarray(c, x.dtype) for c in unipc_coefficients(sigmas, order, variant))
  sigmas, keys = _prepare(x, sigmas, rng)
  corrector_prev = jnp.concatenate([jnp.zeros_like(corrector[:1]), corrector])
  ratio_prev = jnp.concatenate([jnp.ones_like(ratio[:1]), ratio])

  def step(carry, i, sigma, sigma_next, key, ratio_i, predictor_i, ratio_c, corrector_c):
    x, x_start, history = carry  # history [order, B, ...]: D_{i−1}, D_{i−2}, …
    denoised = _denoise(denoiser, x, sigma)
    corrected = (ratio_c * x_start + corrector_c[0] * denoised +
                 jnp.tensordot(corrector_c[1:], history, axes=1))
    x = jnp.where(i == 0, x, corrected)
    history = jnp.concatenate([denoised[None], history[:-1]])
    return ratio_i * x + jnp.tensordot(predictor_i, history, axes=1), x, history

  carry = (x, x, jnp.zeros((order,) + x.shape, x.dtype))
  x = _steps(step, carry, sigmas, keys, ratio, predictor, ratio_prev, corrector_prev)[0]
  return _denoise(denoiser, x, sigmas[-2])


def sample_euler_maruyama(denoiser, x, sigmas, rng):
  """Euler–Maruyama on the reverse-time SDE (Song et al. 2021, "Score-Based Generative
  Modeling through SDEs", eq. 6; Karras et al. 2022, eq. 6 with β(t) = σ̇/σ).

  In τ = σ² the SDE of x = x0 + σ·n is dx = −∇log p(x; σ)·dτ + dw̄, so with
  Δτ_i = σ_i² − σ_{i+1}²: x_{i+1} = x_i + Δτ_i·∇log p(x_i; σ_i) + sqrt(Δτ_i)·z.
  The last step, to σ = 0, adds no noise and lands on D(x; σ_{N−1}). NFE = N.
  """
  sigmas, keys = _prepare(x, sigmas, rng)

  def step(x, i, sigma, sigma_next, key):
    dtau = sigma**2 - sigma_next**2
    score = -to_d(x, sigma, _denoise(denoiser, x, sigma)) / sigma
    return x + dtau * score + jnp.sqrt(dtau) * _normal(key, x)

  return _denoise(denoiser, _steps(step, x, sigmas, keys), sigmas[-2])


def sample_langevin(denoiser, x, sigmas, rng, *, steps_per_level=100, step_size=0.2):
  """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), for VE models.

  At each level σ_i, i = 0 … N−1, T = steps_per_level updates
  x ← x + (α_i/2)·∇log p(x; σ_i) + sqrt(α_i)·z with α_i = ε·σ_i²/σ_L², σ_L the
  last level. `step_size` is ε/σ_L², so α_i = step_size·σ_i², independent of
  the grid's σ_min; the paper's ε = 2e-5 at σ_L = 0.01 is step_size = 0.2.
  Then one denoising step x = D(x; σ_L) (Jolicoeur-Martineau et al. 2021;
  Song et al. 2021). NFE = N·T + 1.
  """
  if isinstance(steps_per_level, bool) or not isinstance(steps_per_level, int):
    raise errors.UserError(f"steps_per_level={steps_per_level!r} must be an integer >= 1")
  errors.positive("steps_per_level", steps_per_level)
  errors.positive("step_size", step_size)
  sigmas, keys = _prepare(x, sigmas, rng)
  levels = sigmas[:-1]

  def level(x, xs):
    sigma, key = xs
    alpha = step_size * sigma**2

    def update(x, key):
      score = -to_d(x, sigma, _denoise(denoiser, x, sigma)) / sigma
      return x + 0.5 * alpha * score + jnp.sqrt(alpha) * _normal(key, x), None

    return jax.lax.scan(update, x, jax.random.split(key, steps_per_level))[0], None

  x = jax.lax.scan(level, x, (levels, keys))[0]
  return _denoise(denoiser, x, levels[-1])


SAMPLERS = {
    "euler": sample_euler,
    "heun": sample_heun,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "unipc": sample_unipc,
    "euler_maruyama": sample_euler_maruyama,
    "langevin": sample_langevin,
}

def _heun_call_sigmas(sigmas, kw):
  """σ̂_i and σ_{i+1} of every step, then σ̂_{N−1} (`sample_heun`'s churn raises σ_i to σ̂_i)."""
  gamma = min(kw["S_churn"] / (len(sigmas) - 1), math.sqrt(2) - 1)
  levels = sigmas[:-1]
  churned = (kw["S_min"] <= levels) & (levels <= kw["S_max"])
  one, gamma, zero = (sigmas.dtype.type(v) for v in (1, gamma, 0))  # the sampler's dtype
  hat = levels * (one + np.where(churned, gamma, zero))
  return np.append(np.stack([hat[:-1], levels[1:]], axis=1).ravel(), hat[-1])


# The σ of each denoiser call, in order, for a grid sigmas [N + 1] and the sampler's keyword
# arguments (defaults filled in).
_CALL_SIGMAS = {
    "euler": lambda s, kw: s[:-1],
    "heun": _heun_call_sigmas,
    "ddim": lambda s, kw: s[:-1],
    "dpmpp_2m": lambda s, kw: s[:-1],
    "unipc": lambda s, kw: s[:-1],
    "euler_maruyama": lambda s, kw: s[:-1],
    "langevin": lambda s, kw: np.append(np.repeat(s[:-1], kw["steps_per_level"]), s[-2]),
}


def _sampler_fn(name, sampler_kw):
  """SAMPLERS[name] after checking the name and the keyword arguments' names."""
  fn = SAMPLERS[errors.one_of("sampler", name, SAMPLERS)]
  valid = _keyword_defaults(fn)
  for key in sampler_kw:
    if not valid:
      raise errors.UserError(f"sampler {name!r} takes no arguments; got {key}=")
    errors.one_of(f"{name} sampler argument", key, valid)
  return fn


def _keyword_defaults(fn):
  return {
      p.name: p.default
      for p in inspect.signature(fn).parameters.values()
      if p.kind is p.KEYWORD_ONLY
  }


def sample(denoiser,
           rng,
           shape,
           *,
           sampler="heun",
           num_steps=18,
           sigma_min=0.002,
           sigma_max=80.0,
           rho=7.0,
           start=None,
           **sampler_kw):
  """Samples [shape] from denoiser D(x, sigma) -> x0_hat with `sampler` ∈ SAMPLERS.

  x starts as sigma_max·N(0, I), or with `start` [shape] as start +
  sigma_max·N(0, I) (SDEdit, Meng et al. 2022: data noised to sigma_max and
  denoised, the same noise as without it), and follows the grid of Karras et al. (2022),
  eq. 5 (`sigmas.karras_sigmas`, rho = inf for log-linear). sampler_kw are the
  sampler's own arguments (e.g. S_churn for "heun", eta for "ddim"). The
  result depends only on rng, which may be a new-style `jax.random.key` or a
  legacy `jax.random.PRNGKey` with the same seed (they give the same samples).
  Jittable with rng, start and sigma_max traced (a traced sigma_max makes the
  grid a traced array, which every sampler but "unipc" takes) and the other
  arguments static. `nfe` gives the number of denoiser calls.
  """
  fn = _sampler_fn(sampler, sampler_kw)
  grid = sigma_grids.karras_sigmas(num_steps, sigma_min, sigma_max, rho)
  noise_rng, rng = jax.random.split(rng)
  x = sigma_max * jax.random.normal(noise_rng, shape)
  if start is not None:
    if tuple(start.shape) != tuple(shape):
      raise ValueError(f"start has shape {tuple(start.shape)}, the samples {tuple(shape)}")
    x = x + start
  return fn(denoiser, x, grid, rng, **sampler_kw)


def call_sigmas(sampler, num_steps, *, sigma_min=0.002, sigma_max=80.0, rho=7.0,
                **sampler_kw) -> np.ndarray:
  """float32 [nfe]: the σ at which `sample(...)` with these arguments calls the denoiser, in
  order (the grid in float32, as the samplers step in the samples' dtype)."""
  fn = _sampler_fn(sampler, sampler_kw)
  grid = np.asarray(sigma_grids.karras_sigmas(num_steps, sigma_min, sigma_max, rho), np.float32)
  return _CALL_SIGMAS[sampler](grid, {**_keyword_defaults(fn), **sampler_kw})


def nfe(sampler, num_steps, *, guided=False, interval=None, **sampler_kw):
  """The number of network calls `sample(..., sampler=sampler, num_steps=num_steps,
  **sampler_kw)` makes: one per denoiser call, or with a `guided` denoiser
  (`guidance.extrapolate`) two per call at σ in `interval` (everywhere for None) and one
  elsewhere. sampler_kw may hold sigma_min, sigma_max and rho (`call_sigmas`)."""
  sigmas = call_sigmas(sampler, num_steps, **sampler_kw)
  return guidance.network_calls(sigmas, interval) if guided else len(sigmas)
