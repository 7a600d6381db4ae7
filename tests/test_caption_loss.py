"""The captioning loss: float64 reference, padding, and a sharded batch equal to one device."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import losses
from jaxmm import parallel


def _reference(logits, targets, weights):
  """Σ w·(−log softmax) / Σ w in float64."""
  x = np.asarray(logits, np.float64)
  log_probs = x - x.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, np.asarray(targets)[..., None], -1)[..., 0]
  return (nll * weights).sum() / weights.sum()


def _batch(rng, b=8, length=6, vocab=5):
  """Logits and tokens whose captions have 0 to 5 real tokens, so shards hold unequal counts."""
  logits = rng.normal(0, 2, (b, length, vocab)).astype(np.float32)
  tokens = rng.integers(1, vocab, (b, length)).astype(np.int32)
  real = np.array([5, 1, 0, 3, 5, 2, 4, 1])[:b]
  tokens[np.arange(length)[None] >= real[:, None]] = 0
  return logits, tokens


def test_target_weights_count_the_text_and_its_end():
  tokens = np.array([[7, 8, 0, 0], [7, 0, 0, 0], [7, 8, 9, 6], [0, 0, 0, 0]])
  want = [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
  np.testing.assert_array_equal(losses.target_weights(jnp.asarray(tokens), 0), want)


def test_caption_loss_is_the_float64_reference():
  logits, tokens = _batch(np.random.default_rng(0))
  weights = np.asarray(losses.target_weights(jnp.asarray(tokens), 0))
  got = losses.caption_loss(logits, tokens, weights)
  # float32 log-softmax of O(1) logits and a sum of 30 terms: a few ulps each, 1e-6 relative.
  np.testing.assert_allclose(got, _reference(logits, tokens, weights), rtol=1e-5)
  # Padding past the end of text changes nothing: the same captions padded to 9 tokens.
  more = np.random.default_rng(1).normal(size=(8, 3, 5)).astype(np.float32)
  wide_logits = np.concatenate([logits, more], 1)
  wide_tokens = np.pad(tokens, ((0, 0), (0, 3)))
  wide = losses.caption_loss(wide_logits, wide_tokens, losses.target_weights(wide_tokens, 0))
  np.testing.assert_allclose(wide, got, rtol=1e-6)
  # By hand: zero logits over 5 ids cost log 5 per token, and no counted token costs 0.
  np.testing.assert_allclose(losses.caption_loss(np.zeros_like(logits), tokens, weights),
                             np.log(5), rtol=1e-6)
  assert float(losses.caption_loss(logits, tokens, np.zeros_like(weights))) == 0.0


def test_sharded_caption_loss_counts_tokens_across_shards():
  logits, tokens = _batch(np.random.default_rng(2))
  weights = np.asarray(losses.target_weights(jnp.asarray(tokens), 0))
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = parallel.over_batch_axes(losses.caption_loss, mesh, num_batched=3)
  value, grad = jax.jit(jax.value_and_grad(sharded))(logits, tokens, weights)
  ref_value, ref_grad = jax.value_and_grad(losses.caption_loss)(logits, tokens, weights)
  np.testing.assert_allclose(value, _reference(logits, tokens, weights), rtol=1e-5)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  # Each gradient entry is one softmax term over the same token count: float32 rounding only.
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-8)
  # The mean of the shards' own token means, what counting examples per shard would give,
  # is another number: the shards hold 6, 5, 9 and 7 counted tokens.
  per_shard = [_reference(logits[i:i + 2], tokens[i:i + 2], weights[i:i + 2])
               for i in range(0, 8, 2)]
  assert abs(np.mean(per_shard) - float(value)) > 1e-3
