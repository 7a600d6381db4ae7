"""σ grids for the samplers: num_steps noise levels from sigma_max down to sigma_min, then 0.

A grid is an array [num_steps + 1], strictly decreasing, whose last entry is 0;
the samplers step from sigmas[i] to sigmas[i + 1]. It is float64 numpy for
numbers, and a JAX array in their dtype when sigma_min or sigma_max is traced
(a sampler jitted with σ_max as an argument, which then compiles once for
every σ_max); traced values are not range-checked.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import errors


def check_num_steps(num_steps):
  """`num_steps` if it is an int >= 1, else a UserError saying what to change."""
  if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
    raise errors.UserError(f"num_steps={num_steps!r} must be an integer >= 1 "
                           "(the number of noise levels; use e.g. num_steps=18)")
  return num_steps


def _array_module(sigma_min, sigma_max):
  """jax.numpy if either end of the grid is traced, else numpy after checking the range."""
  if isinstance(sigma_min, jax.core.Tracer) or isinstance(sigma_max, jax.core.Tracer):
    return jnp
  errors.positive("sigma_min", sigma_min)
  errors.positive("sigma_max", sigma_max)
  if sigma_min > sigma_max:
    raise errors.UserError(f"sigma_min={sigma_min!r} must be <= sigma_max={sigma_max!r}")
  return np


def loglinear_sigmas(num_steps, sigma_min, sigma_max):
  """σ_i uniform in log σ, i.e. uniform in log-SNR (the "logSNR" grid of Lu et al. 2022).

  This is eq. 5 of Karras et al. (2022) in the limit ρ → ∞. One step gives
  [sigma_max, 0].
  """
  check_num_steps(num_steps)
  xp = _array_module(sigma_min, sigma_max)
  log = math.log if xp is np else jnp.log
  ramp = np.linspace(0.0, 1.0, num_steps)
  sigmas = xp.exp(log(sigma_max) + ramp * (log(sigma_min) - log(sigma_max)))
  return xp.append(sigmas, 0.0)


def karras_sigmas(num_steps, sigma_min, sigma_max, rho=7.0):
  """Karras et al. (2022), eq. 5: σ_i = (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ.

  i = 0 … N−1 with N = num_steps, then σ_N = 0. ρ = 7 is the paper's choice;
  larger ρ moves steps towards small σ, ρ = inf is `loglinear_sigmas`. One step
  gives [sigma_max, 0].
  """
  errors.positive("rho", rho)
  if math.isinf(rho):
    return loglinear_sigmas(num_steps, sigma_min, sigma_max)
  check_num_steps(num_steps)
  xp = _array_module(sigma_min, sigma_max)
  ramp = np.linspace(0.0, 1.0, num_steps)
  max_inv_rho, min_inv_rho = sigma_max**(1 / rho), sigma_min**(1 / rho)
  return xp.append((max_inv_rho + ramp * (min_inv_rho - max_inv_rho))**rho, 0.0)
