"""Zero-shot evaluation with encoders whose answers are known in advance."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import data
from jaxmm import evaluators
from jaxmm import parallel
from jaxmm.data import shapes

NUM_CLASSES = 5


def _encode_images(params, images):
  """The 'model' predicts the class written into pixel (0, 0, 0)."""
  del params
  return jax.nn.one_hot(images[:, 0, 0, 0].astype(jnp.int32), NUM_CLASSES)


def _encode_tokens(params, tokens):
  """Prompts read 'class K': byte 6 holds the digit."""
  del params
  return jax.nn.one_hot(tokens[:, 6] - ord("0"), NUM_CLASSES)


def _batches(predicted, labels, batch_size):
  """Fixed-size batches; the last is padded with wrong predictions and mask False."""
  n = len(labels)
  pad = -n % batch_size
  predicted = np.concatenate([predicted, (labels[:pad] + 1) % NUM_CLASSES])
  labels = np.concatenate([labels, labels[:pad]])
  mask = np.arange(n + pad) < n
  images = np.zeros((n + pad, 4, 4, 3), np.float32)
  images[:, 0, 0, 0] = predicted
  return [{
      "image": images[i:i + batch_size],
      "label": labels[i:i + batch_size],
      "mask": mask[i:i + batch_size]
  } for i in range(0, n + pad, batch_size)]


def test_accuracy_counts_real_examples_only():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, NUM_CLASSES, 45)
  predicted = np.where(rng.uniform(size=45) < 0.6, labels, (labels + 2) % NUM_CLASSES)
  tokenizer = data.get_tokenizer("bytes")
  task = evaluators.ZeroShotTask(
      name="digit",
      class_prompts=[[f"class {k}", f"class {k}"] for k in range(NUM_CLASSES)],
      labels=lambda b: b["label"])
  even = evaluators.ZeroShotTask(name="even",
                                 class_prompts=task.class_prompts,
                                 labels=task.labels,
                                 select=lambda b: b["label"] % 2 == 0)
  mesh = parallel.make_mesh({"data": -1})
  evaluate = evaluators.make_evaluator(
      tasks=[task, even],
      embed_images=lambda params, step: evaluators.embed_batches(
          _encode_images, params, _batches(predicted, labels, 16), mesh),
      encode_tokens=_encode_tokens,
      tokenize=lambda texts: tokenizer.encode_batch(texts, 8),
      mesh=mesh,
      text_batch_size=8)
  results = evaluate(None, step=7)
  correct = predicted == labels
  assert results["digit"] == np.mean(correct)
  assert results["even"] == np.mean(correct[labels % 2 == 0])


def test_mean_ensemble_scores_the_normalised_prompt_mean():
  prompts = [np.array([[3.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0]])]
  images = np.array([[1.0, 0.0], [0.0, 1.0]])
  class_means = np.array([[3.0, 1.0], [1.0, 1.0]]) / np.sqrt([[10.0], [2.0]])
  np.testing.assert_allclose(evaluators.class_scores(images, prompts, "mean"),
                             images @ class_means.T)


def test_max_ensemble_scores_the_best_prompt():
  prompts = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.6, 0.8]])]
  images = np.array([[0.0, 1.0], [0.8, 0.6]])
  # Image 0 matches class 0's second prompt exactly; image 1 is nearer class 1's
  # only prompt (0.96) than either of class 0's (0.8, 0.6).
  np.testing.assert_allclose(evaluators.class_scores(images, prompts, "max"),
                             [[1.0, 0.8], [0.8, 0.96]])
  assert evaluators.accuracy(evaluators.class_scores(images, prompts, "max"), np.array([0,
                                                                                        1])) == 1.0


def test_unknown_ensemble_is_an_error():
  with pytest.raises(ValueError, match="ensemble='median'"):
    evaluators.ZeroShotTask(name="x", class_prompts=[["a"]], labels=lambda b: b, ensemble="median")


def test_shapes_prompts_cover_every_caption_of_each_class():
  tasks = {t.name: t for t in evaluators.zero_shot_tasks("shapes")}
  assert {t.ensemble for t in tasks.values()} == {"max"}
  per_shape = len(shapes.COLOURS) * len(shapes.SIZES) * len(shapes.POSITIONS)
  assert [len(p) for p in tasks["shape"].class_prompts] == [per_shape] * len(shapes.SHAPES)
  assert all(shapes.SHAPES[k] in prompt
             for k, prompts in enumerate(tasks["shape"].class_prompts)
             for prompt in prompts)
  pairs = tasks["held_out_pairs"]
  batch = {"shape": np.array([2]), "colour": np.array([3]), "held_out": np.array([True])}
  label = pairs.labels(batch)[0]
  assert all(f"{shapes.COLOURS[3]} {shapes.SHAPES[2]}" in p for p in pairs.class_prompts[label])
