"""Guidance: classifier-free (Ho & Salimans 2022), autoguidance (Karras et al. 2024), intervals.

One network learns the conditional denoiser D(x; σ, c) and the unconditional
one D(x; σ, ∅): in training every label of an example is replaced by the null
label (`NULL_LABEL`) with probability p (`drop_labels`). Sampling then uses the
guided denoiser of scale w (their eq. 6, in the denoiser's x0 form)

    D_w(x; σ, c) = D(x; σ, ∅) + w·(D(x; σ, c) − D(x; σ, ∅)),

where w = 1 is the conditional denoiser, w = 0 the unconditional one, and
w > 1 trades diversity for fidelity to c.

Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad
version of itself", eq. 2) extrapolates from a weaker model of the same task
instead, a smaller or shorter-trained D_guide with the same conditioning:

    D_w(x; σ, c) = D_guide(x; σ, c) + w·(D_main(x; σ, c) − D_guide(x; σ, c)).

Both are `extrapolate(main, reference, w)`. Kynkäänniemi et al. 2024
("Applying guidance in a limited interval", eq. 4) apply it only for σ in
(σ_lo, σ_hi] and use D_main elsewhere: at high noise guidance pulls every
sample towards a few modes, at low noise it does little.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import errors

# The label a network reads as "no label" (∅); its class embeddings keep a row for it.
NULL_LABEL = -1


def drop_labels(labels: jax.Array,
                rng: jax.Array,
                rate: float,
                null: int = NULL_LABEL) -> jax.Array:
  """int labels [B, K] with every label of an example set to `null` with probability
  `rate` (the whole example's labels, never one of them alone). For a caption's tokens
  [B, L], `null` is the pad id: a dropped caption is the empty one."""
  dropped = jax.random.bernoulli(rng, rate, labels.shape[:1])
  return jnp.where(dropped[:, None], null, labels)


def check_interval(interval, name="guidance interval"):
  """(lo, hi) as floats if 0 <= lo < hi (hi may be inf), else a UserError; None stays None."""
  if interval is None:
    return None
  try:
    lo, hi = (float(v) for v in interval)
  except (TypeError, ValueError):
    raise errors.UserError(f"{name}={interval!r}: give two noise levels LO HI, e.g. 0.28 5.42"
                           ) from None
  if math.isnan(lo) or math.isnan(hi) or lo < 0 or lo >= hi:
    raise errors.UserError(f"{name}=({lo:g}, {hi:g}): guidance applies for LO < σ <= HI, so "
                           "give 0 <= LO < HI, e.g. 0.28 5.42")
  return lo, hi


def in_interval(sigma, interval):
  """bool, like sigma: whether σ lies in (lo, hi] (everywhere for interval None)."""
  if interval is None:
    return jnp.ones_like(sigma, bool) if isinstance(sigma, jax.Array) else np.ones_like(sigma, bool)
  lo, hi = interval
  return (lo < sigma) & (sigma <= hi)


def extrapolate(main, reference, guidance, interval=None):
  """D_w(x [B, ...], sigma [B]) -> x0_hat [B, ...]: reference + w·(main − reference).

  `main` and `reference` are denoisers D(x, sigma); `guidance` is w, a float or
  a traced scalar. With `interval` (lo, hi) the combination applies to the
  rows with lo < σ <= hi and the others get `main` alone; when no row is
  inside, `lax.cond` calls `main` only, so that a sampler's steps outside the
  interval cost one network call, not two, and return `main`'s output exactly.
  """

  def combined(x, sigma):
    main_x0, reference_x0 = main(x, sigma), reference(x, sigma)
    guided = reference_x0 + guidance * (main_x0 - reference_x0)
    if interval is None:
      return guided
    inside = in_interval(sigma, interval).reshape(sigma.shape + (1,) * (x.ndim - 1))
    return jnp.where(inside, guided, main_x0)

  if interval is None:
    return combined
  return lambda x, sigma: jax.lax.cond(
      jnp.any(in_interval(sigma, interval)), combined, main, x, sigma)


def guided_denoiser(denoiser, labels: jax.Array | None, guidance, interval=None,
                    null: int = NULL_LABEL):
  """D_w(x [B, ...], sigma [B]) -> x0_hat [B, ...] of the conditional `denoiser`, CFG.

  `denoiser(x, sigma, labels) -> x0_hat` is D(x; σ, c) for int labels [B, K]
  (rows all `null` give D(x; σ, ∅); for caption tokens, the pad id: the empty
  caption). `guidance` is w, a float or a traced
  scalar: with labels, D_w is always the combination above (two denoiser
  calls, also at w = 1, which a caller that knows w can skip) in `interval`
  (`extrapolate`); labels None is an unconditional model, whose D_w is D(x; σ).
  """
  if labels is None:
    return lambda x, sigma: denoiser(x, sigma, None)
  nulls = jnp.full_like(labels, null)
  return extrapolate(lambda x, sigma: denoiser(x, sigma, labels),
                     lambda x, sigma: denoiser(x, sigma, nulls), guidance, interval)


def network_calls(call_sigmas, interval=None) -> int:
  """Network calls of a guided sampler whose denoiser calls are at σ `call_sigmas`
  (`samplers.call_sigmas`): two inside `interval` (everywhere for None), one outside."""
  return len(call_sigmas) + int(np.sum(in_interval(np.asarray(call_sigmas), interval)))
