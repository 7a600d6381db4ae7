"""Zero-shot classification: score each class by its prompts' text embeddings.

Each class is described by one or more prompts. Two ways to combine them:

- 'mean': the class embedding is the renormalised mean of its prompts' text
  embeddings, and an image goes to the class of highest cosine similarity
  (CLIP's prompt ensembling, Radford et al. 2021, sec. 3.1.4). Right when the
  prompts are rewordings of one another.
- 'max': a class scores the similarity of its best-matching prompt, so an
  image goes to the class of the single most similar prompt. Right when the
  prompts are complete descriptions that differ in other attributes (a
  caption names shape, colour, size and position): the mean of such
  embeddings does not isolate one attribute, while the best full caption
  does, and reading one attribute off it marginalises the others.
"""
from collections.abc import Callable, Sequence
import dataclasses
from typing import Any

import jax
import numpy as np

from jaxmm.evaluators import features

ENSEMBLES = ("mean", "max")


@dataclasses.dataclass(frozen=True)
class ZeroShotTask:
  """One classification problem over the eval split.

  Attributes:
    name: metric name, e.g. 'shape'.
    class_prompts: for each class, its prompts.
    labels: batch -> int class index per example [b].
    select: batch -> bool [b], the examples this task scores (default: all).
    ensemble: how a class's prompts combine, 'mean' or 'max' (module docstring).
  """
  name: str
  class_prompts: Sequence[Sequence[str]]
  labels: Callable[[dict], np.ndarray]
  select: Callable[[dict], np.ndarray] | None = None
  ensemble: str = "mean"

  def __post_init__(self):
    if self.ensemble not in ENSEMBLES:
      raise ValueError(f"task {self.name!r}: ensemble={self.ensemble!r}; choose from {ENSEMBLES}")


def normalize(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def class_scores(image_embeddings: np.ndarray, prompt_embeddings: Sequence[np.ndarray],
                 ensemble: str) -> np.ndarray:
  """[N, C] scores of N images for C classes, class c given its prompts' [P_c, E] embeddings."""
  if ensemble == "mean":
    classes = normalize(np.stack([e.mean(0) for e in prompt_embeddings]))
    return image_embeddings @ classes.T
  return np.stack([(image_embeddings @ e.T).max(1) for e in prompt_embeddings], axis=1)


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 accuracy of argmax_c scores [N, C] against `labels` [N]."""
  return float(np.mean(np.argmax(scores, axis=-1) == labels))


def make_evaluator(*,
                   tasks: Sequence[ZeroShotTask],
                   embed_images: Callable[[Any, int], tuple[np.ndarray, dict[str, np.ndarray]]],
                   encode_tokens: Callable,
                   tokenize: Callable[[Sequence[str]], np.ndarray],
                   mesh: jax.sharding.Mesh,
                   text_batch_size: int):
  """An evaluator(params, step) -> {task name: accuracy}.

  Args:
    tasks: the classification problems; their prompts are embedded once per call.
    embed_images: (params, step) -> the eval split's image embeddings [N, E]
      and its columns (labels) [N], on every process, e.g. a
      `features.SplitEmbeddings` of the split.
    encode_tokens: (params, global batch of tokens [b, L]) -> [b, E]
      embeddings; jitted here.
    tokenize: list of N prompts -> int tokens [N, L].
    text_batch_size: prompts per text-encoder call; a multiple of the mesh's
      batch shards.
  """
  encode_tokens = jax.jit(encode_tokens)
  prompts = sorted({p for task in tasks for prompts in task.class_prompts for p in prompts})
  prompt_index = {p: i for i, p in enumerate(prompts)}
  tokens = tokenize(prompts)

  def evaluate(params, step):
    text = features.embed_inputs(encode_tokens, params, tokens, text_batch_size, mesh)
    images, examples = embed_images(params, step)
    results = {}
    for task in tasks:
      selected = np.ones(len(images), bool) if task.select is None else task.select(examples)
      per_class = [text[[prompt_index[p] for p in ps]] for ps in task.class_prompts]
      scores = class_scores(images[selected], per_class, task.ensemble)
      results[task.name] = accuracy(scores, task.labels(examples)[selected])
    return results

  return evaluate
