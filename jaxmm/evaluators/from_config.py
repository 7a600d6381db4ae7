"""The linear-probe and k-NN evaluators as an experiment config's `eval` asks for them.

Any experiment with an image encoder (`features.SplitEmbeddings` with an
'image' encoder) makes them from `config.eval.linear_probe` and
`config.eval.knn`:

  batch_size      global batch of the encoder over the splits
  train_examples  the probe or k-NN learns from the first N of
                  data.train_split (None: all of it)
  labels          class labels to classify (None: every one of data.name)
  l2, max_steps   the probe's (`linear_probe.fit`)
  k, vote, temperature  the k-NN's (`knn.vote`)

and tests on data.eval_split.
"""
from jaxmm import data
from jaxmm import errors
from jaxmm.evaluators import representation
from jaxmm.evaluators.features import SplitEmbeddings


def training_examples(config, name: str) -> tuple[str, int]:
  """The split a probe or k-NN learns from and its size: the first eval.<name>.train_examples
  of data.train_split, or all of it when that is None or more than it has."""
  split, wanted = config.data.train_split, config.eval[name].train_examples
  size = data.split_reader(config.data, split).num_examples
  if wanted is None or errors.integer_at_least(f"eval.{name}.train_examples", wanted, 1) >= size:
    return split, size
  return f"{split}[:{wanted}]", wanted


def _classifier_settings(config, workdir, embeddings, name) -> dict:
  """The arguments the linear-probe and k-NN evaluators share, from config.eval[name]."""
  settings = config.eval[name]
  labels = representation.chosen_labels(data.class_labels(config.data), settings.labels,
                                        config.data.name, f"eval.{name}")
  return dict(embeddings=embeddings,
              train_split=training_examples(config, name)[0],
              eval_split=config.data.eval_split,
              batch_size=settings.batch_size,
              labels=labels,
              workdir=workdir)


def linear_probe_evaluator(config, embeddings: SplitEmbeddings, workdir: str | None):
  """evaluator(params, step): accuracy of linear probes on the frozen image embeddings."""
  settings = config.eval.linear_probe
  return representation.make_linear_probe_evaluator(
      l2=settings.l2,
      max_steps=settings.max_steps,
      **_classifier_settings(config, workdir, embeddings, "linear_probe"))


def knn_evaluator(config, embeddings: SplitEmbeddings, workdir: str | None):
  """evaluator(params, step): k-NN accuracy among the training split's image embeddings."""
  settings = config.eval.knn
  return representation.make_knn_evaluator(num_train=training_examples(config, "knn")[1],
                                           k=settings.k,
                                           vote=settings.vote,
                                           temperature=settings.temperature,
                                           **_classifier_settings(config, workdir, embeddings,
                                                                  "knn"))
