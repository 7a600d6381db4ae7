"""Judging text-to-image samples of `shapes`: does each image show what its prompt says?

The prompts are captions ("a small green cross in the bottom right"): the
captions of `num_prompts` test images drawn at random, and for each of the 8
held-out (shape, colour) pairs (`shapes.HELD_OUT_PAIRS`, never in training)
`per_held_out_pair` captions at random sizes and positions. A trained
image-text run (`judge.Judge`) reads each sample's four attributes back:

- shape and colour: its zero-shot classifier (`Judge.classify_features`);
- size and position, which its prompts do not separate well: linear probes
  (`linear_probe.fit`) on its frozen image embeddings of `probe_examples`
  training images.

Each reader's accuracy on the real test images says how far the numbers can
be trusted ('reader/NAME'); 'accuracy/NAME' is the share of samples whose
NAME matches the prompt, 'accuracy/all' the share matching in all four, and
'held_out/...' the same over the held-out pairs' samples.
"""
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import data
from jaxmm import errors
from jaxmm import parallel
from jaxmm.data import shapes
from jaxmm.evaluators import judge as judge_lib
from jaxmm.evaluators import linear_probe
from jaxmm.runs import caption_condition

ATTRIBUTES = ("shape", "colour", "size", "position")
# How many classes each probed attribute has; shape and colour are read zero-shot.
PROBED = {"size": len(shapes.SIZES), "position": len(shapes.POSITIONS)}
_PROBE_L2 = 1e-4


def split_features(judge: judge_lib.Judge, split: str, num: int | None = None):
  """(image embeddings [N, E], {attribute: int labels [N]}) of the first `num` (None: all)
  images of the judge run's `split`."""
  features, labels = [], {name: [] for name in ATTRIBUTES}
  seen = 0
  for batch in data.eval_batches(judge.run.config.data, split=split,
                                 batch_size=judge.batch_size):
    mask = batch["mask"]
    features.append(judge.image_features(batch["image"][mask]))
    for name in ATTRIBUTES:
      labels[name].append(np.asarray(batch[name])[mask])
    seen += int(mask.sum())
    if num is not None and seen >= num:
      break
  return (np.concatenate(features)[:num], {k: np.concatenate(v)[:num] for k, v in labels.items()})


class AttributeReader:
  """Reads shape, colour, size and position off images with a `judge.Judge`.

  Attributes:
    judge: the image-text run's judge (zero-shot shape and colour).
    accuracy: {attribute: accuracy on the real test images}.
  """

  def __init__(self, judge: judge_lib.Judge, probe_examples: int):
    self.judge = judge
    self._train, train_labels = split_features(judge, "train", probe_examples)
    train, _ = linear_probe.standardize(self._train, self._train[:1])
    self._probes = {
        name: linear_probe.fit(train, train_labels[name], classes, l2=_PROBE_L2)
        for name, classes in PROBED.items()
    }
    test, self.test_labels = split_features(judge, "test")
    predicted = self.read_features(test)
    self.accuracy = {name: float(np.mean(predicted[name] == self.test_labels[name]))
                     for name in ATTRIBUTES}

  def read_features(self, features: np.ndarray) -> dict[str, np.ndarray]:
    """{attribute: int class [N]} of image embeddings [N, E]."""
    read = {k: v for k, v in self.judge.classify_features(features).items() if k in ATTRIBUTES}
    _, standardized = linear_probe.standardize(self._train, features)
    read.update({name: linear_probe.predict(probe, standardized)
                 for name, probe in self._probes.items()})
    return read

  def read(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """{attribute: int class [N]} of images [N, H, W, 3] in [-1, 1]."""
    return self.read_features(self.judge.image_features(images))


def prompt_labels(test_labels: Mapping[str, np.ndarray], num_prompts: int, per_held_out_pair: int,
                  seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """({attribute: int [N]}, held_out bool [N]) of the judged prompts (module docstring): those
  of `num_prompts` random test images, then `per_held_out_pair` of every held-out pair."""
  rng = np.random.default_rng(seed)
  rows = rng.choice(len(test_labels["shape"]), num_prompts, replace=False)
  pairs = np.repeat([(shapes.SHAPES.index(s), shapes.COLOURS.index(c))
                     for s, c in shapes.HELD_OUT_PAIRS], per_held_out_pair, axis=0)
  held = {"shape": pairs[:, 0], "colour": pairs[:, 1],
          "size": rng.integers(len(shapes.SIZES), size=len(pairs)),
          "position": rng.integers(len(shapes.POSITIONS), size=len(pairs))}
  labels = {name: np.concatenate([test_labels[name][rows], held[name]]) for name in ATTRIBUTES}
  held_out = np.arange(len(labels["shape"])) >= num_prompts
  return labels, held_out


def captions(labels: Mapping[str, np.ndarray]) -> list[str]:
  """The caption of each row of {attribute: int [N]}."""
  return [shapes.caption(*row) for row in zip(*(labels[name] for name in ATTRIBUTES))]


def score(read: Mapping[str, np.ndarray], requested: Mapping[str, np.ndarray],
          held_out: np.ndarray) -> dict[str, float]:
  """'accuracy/NAME' and 'held_out/NAME' (NAME: an attribute or 'all'): the share of samples
  whose attribute read back is the requested one, over the prompts from test captions and
  over the held-out pairs' prompts."""
  hits = {name: read[name] == requested[name] for name in ATTRIBUTES}
  hits["all"] = np.all([hits[name] for name in ATTRIBUTES], axis=0)
  results = {}
  for prefix, rows in (("accuracy", ~held_out), ("held_out", held_out)):
    results.update({f"{prefix}/{name}": float(np.mean(hit[rows])) for name, hit in hits.items()})
  return results


def make_prompt_judge(key, settings, parts):
  """evaluate(params, step): samples of the judged prompts scored by `settings.run`."""
  config = parts.config
  if not caption_condition.is_text_conditioned(config):
    raise errors.UserError(f"{key}.type='prompt_judge' judges text-to-image runs (model.text "
                           "set); use type='judge' for a label-conditioned run")
  for name in ("num_prompts", "per_held_out_pair", "probe_examples"):
    errors.integer_at_least(f"{key}.{name}", settings[name], 1)
  judge = judge_lib.make_judge(settings.run, mesh=parts.mesh, config_key=key)
  reader = AttributeReader(judge, settings.probe_examples)
  requested, held_out = prompt_labels(reader.test_labels, settings.num_prompts,
                                      settings.per_held_out_pair, config.seed)
  tokens = jnp.asarray(caption_condition.tokenize_prompts(config, captions(requested)))

  def evaluate(params, step):
    del step
    images = parallel.to_host(
        parts.sample(params,
                     jax.random.key(config.seed + 1),
                     tokens,
                     len(tokens),
                     sampler=settings.sampler,
                     num_steps=settings.num_steps,
                     guidance=settings.guidance))
    results = score(reader.read(images), requested, held_out)
    results.update({f"reader/{name}": value for name, value in reader.accuracy.items()})
    return results

  return evaluate
