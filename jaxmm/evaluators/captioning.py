"""Caption accuracy: decode captions of data.eval_split and score them against its labels.

  config.evals.caption = dict(type="caption", batch_size=B, beam=1, num_examples=N)

For each class label of the dataset whose class names are known (shape,
colour, size and position of `shapes`), a generated caption names a class
when that name's words occur in it in order; where several names occur, the
one with most words wins ('top left' over 'top' and 'left'), and a tie of
different names counts as wrong. Metrics: `{label}_accuracy` per label,
`exact_match` (the generated caption is the reference caption), and
`held_out_exact_match` over the rows a dataset marks `held_out` (shapes'
unseen (shape, colour) pairs). Settings: batch_size (global), beam
(1: greedy), num_examples (the first N of the split; None: all of it).
"""
import itertools
import re

import jax
import numpy as np

from jaxmm import data
from jaxmm import errors
from jaxmm.evaluators import features

_WORD = re.compile(r"[a-z]+")


def _words(text: str) -> tuple[str, ...]:
  return tuple(_WORD.findall(text.lower()))


def _contains(words: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
  return any(words[i:i + len(phrase)] == phrase for i in range(len(words) - len(phrase) + 1))


def named_class(caption: str, names) -> int:
  """The index of the class of `names` that `caption` names (module docstring), or −1 for
  none or an ambiguous caption."""
  words = _words(caption)
  found = [(len(_words(name)), i) for i, name in enumerate(names) if _contains(words, _words(name))]
  if not found:
    return -1
  longest = max(n for n, _ in found)
  best = [i for n, i in found if n == longest]
  return best[0] if len(best) == 1 else -1


def caption_scores(generated, references, labels, names) -> dict[str, float]:
  """Metrics of generated captions [N] against reference captions [N], labels {key: int [N]}
  (and 'held_out' bool [N] if the dataset has it), names {key: class names}."""
  generated, references = list(generated), list(references)
  scores = {}
  for key, classes in names.items():
    predicted = np.array([named_class(c, classes) for c in generated])
    scores[f"{key}_accuracy"] = float(np.mean(predicted == labels[key]))
  exact = np.array([g.strip() == r.strip() for g, r in zip(generated, references)])
  scores["exact_match"] = float(np.mean(exact))
  if "held_out" in labels and np.any(labels["held_out"]):
    scores["held_out_exact_match"] = float(np.mean(exact[labels["held_out"].astype(bool)]))
  return scores


def class_names(data_config) -> dict[str, list[str]]:
  """{label key: class names} of data.name's class labels; {} for a shard source, whose labels
  are integers without names."""
  if data_config.get("source", "tfds") != "tfds":
    return {}
  builder = data.get_builder(data_config.name, data_config.get("data_dir"))
  return {key: list(builder.info.features[key].names) for key in data.class_labels(data_config)}


def make_caption(key, settings, parts):
  """evaluate(params, step) -> caption metrics on data.eval_split (module docstring)."""
  config = parts.config
  beam = errors.integer_at_least(f"{key}.beam", settings.get("beam", 1), 1)
  num = settings.get("num_examples")
  if num is not None:
    errors.integer_at_least(f"{key}.num_examples", num, 1)
  batch_size, split = settings.batch_size, config.data.eval_split
  names = class_names(config.data)
  caption = jax.jit(lambda params, images: parts.caption(params, images, beam))

  def evaluate(params, step):
    del step
    batches = parts.eval_batches(split, batch_size)
    if num is not None:
      batches = itertools.islice(batches, -(-num // batch_size))
    tokens, columns = features.embed_batches(caption, params, batches, parts.mesh,
                                             extra=("tokens",))
    tokens, columns = tokens[:num], {k: v[:num] for k, v in columns.items()}
    return caption_scores(parts.detokenize(tokens), parts.detokenize(columns["tokens"]),
                          columns, names)

  return evaluate
