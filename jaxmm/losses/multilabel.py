"""Multi-label classification loss: CatLIP's binary cross-entropy over a label vocabulary.

CatLIP (Mehta et al. 2024, "CatLIP: CLIP-level visual recognition accuracy
with 2.7x faster pre-training on web-scale image-text data", Sec. 3) turns
each caption into the set of vocabulary labels it mentions and trains the
image encoder alone to predict that set, one independent sigmoid per label.
Unlike the contrastive losses it needs no other example of the batch, so a
sharded batch needs no collective beyond the mean.
"""
import jax
import jax.numpy as jnp


def binary_cross_entropy_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean binary cross-entropy of logits [B, V] against multi-hot targets [B, V] -> scalar.

    L = −(1 / (B·V)) Σᵢ Σₖ [yᵢₖ log σ(xᵢₖ) + (1 − yᵢₖ) log(1 − σ(xᵢₖ))]
      =  (1 / (B·V)) Σᵢ Σₖ [log(1 + exp(xᵢₖ)) − xᵢₖ yᵢₖ]

  The second form with log(1 + eˣ) as `jax.nn.softplus` (a log-add-exp) stays
  finite for any finite logit (log σ(x) of x = −1000 is −1000, not −inf), and
  its gradient is σ(x) − y everywhere, x = 0 included, where the zero-initialised
  head of `jaxmm.models.CatLIP` starts (max(x, 0) and |x| have no derivative
  there). Targets may be soft (in [0, 1]). Computes in the wider of the logits'
  dtype and float32.
  """
  dtype = jnp.result_type(jnp.float32, logits.dtype)
  x, y = logits.astype(dtype), targets.astype(dtype)
  return jnp.mean(jax.nn.softplus(x) - x * y)
