"""Zero-shot classification: classify images by their nearest class prompt embedding.

Each class is described by one or more prompts; its embedding is the mean of
their text embeddings, renormalised (the prompt ensembling of CLIP, Radford
et al. 2021, sec. 3.1.4). An image is assigned the class whose embedding has
the largest cosine similarity with the image embedding.
"""
from collections.abc import Callable, Iterable, Sequence
import dataclasses
import json
import os

import jax
import numpy as np

from jaxmm import parallel

RESULTS_FILE = "zero_shot.json"


@dataclasses.dataclass(frozen=True)
class ZeroShotTask:
  """One classification problem over the eval split.

  Attributes:
   name: metric name, e.g. 'shape'.
   class_prompts: for each class, the prompts whose embeddings are averaged.
   labels: batch -> int class index per example [b].
   select: batch -> bool [b], the examples this task scores (default: all).
  """
  name: str
  class_prompts: Sequence[Sequence[str]]
  labels: Callable[[dict], np.ndarray]
  select: Callable[[dict], np.ndarray] | None = None


def normalize(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def class_embeddings(embed_texts: Callable[[Sequence[str]], np.ndarray],
          class_prompts: Sequence[Sequence[str]]) -> np.ndarray:
  """[C, E] unit-norm class embeddings from `embed_texts(list of N str) -> [N, E]`."""
  flat = [prompt for prompts in class_prompts for prompt in prompts]
  embeddings = embed_texts(flat)
  bounds = np.cumsum([0] + [len(prompts) for prompts in class_prompts])
  return normalize(np.stack([embeddings[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])]))


def accuracy(image_embeddings: np.ndarray, class_embeds: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 accuracy of argmax_c <z_img, z_c> against `labels` [N]."""
  predictions = np.argmax(image_embeddings @ class_embeds.T, axis=-1)
  return float(np.mean(predictions == labels))


def make_evaluator(*, tasks: Sequence[ZeroShotTask], encode_images: Callable, encode_tokens: Callable,
         tokenize: Callable[[Sequence[str]], np.ndarray],
         eval_batches: Callable[[], Iterable[dict]], mesh: jax.sharding.Mesh,
         text_batch_size: int, workdir: str | None = None):
  """An evaluator(params, step) -> {'zero_shot/<task>': accuracy}.

  Args:
   encode_images / encode_tokens: (params, global batch array) -> [b, E]
    embeddings; jitted here.
   tokenize: list of N prompts -> int tokens [N, L].
   eval_batches: () -> host-local batches of the eval split with a bool
    'mask' marking real (not padding) examples.
   text_batch_size: prompts per text-encoder call; a multiple of the mesh's
    batch shards.
   workdir: if given, results are added to workdir/zero_shot.json by step.
  """
  encode_images, encode_tokens = jax.jit(encode_images), jax.jit(encode_tokens)

  def embed_texts(params, prompts):
    tokens = tokenize(prompts)
    pad = -len(tokens) % text_batch_size
    tokens = np.concatenate([tokens, np.repeat(tokens[:1], pad, axis=0)])
    chunks = []
    for start in range(0, len(tokens), text_batch_size):
      chunk = parallel.global_batch({"t": tokens[start:start + text_batch_size]}, mesh)["t"]
      chunks.append(parallel.to_host(encode_tokens(params, chunk)))
    return np.concatenate(chunks)[:len(prompts)]

  def evaluate(params, step):
    with jax.set_mesh(mesh):
      image_embeddings, labels = [], []
      for batch in eval_batches():
        batch = parallel.global_batch(batch, mesh)
        image_embeddings.append(parallel.to_host(encode_images(params, batch.pop("image"))))
        batch.pop("tokens", None)
        labels.append(parallel.to_host(batch))
      embeddings = np.concatenate(image_embeddings)
      examples = {key: np.concatenate([b[key] for b in labels]) for key in labels[0]}
      real = examples["mask"].astype(bool)
      results = {}
      for task in tasks:
        selected = real if task.select is None else real & task.select(examples)
        classes = class_embeddings(lambda p: embed_texts(params, p), task.class_prompts)
        results[f"zero_shot/{task.name}"] = accuracy(
          embeddings[selected], classes, task.labels(examples)[selected])
    if workdir is not None and jax.process_index() == 0:
      write_results(os.path.join(workdir, RESULTS_FILE), step, results)
    return results

  return evaluate


def write_results(path: str, step: int, results: dict[str, float]) -> None:
  """Adds `results` under key str(step) to the JSON object in `path`."""
  everything = {}
  if os.path.exists(path):
    with open(path) as f:
      everything = json.load(f)
  everything[str(step)] = results
  with open(path + ".tmp", "w") as f:
    json.dump(everything, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)
