"""The denoising objective of Karras et al. (2022), eqs. 7 and 8, for any schedule.

A raw network is `raw_net_fn(x_in, c_noise) -> F` with x_in [B, ...] and
c_noise [B]; parameters are bound by closure. A schedule is one of
`jaxmm.diffusion.schedules` (anything with `precondition`, `sample_sigma` and
`loss_weight`).
"""
import jax
import jax.numpy as jnp


def _per_example(c, x):
  """c [B] reshaped to broadcast against x [B, ...]."""
  return jnp.reshape(c, c.shape + (1,) * (x.ndim - 1))


def denoiser(raw_net_fn, schedule):
  """D(x, sigma) = c_skip·x + c_out·F(c_in·x, c_noise) (eq. 7), x [B, ...], sigma [B].

  The result is the denoiser contract the samplers expect.
  """

  def denoise(x, sigma):
    c_skip, c_out, c_in, c_noise = schedule.precondition(sigma)
    out = raw_net_fn(_per_example(c_in, x) * x, c_noise)
    return _per_example(c_skip, x) * x + _per_example(c_out, x) * out

  return denoise


def denoising_loss(raw_net_fn, schedule, x0, rng):
  """Per-example loss λ(σ)·mean((D(x0 + σ·n, σ) − x0)²) (eq. 8), shape [B].

  x0 [B, ...]; σ [B] ~ `schedule.sample_sigma` and n ~ N(0, I) [B, ...] are
  drawn from the two halves of `jax.random.split(rng)`, in x0's dtype. The
  squared error is averaged over every non-batch axis (not summed), so the
  loss of a constant-error prediction does not grow with the data size.
  """
  sigma_rng, noise_rng = jax.random.split(rng)
  sigma = schedule.sample_sigma(sigma_rng, x0.shape[:1], x0.dtype)
  noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
  denoised = denoiser(raw_net_fn, schedule)(x0 + _per_example(sigma, x0) * noise, sigma)
  squared_error = jnp.mean((denoised - x0)**2, axis=tuple(range(1, x0.ndim)))
  return schedule.loss_weight(sigma) * squared_error
