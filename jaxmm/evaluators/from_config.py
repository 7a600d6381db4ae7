"""The evaluators of an encoder as `config.evals` asks for them: zero-shot, retrieval, probe, k-NN.

Each is made as make(key, settings, parts) (`registry.EVALUATORS`) from the
experiment's `parts.embeddings` (any image encoder: the probe and k-NN; two
towers: zero-shot and retrieval, with `parts.encode_text`), with settings:

  batch_size      global batch of the encoders over the splits (every type)
  ks              retrieval's ranks k of recall@k
  train_examples  the probe or k-NN learns from the first N of
                  data.train_split (None: all of it)
  labels          class labels to classify (None: every one of data.name)
  l2, max_steps   the probe's (`linear_probe.fit`)
  k, vote, temperature  the k-NN's (`knn.vote`)

and tests on data.eval_split. Zero-shot's classes are the prompts of
`prompts.zero_shot_tasks(data.name)`.
"""
from jaxmm import data
from jaxmm import errors
from jaxmm.evaluators import prompts
from jaxmm.evaluators import representation
from jaxmm.evaluators import zero_shot


def make_zero_shot(key, settings, parts):
  """evaluate(params, step): zero-shot accuracy of each task of the dataset on the eval split."""
  del key  # its one setting, batch_size, is checked by the registry
  config, batch_size = parts.config, settings.batch_size
  split = config.data.eval_split
  return zero_shot.make_evaluator(
      tasks=prompts.zero_shot_tasks(config.data.name),
      embed_images=lambda params, step: parts.embeddings(params, step, split, batch_size),
      encode_tokens=parts.encode_text,
      tokenize=parts.tokenize,
      mesh=parts.mesh,
      text_batch_size=batch_size)


def make_retrieval(key, settings, parts):
  """evaluate(params, step): image↔text recall@k on the eval split."""
  return representation.make_retrieval_evaluator(parts.embeddings,
                                                 split=parts.config.data.eval_split,
                                                 batch_size=settings.batch_size,
                                                 ks=settings.ks,
                                                 config_key=key)


def training_examples(config, key: str, settings) -> tuple[str, int]:
  """The split a probe or k-NN learns from and its size: the first `train_examples` of
  data.train_split, or all of it when that is None or more than it has."""
  split, wanted = config.data.train_split, settings.train_examples
  size = data.split_reader(config.data, split).num_examples
  if wanted is None or errors.integer_at_least(f"{key}.train_examples", wanted, 1) >= size:
    return split, size
  return f"{split}[:{wanted}]", wanted


def _classifier_settings(key, settings, parts) -> dict:
  """The arguments the linear-probe and k-NN evaluators share."""
  config = parts.config
  labels = representation.chosen_labels(data.class_labels(config.data), settings.labels,
                                        config.data.name, key)
  return dict(embeddings=parts.embeddings,
              train_split=training_examples(config, key, settings)[0],
              eval_split=config.data.eval_split,
              batch_size=settings.batch_size,
              labels=labels,
              config_key=key)


def make_linear_probe(key, settings, parts):
  """evaluate(variables, step): accuracy of linear probes on the frozen image embeddings."""
  return representation.make_linear_probe_evaluator(l2=settings.l2,
                                                    max_steps=settings.max_steps,
                                                    **_classifier_settings(key, settings, parts))


def make_knn(key, settings, parts):
  """evaluate(variables, step): k-NN accuracy among the training split's image embeddings."""
  return representation.make_knn_evaluator(num_train=training_examples(parts.config, key,
                                                                       settings)[1],
                                           k=settings.k,
                                           vote=settings.vote,
                                           temperature=settings.temperature,
                                           **_classifier_settings(key, settings, parts))
