"""How good a learned representation is: retrieval, linear-probe and k-NN evaluators.

Each makes an evaluator(params, step) -> {metric: value} from a
`features.SplitEmbeddings` (so any experiment with an image encoder can use
the probe and k-NN, and any with two towers retrieval):

  retrieval     'image_to_text/recall@k', 'text_to_image/recall@k' on the eval
                split (`retrieval.recall_at_k`)
  linear_probe  '<label>': test accuracy of a probe fitted to the training
                split's image embeddings (`linear_probe.fit`)
  knn           '<label>': test accuracy of the k-NN vote among the training
                split's image embeddings (`knn.neighbours`, `knn.vote`)

Settings are checked when the evaluator is made, before any training; a bad
one is a `UserError` that names its config key (`config_key`, e.g. 'evals.knn').
"""
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from jaxmm import errors
from jaxmm.evaluators import knn
from jaxmm.evaluators import linear_probe
from jaxmm.evaluators import retrieval
from jaxmm.evaluators.features import SplitEmbeddings


def chosen_labels(available: Mapping[str, int], names: str | Sequence[str] | None, dataset: str,
                  config_key: str) -> dict[str, int]:
  """The class labels to classify, name -> number of classes: `names`, or all when None.

  `available` are the dataset's class labels (`data.class_labels`). Raises
  UserError, naming `<config_key>.labels`, for a name that is not one of them or
  when there are none.
  """
  if not available:
    raise errors.UserError(
        f"{config_key} classifies class labels, but data.name={dataset!r} has none (no tfds "
        "ClassLabel feature); train on a dataset with labels, or without evaluation: "
        "--config.eval_every=0")
  if names is None:
    return dict(available)
  names = (names,) if isinstance(names, str) else tuple(names)
  unknown = [name for name in names if name not in available]
  if unknown or not names:
    raise errors.UserError(
        f"{config_key}.labels={names!r} must name class labels of {dataset!r}, which are "
        f"{', '.join(map(repr, available))}; set --config.{config_key}.labels to some of them, "
        "or to None for all")
  return {name: available[name] for name in names}


def make_retrieval_evaluator(embeddings: SplitEmbeddings,
                             *,
                             split: str,
                             batch_size: int,
                             ks: Sequence[int],
                             config_key: str = "evals.retrieval"):
  """evaluator(params, step): image↔text recall@k for each k of `ks` on `split`.

  `embeddings` needs encoders 'image' and 'text' (the latter reading 'tokens').
  """
  ks = tuple(errors.integer_at_least(f"{config_key}.ks[{i}]", k, 1) for i, k in enumerate(ks))
  if not ks:
    raise errors.UserError(f"{config_key}.ks is empty; set it to the ranks to score, e.g. "
                           f"--config.{config_key}.ks='(1, 5, 10)'")

  def evaluate(params, step):
    images, _ = embeddings(params, step, split, batch_size, "image")
    texts, columns = embeddings(params, step, split, batch_size, "text", extra=("tokens",))
    groups = retrieval.caption_groups(columns["tokens"])
    return retrieval.recall_at_k(images, texts, groups, ks)

  return evaluate


# (train embeddings [N, E], eval embeddings [M, E], {label: (train labels [N], classes)})
#   -> {label: predicted eval classes [M]}
Classify = Callable[[np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, int]]],
                    dict[str, np.ndarray]]


def _classification_evaluator(classify: Classify, embeddings: SplitEmbeddings, *,
                              train_split: str, eval_split: str, batch_size: int,
                              labels: Mapping[str, int]):
  """evaluator(params, step): each label's eval-split accuracy of `classify`, which learns
  from the training split's image embeddings."""

  def evaluate(params, step):
    train, train_labels = embeddings(params, step, train_split, batch_size)
    test, test_labels = embeddings(params, step, eval_split, batch_size)
    tasks = {label: (train_labels[label], classes) for label, classes in labels.items()}
    predicted = classify(train, test, tasks)
    return {label: float(np.mean(predicted[label] == test_labels[label])) for label in labels}

  return evaluate


def make_linear_probe_evaluator(embeddings: SplitEmbeddings,
                                *,
                                train_split: str,
                                eval_split: str,
                                batch_size: int,
                                labels: Mapping[str, int],
                                l2: float,
                                max_steps: int,
                                config_key: str = "evals.linear_probe"):
  """evaluator(params, step): for each label (name -> number of classes) the `eval_split`
  accuracy of a linear probe fitted on `train_split`'s image embeddings."""
  errors.positive(f"{config_key}.l2", l2)
  errors.integer_at_least(f"{config_key}.max_steps", max_steps, 1)

  def classify(train, test, tasks):
    train, test = linear_probe.standardize(train, test)
    return {
        label: linear_probe.predict(
            linear_probe.fit(train, train_labels, classes, l2=l2, max_steps=max_steps), test)
        for label, (train_labels, classes) in tasks.items()
    }

  return _classification_evaluator(classify, embeddings, train_split=train_split,
                                   eval_split=eval_split, batch_size=batch_size, labels=labels)


def make_knn_evaluator(embeddings: SplitEmbeddings,
                       *,
                       train_split: str,
                       num_train: int,
                       eval_split: str,
                       batch_size: int,
                       labels: Mapping[str, int],
                       k: int,
                       vote: str,
                       temperature: float,
                       config_key: str = "evals.knn"):
  """evaluator(params, step): for each label (name -> number of classes) the `eval_split`
  accuracy of a k-NN vote among the `num_train` image embeddings of `train_split`."""
  errors.integer_at_least(f"{config_key}.k", k, 1)
  if k > num_train:
    raise errors.UserError(f"{config_key}.k={k} is more than the {num_train} examples of the "
                           f"training split {train_split!r}; set --config.{config_key}.k to at "
                           f"most {num_train}")
  errors.one_of(f"{config_key}.vote", vote, knn.VOTES)
  errors.positive(f"{config_key}.temperature", temperature)

  def classify(train, test, tasks):
    indices, similarities = knn.neighbours(train, test, k)  # found once for every label
    return {
        label: knn.vote(train_labels[indices], similarities, classes, vote, temperature)
        for label, (train_labels, classes) in tasks.items()
    }

  return _classification_evaluator(classify, embeddings, train_split=train_split,
                                   eval_split=eval_split, batch_size=batch_size, labels=labels)
