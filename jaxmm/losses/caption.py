"""Captioning loss: token-level cross-entropy over the real tokens of a batch.

A caption decoder predicts each token from the ones before it and the image
(CoCa, Yu et al. 2022, eq. 3; CapPa, Tschannen et al. 2023, Sec. 3). Captions
are padded to one length; the pad positions after the first are no targets,
while the first pad is the end of text, which the decoder must learn to
predict so that decoding stops (`target_weights`). The loss is a mean over
tokens, not examples: a long caption weighs more than a short one, and a
batch split over devices gives the same value as on one device because the
numerator and the token count are summed over the shards before dividing.
"""
import jax
import jax.numpy as jnp


def target_weights(tokens: jax.Array, pad_id: int) -> jax.Array:
  """float32 [B, L]: 1 for each token of a caption and for its first pad (the end of text), 0 for
  the pads after it. tokens int [B, L]."""
  is_pad = tokens == pad_id
  pads_before = jnp.cumsum(is_pad, axis=1) - is_pad
  return (pads_before == 0).astype(jnp.float32)


def caption_loss(logits: jax.Array,
                 targets: jax.Array,
                 weights: jax.Array,
                 *,
                 axis_name=None) -> jax.Array:
  """L = Σᵢₜ wᵢₜ · (−log softmax(logitsᵢₜ)[targetsᵢₜ]) / Σᵢₜ wᵢₜ -> scalar.

  Args:
    logits: [B, L, V], position t predicting targets[:, t].
    targets: int [B, L].
    weights: [B, L], 1 for a token that counts, 0 for one that does not
      (`target_weights`).
    axis_name: a mesh axis (or tuple of them) that splits B inside `jax.shard_map`;
      the sums then run over every shard, and every device returns the global loss.

  Computes in the wider of the logits' dtype and float32. A batch without a
  counted token has loss 0, not NaN.
  """
  dtype = jnp.result_type(jnp.float32, logits.dtype)
  log_probs = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  weights = weights.astype(dtype)
  total, count = jnp.sum(nll * weights), jnp.sum(weights)
  if axis_name is not None:
    total, count = jax.lax.psum((total, count), axis_name)
  return total / jnp.maximum(count, 1)
