"""Metrics of each source of a data.mixture, from the batch's 'source' column.

A loss that is a mean over examples splits by source; the contrastive losses
couple every example of the batch and have no such split.
"""
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def loss_per_source(per_example: jax.Array, source: jax.Array,
                    names: Sequence[str]) -> dict[str, jax.Array]:
  """{'loss/NAME': the mean of per_example [B] over the rows whose source [B] is NAME's index in
  `names`}, the metrics an experiment adds for a data.mixture.

  A source without rows in the batch gets 0, so a logged mean over steps
  counts such steps as 0: give every source a share of at least 1 / B.
  """
  rows = source[:, None] == jnp.arange(len(names))  # [B, K]
  sums = jnp.sum(jnp.where(rows, per_example[:, None], 0.0), axis=0)
  counts = jnp.sum(rows, axis=0)
  means = sums / jnp.maximum(counts, 1)
  return {f"loss/{name}": means[k] for k, name in enumerate(names)}
