"""FLIP's patch dropout (Li et al. 2023, "Scaling language-image pre-training via masking").

During training the image tower sees a random subset of its patch tokens, a
different one per example; the encoder's cost falls with the token count, so
a step of ratio r costs about (1 − r) of the full one and a fixed budget buys
a larger batch or more steps. Evaluation sees every patch.
"""
import math

import jax
import jax.numpy as jnp

from jaxmm import errors

# Slack for products like (1 − 0.9)·10 = 0.9999999999999998, which should keep 1 token.
_FLOOR_SLACK = 1e-9


def kept_count(num_patches: int, ratio: float) -> int:
  """⌊(1 − ratio)·N⌋: how many of N patch tokens a training example keeps.

  Raises `UserError` when `ratio` is not in [0, 1) or would keep no token.
  """
  key = "model.image.patch_dropout"
  if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
    raise errors.UserError(f"{key}={ratio!r} must lie in [0, 1): the fraction of patch tokens "
                           "dropped in training (0: none)")
  kept = math.floor((1 - ratio) * num_patches + _FLOOR_SLACK)
  if kept < 1:
    raise errors.UserError(f"{key}={ratio!r} keeps no token of the {num_patches} patches; "
                           f"set it below {1 - 1 / num_patches:.4g}")
  return kept


def drop_patches(tokens: jax.Array, rng: jax.Array, ratio: float) -> jax.Array:
  """tokens [B, N, D] -> [B, kept_count(N, ratio), D], a uniform random subset per example.

  Each example ranks its tokens by independent uniform noise and keeps the
  lowest ranks, so the kept tokens are distinct; they stay in their original
  order, which the position embeddings already added make irrelevant to the
  encoder but keeps the result easy to check.
  """
  b, n, _ = tokens.shape
  noise = jax.random.uniform(rng, (b, n))
  keep = jnp.sort(jnp.argsort(noise, axis=1)[:, :kept_count(n, ratio)], axis=1)
  return jnp.take_along_axis(tokens, keep[:, :, None], axis=1)
