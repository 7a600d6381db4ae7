"""The one evaluator registry: `config.evals` names the evaluators of a run, built by type.

  config.evals.NAME = dict(type=TYPE, every=N, ...settings)

`type` picks the entry of `EVALUATORS`; NAME is free, so one type may run
twice with different settings (`zero_shot` and `zero_shot_big`). NAME names
the metrics (`eval/NAME/...` in TensorBoard) and the results file
(`workdir/NAME.json`, {step: {NAME/metric: value}}). `every` is how often the
loop calls it, in steps (absent or None: `config.eval_every`; 0: never, so
`--config.evals.NAME.every=0` turns one off); every evaluator that runs also
runs at the last step, and `config.eval_every=0` turns all of them off.

Each entry is made as make(key, settings, parts) -> evaluate(variables, step)
-> {metric: value}, where `key` is 'evals.NAME' (what its errors name),
`settings` is config.evals.NAME and `parts` is what the experiment lends (a
`Parts`). An experiment fills only the parts its family has; a type whose
parts are missing is a `UserError` that names the experiment's types.
`build_evaluators` checks every name before it makes any and returns what
the train loop runs: (every, evaluator(state, step)) pairs in the order of
the names, each evaluating `parts.variables(state)`.
"""
from collections.abc import Callable, Iterable, Sequence
import dataclasses
import json
import os
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from jaxmm import errors
from jaxmm import parallel
from jaxmm.evaluators import captioning
from jaxmm.evaluators import from_config
from jaxmm.evaluators import generative
from jaxmm.evaluators import prompt_judge
from jaxmm.evaluators.features import Encoder, SplitEmbeddings
from jaxmm import storage

OLD_KEY_MESSAGE = ("config.eval is now config.evals, each evaluator with a type: "
                   "config.evals.NAME = dict(type=TYPE, every=None, ...settings), e.g. "
                   "config.evals.knn = dict(type='knn', batch_size=512, k=20, ...)")


@dataclasses.dataclass(frozen=True)
class Parts:
  """What an experiment lends its evaluators; a part its family lacks stays None.

  Attributes:
    config: the run's config.
    mesh: where the encoders and the sampler run.
    workdir: where results files go (None: nowhere).
    variables: train state -> what the encoders or the sampler take (the params
      of a two-tower, the params and batch statistics of a ResNet, the average
      a diffusion run samples with).
    embeddings: the encoders over dataset splits: 'image'; and 'text' (of the
      'tokens' column) where there is a text tower.
    encode_text: (variables, tokens int [b, L]) -> unit-norm text embeddings [b, E].
    tokenize: N texts -> tokens int [N, L] that `encode_text` reads.
    sample: `jaxmm.runs.sampling.make_sampler` of the run's model.
    eval_batches: (split, global batch size) -> a pass over this process's rows
      of the split's batches, with 'mask' (`experiments.inputs.eval_batches`).
    caption: (variables, images [b, S, S, 3], beam) -> caption tokens int [b, L] of a
      captioner (`jaxmm.models.decoding.caption_images`).
    detokenize: tokens int [N, L] -> N texts.
  """
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  workdir: str | None
  variables: Callable[[Any], Any]
  embeddings: SplitEmbeddings | None = None
  encode_text: Encoder | None = None
  tokenize: Callable[[Sequence[str]], np.ndarray] | None = None
  sample: Callable[..., jax.Array] | None = None
  eval_batches: Callable[[str, int], Iterable[dict]] | None = None
  caption: Callable[..., jax.Array] | None = None
  detokenize: Callable[[np.ndarray], list[str]] | None = None


# evaluate(variables, step) -> {metric: value}, as each type makes it; and
# evaluator(state, step) -> {metric: value}, as the loop calls it.
Evaluate = Callable[[Any, int], dict[str, float]]
Evaluator = Callable[[Any, int], dict[str, float]]


class Type(NamedTuple):
  """An entry of the registry: how to make the evaluator, and the `Parts` fields it reads."""
  make: Callable[[str, ml_collections.ConfigDict, Parts], Evaluate]
  needs: tuple[str, ...]


EVALUATORS = {
    "zero_shot": Type(from_config.make_zero_shot, ("embeddings", "encode_text", "tokenize")),
    "retrieval": Type(from_config.make_retrieval, ("embeddings", "encode_text")),
    "linear_probe": Type(from_config.make_linear_probe, ("embeddings",)),
    "knn": Type(from_config.make_knn, ("embeddings",)),
    "sample_grid": Type(generative.make_sample_grid, ("sample",)),
    "judge": Type(generative.make_judge, ("sample", "eval_batches")),
    "two_sample": Type(generative.make_two_sample, ("sample",)),
    "caption": Type(captioning.make_caption, ("caption", "detokenize", "eval_batches")),
    "prompt_judge": Type(prompt_judge.make_prompt_judge, ("sample",)),
}


def _supplied(parts: Parts, kind: str) -> bool:
  return all(getattr(parts, field) is not None for field in EVALUATORS[kind].needs)


def check(name: str, settings: Any, parts: Parts) -> int:
  """How often evaluator `name` runs, in steps (0: never), after checking its settings; a
  `UserError` for an unknown type, one the experiment has no parts for, a bad `every` or
  `batch_size`."""
  key = f"evals.{name}"
  if not isinstance(settings, ml_collections.ConfigDict) or "type" not in settings:
    raise errors.UserError(f"{key} needs a type: config.{key} = dict(type=TYPE, ...settings), "
                           f"TYPE one of {', '.join(map(repr, EVALUATORS))}")
  kind = errors.one_of(f"{key}.type", settings.type, EVALUATORS)
  if not _supplied(parts, kind):
    supported = [k for k in EVALUATORS if _supplied(parts, k)]
    raise errors.UserError(
        f"{key}.type={kind!r} is not an evaluator of experiment={parts.config.experiment!r}, "
        f"whose types are {', '.join(map(repr, supported))}")
  if "batch_size" in settings:
    errors.integer_at_least(f"{key}.batch_size", settings.batch_size, 1)
    parallel.check_batch_size(settings.batch_size, parts.mesh, f"{key}.batch_size")
  every = settings.get("every")
  return parts.config.eval_every if every is None else errors.integer_at_least(
      f"{key}.every", every, 0)


def build_evaluators(parts: Parts) -> list[tuple[int, Evaluator]]:
  """(every, evaluator(state, step)) for each evaluator of `parts.config.evals`, by name.

  Every name is checked first (`check`), also when config.eval_every=0, which
  makes none, and for a name whose every=0, which is left out. Each evaluator
  evaluates `parts.variables(state)`, returns its metrics under 'NAME/' and
  adds them to workdir/NAME.json.
  """
  config = parts.config
  if "eval" in config:
    raise errors.UserError(OLD_KEY_MESSAGE)
  evals = config.get("evals") or {}
  schedule = [(name, check(name, evals[name], parts)) for name in evals]
  if not config.eval_every:
    return []
  built = []
  for name, every in schedule:
    if not every:
      continue
    settings = evals[name]
    evaluate = EVALUATORS[settings.type].make(f"evals.{name}", settings, parts)
    built.append((every, _named(name, evaluate, parts)))
  return built


def _named(name: str, evaluate: Evaluate, parts: Parts) -> Evaluator:
  """evaluator(state, step): `evaluate` of the state's variables, its metrics under 'NAME/',
  added to workdir/NAME.json by process 0."""

  def evaluator(state, step):
    results = {f"{name}/{k}": v for k, v in evaluate(parts.variables(state), step).items()}
    if results and parts.workdir is not None and jax.process_index() == 0:
      write_results(os.path.join(parts.workdir, f"{name}.json"), step, results)
    return results

  return evaluator


def write_results(path: str, step: int, results: dict[str, float]) -> None:
  """Adds `results` under key str(step) to the JSON object in `path`."""
  everything = json.loads(storage.read_text(path)) if storage.exists(path) else {}
  everything[str(step)] = results
  storage.write_text(path, json.dumps(everything, indent=2, sort_keys=True))
