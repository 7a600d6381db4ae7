"""Classifier-free guidance (Ho & Salimans 2022) for class-conditional denoisers.

One network learns the conditional denoiser D(x; σ, c) and the unconditional
one D(x; σ, ∅): in training every label of an example is replaced by the null
label (`NULL_LABEL`) with probability p (`drop_labels`). Sampling then uses the
guided denoiser of scale w (their eq. 6, in the denoiser's x0 form)

    D_w(x; σ, c) = D(x; σ, ∅) + w·(D(x; σ, c) − D(x; σ, ∅)),

where w = 1 is the conditional denoiser, w = 0 the unconditional one, and
w > 1 trades diversity for fidelity to c.
"""
import jax
import jax.numpy as jnp

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


def guided_denoiser(denoiser, labels: jax.Array | None, guidance, null: int = NULL_LABEL):
  """D_w(x [B, ...], sigma [B]) -> x0_hat [B, ...] of the conditional `denoiser`.

  `denoiser(x, sigma, labels) -> x0_hat` is D(x; σ, c) for int labels [B, K]
  (rows all `null` give D(x; σ, ∅); for caption tokens, the pad id: the empty
  caption). `guidance` is w, a float or a traced
  scalar: with labels, D_w is always the combination above (two denoiser
  calls, also at w = 1, which a caller that knows w can skip); labels None is
  an unconditional model, whose D_w is D(x; σ).
  """
  if labels is None:
    return lambda x, sigma: denoiser(x, sigma, None)
  null = jnp.full_like(labels, null)

  def guided(x, sigma):
    unconditional = denoiser(x, sigma, null)
    return unconditional + guidance * (denoiser(x, sigma, labels) - unconditional)

  return guided
