"""Caption decoding: greedy and beam search over a fixed maximum length, batched, under jit.

`beam_search` keeps, for each example, the `beam` highest-scoring token
prefixes; a prefix's score is the sum of its tokens' log-probabilities, and a
prefix that has produced the end-of-text id is finished: it extends only by
that id again, at log-probability 0, so it keeps its score while the others
grow. With beam 1 that is greedy decoding (the most likely token at each
step). Every step runs the decoder over the whole [L] buffer (the causal mask
makes the positions after t irrelevant), which keeps shapes static without a
key-value cache; at caption lengths of tens of tokens that costs little.
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp

# The score of an impossible prefix: finite, so that sums and comparisons stay defined.
_IMPOSSIBLE = -1e30


def beam_search(logits_fn: Callable[[jax.Array], jax.Array], batch_size: int, max_len: int,
                eos_id: int, beam: int = 1) -> tuple[jax.Array, jax.Array]:
  """The highest-scoring captions of a batch found by beam search (module docstring).

  Args:
    logits_fn: tokens int [B·beam, max_len] -> logits [B·beam, max_len, V], position t
      predicting token t from tokens < t; row b·beam + k belongs to example b.
    batch_size: B.
    max_len: L, the number of tokens decoded.
    eos_id: the end-of-text id; every token after it is eos_id.
    beam: the number of prefixes kept per example (1: greedy).

  Returns:
    tokens int32 [B, L] and their scores float32 [B] (the sum of log-probabilities up to and
    including the first eos_id).
  """
  shape = (batch_size, beam)
  tokens = jnp.full(shape + (max_len,), eos_id, jnp.int32)
  # One live prefix per example at first, so the beams do not start as copies of each other.
  scores = jnp.where(jnp.arange(beam) == 0, 0.0, _IMPOSSIBLE) * jnp.ones(shape, jnp.float32)
  done = jnp.zeros(shape, bool)

  def step(t, carry):
    tokens, scores, done = carry
    logits = logits_fn(tokens.reshape(batch_size * beam, max_len))
    log_probs = jax.nn.log_softmax(logits[:, t].astype(jnp.float32), axis=-1)
    vocab = log_probs.shape[-1]
    log_probs = log_probs.reshape(shape + (vocab,))
    only_eos = jnp.where(jnp.arange(vocab) == eos_id, 0.0, _IMPOSSIBLE)
    log_probs = jnp.where(done[..., None], only_eos, log_probs)
    candidates = (scores[..., None] + log_probs).reshape(batch_size, beam * vocab)
    scores, index = jax.lax.top_k(candidates, beam)
    parent, token = index // vocab, index % vocab
    tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t].set(token)
    done = jnp.take_along_axis(done, parent, axis=1) | (token == eos_id)
    return tokens, scores, done

  tokens, scores, _ = jax.lax.fori_loop(0, max_len, step, (tokens, scores, done))
  return tokens[:, 0], scores[:, 0]  # top_k sorts, so beam 0 is the best


def caption_images(model, params, images: jax.Array, *, beam: int = 1) -> jax.Array:
  """Caption tokens int32 [B, L] of images [B, H, W, C] by a `jaxmm.models.Captioner`
  (L: its decoder's max_len; the tokens after the end of text are its pad id)."""
  decoder = model.decoder
  image_tokens = model.apply({"params": params}, images, method=model.image_tokens)
  image_tokens = jnp.repeat(image_tokens, beam, axis=0)

  def logits_fn(tokens):
    return model.apply({"params": params}, image_tokens, tokens, method=model.logits)

  tokens, _ = beam_search(logits_fn, images.shape[0], decoder["max_len"],
                          decoder.get("pad_id", 0), beam)
  return tokens
