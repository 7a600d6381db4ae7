"""The captioner's decoder (causal, parallel prediction, CoCa's text feature) and beam search
against brute force."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import errors
from jaxmm import models
from jaxmm.models import decoding

IMAGE = dict(patch_size=8, width=16, depth=1, num_heads=2, mlp_dim=32, pool="none")


def _captioner(vocab=3, max_len=3, **more):
  model = models.get_model(
      dict(name="captioner",
           image=IMAGE,
           decoder=dict(vocab_size=vocab, width=16, depth=1, num_heads=2, mlp_dim=32,
                        max_len=max_len, pad_id=0),
           **more))
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  params = model.init(jax.random.key(0), images, jnp.zeros((1, max_len), jnp.int32))["params"]
  params = jax.tree.map(lambda p: p.unbox() if hasattr(p, "unbox") else p, params,
                        is_leaf=lambda p: hasattr(p, "unbox"))
  # Random weights everywhere, the zero-initialised logits layer included, so that no two
  # tokens tie.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = tree.unflatten([jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])
  return model, params, images


def test_decoder_is_causal_and_parallel_prediction_reads_no_token():
  model, params, images = _captioner(vocab=7, max_len=5)
  images = jnp.repeat(images[:1], 2, axis=0)  # one image, two captions
  tokens = jnp.asarray([[3, 4, 5, 6, 1], [3, 4, 2, 2, 2]])

  @jax.jit
  def logits(tokens, parallel=None):
    return model.apply({"params": params}, images, tokens, parallel)["logits"]

  first, second = logits(tokens)
  # Rows differ from position 2 on: position t reads tokens < t, so 0..2 agree, 3 does not.
  np.testing.assert_allclose(first[:3], second[:3], rtol=1e-5, atol=1e-5)
  assert np.abs(first[3] - second[3]).max() > 1e-3
  # Parallel prediction: mask ids in, full attention, so the two rows' logits are equal.
  both = logits(tokens, jnp.array([True, True]))
  np.testing.assert_allclose(both[0], both[1], rtol=1e-5, atol=1e-5)
  assert np.abs(both[0] - first).max() > 1e-3


def test_coca_text_feature_reads_the_caption_up_to_its_end():
  with pytest.raises(errors.UserError, match="unimodal_depth"):
    _captioner(vocab=7, max_len=5, embed_dim=8)
  images = jnp.zeros((1, 16, 16, 3))
  decoder = dict(vocab_size=7, width=16, depth=1, unimodal_depth=1, num_heads=2, mlp_dim=32,
                 max_len=5, pad_id=0)
  model = models.get_model(dict(name="captioner", image=IMAGE, decoder=decoder, embed_dim=8))
  params = model.init(jax.random.key(0), images, jnp.zeros((1, 5), jnp.int32))["params"]
  encode = jax.jit(lambda t: model.apply({"params": params}, t, method=model.encode_text))
  # The same caption with other padding length, and one token more: the feature at the end of
  # text sees the caption, not what follows it.
  z = encode(jnp.asarray([[3, 4, 0, 0, 0], [3, 4, 0, 5, 6], [3, 4, 5, 0, 0]]))
  np.testing.assert_allclose(z[0], z[1], rtol=1e-5, atol=1e-6)
  assert np.abs(z[0] - z[2]).max() > 1e-4
  np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, rtol=1e-5)


def _functions(model, params):
  """Jitted (images -> image tokens) and ((image tokens, tokens) -> logits) of the model."""
  variables = {"params": params}
  return (jax.jit(lambda x: model.apply(variables, x, method=model.image_tokens)),
          jax.jit(lambda m, t: model.apply(variables, m, t, method=model.logits)))


def _scores_by_brute_force(model, params, images, vocab, length):
  """{sequence: float64 score} of every sequence that is eos (0) after its first eos."""
  image_tokens_fn, logits_fn = _functions(model, params)
  sequences = [s for s in itertools.product(range(vocab), repeat=length)
               if all(s[t] == 0 for t in range(length) if 0 in s[:t])]
  tokens = jnp.asarray(sequences, jnp.int32)
  scores = []
  for image in images:
    image_tokens = jnp.repeat(image_tokens_fn(image[None]), len(sequences), axis=0)
    logits = np.asarray(logits_fn(image_tokens, tokens), np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    scores.append({})
    for s, lp in zip(sequences, log_probs):
      end = s.index(0) if 0 in s else length - 1
      scores[-1][s] = sum(lp[t, s[t]] for t in range(end + 1))
  return scores


def test_beam_search_finds_the_best_caption_and_beam_1_is_greedy():
  vocab, length = 3, 3
  model, params, images = _captioner(vocab, length)
  scores = _scores_by_brute_force(model, params, images, vocab, length)
  # A beam of V^(L-1) = 9 keeps every prefix, so it must find the best sequence.
  tokens = jax.jit(lambda x: decoding.caption_images(model, params, x, beam=9))(images)
  for row, score in zip(np.asarray(tokens), scores):
    assert tuple(row) == max(score, key=score.get)
  # Greedy by hand: the most likely token at each step given the chosen ones.
  greedy = jax.jit(lambda x: decoding.caption_images(model, params, x, beam=1))(images)
  image_tokens_fn, logits_fn = _functions(model, params)
  for row, image in zip(np.asarray(greedy), images):
    image_tokens = image_tokens_fn(image[None])
    chosen = np.zeros(length, np.int32)
    for t in range(length):
      if t and 0 in chosen[:t]:
        continue  # after the end of text every token is the pad id
      logits = logits_fn(image_tokens, jnp.asarray(chosen[None]))
      chosen[t] = int(np.argmax(logits[0, t]))
    np.testing.assert_array_equal(row, chosen)
