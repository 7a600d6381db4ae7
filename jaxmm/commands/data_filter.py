"""Data filtering with a trained two-tower (Data Filtering Networks, Fang et al. 2023).

Every image-text pair i of a split is scored by the cosine similarity of its
image and caption embeddings under a trained image-text run,

  score_i = f(x_i) · g(t_i) / (‖f(x_i)‖ ‖g(t_i)‖),

and the highest-scoring fraction is kept as a new dataset (`derived_dataset`:
the source's name and features; the filtered split holds the kept pairs in
their source order, every other split is copied unchanged, so a config trains
on it and evaluates on the original eval split by setting data.data_dir).
`jaxmm filter` (`jaxmm.commands.filter`) is the command line.
"""
import io
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from jaxmm import evaluators
from jaxmm.data import derived_dataset
from jaxmm.experiments import image_text
from jaxmm.experiments import inputs
from jaxmm import storage

SCORES_FILE = "scores.npz"
SUMMARY_FILE = "filter.json"


def pair_scores(model, params, config: ml_collections.ConfigDict, split: str, batch_size: int,
                mesh: jax.sharding.Mesh) -> np.ndarray:
  """float32 [N]: the cosine score of each pair of `split` of config.data, in record order.

  The images and captions are read and preprocessed once, as the evaluators
  read an eval split (`inputs.eval_batches`, `evaluators.embed_batches`):
  global batches of `batch_size` split over the mesh's batch axes, each
  scored on the devices by both towers in one call, with a progress bar.
  """
  encode_image, encode_text = image_text.encode_image(model), image_text.encode_text(model)

  def score(p, images, tokens):
    """[b] cosines of the pairs' image and caption embeddings."""
    zimg, ztxt = encode_image(p, images), encode_text(p, tokens)
    norms = jnp.linalg.norm(zimg, axis=-1) * jnp.linalg.norm(ztxt, axis=-1)
    return jnp.sum(zimg * ztxt, axis=-1) / norms

  batches = inputs.eval_batches(config, split, batch_size)
  batches = tqdm.tqdm(batches,
                      desc="pairs scored",
                      total=len(batches),
                      unit="batch",
                      dynamic_ncols=True,
                      disable=jax.process_index() != 0)
  scores, _ = evaluators.embed_batches(jax.jit(score), params, batches, mesh, ("image", "tokens"))
  return scores.astype(np.float32)


def top_fraction(scores: np.ndarray, keep: float) -> np.ndarray:
  """bool [N]: the round(keep · N) highest `scores` [N] (at least one); ties go to the earlier."""
  num_kept = max(1, round(keep * len(scores)))
  kept = np.zeros(len(scores), bool)
  kept[np.argsort(-scores, kind="stable")[:num_kept]] = True
  return kept


def write_filtered(source: tfds.core.DatasetBuilder, split: str, kept: np.ndarray,
                   out_dir: str) -> None:
  """Writes the copy of `source` whose `split` holds the records where `kept` [N] is True."""
  chosen = {split: np.flatnonzero(kept)}
  splits = {
      name: derived_dataset.records(source, name, chosen.get(name)) for name in source.info.splits
  }
  derived_dataset.write(source, out_dir, splits)


def write_scores(out_dir: str, scores: np.ndarray, kept: np.ndarray, summary: dict) -> None:
  """out_dir/scores.npz: 'index' int64 [N] (the record of the source split), 'score' float32
  [N], 'kept' bool [N]; and out_dir/filter.json: `summary`."""
  buffer = io.BytesIO()
  np.savez(buffer, index=np.arange(len(scores)), score=scores, kept=kept)
  storage.write_bytes(os.path.join(out_dir, SCORES_FILE), buffer.getvalue())
  storage.write_text(os.path.join(out_dir, SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
