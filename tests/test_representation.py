"""Retrieval, linear-probe and k-NN evaluators: feature extraction, a trained run, bad settings."""
import json
import math
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import data
from jaxmm import errors
from jaxmm import evaluators
from jaxmm import models
from jaxmm import parallel
from jaxmm.experiments import image_text
from jaxmm.train import model_init

from conftest import EVALUATORS_ON, TINY_OVERRIDES, cli_error_line
from test_cli_errors import _train_args

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 100


# ------------------------------------------------------- feature extraction


def _batches(values, batch_size):
  """Fixed-size batches of 'image' [b, 1] = values, 'label' and 'mask'; the last one padded."""
  n = len(values)
  pad = -n % batch_size
  image = np.concatenate([values, np.full(pad, -1.0)]).astype(np.float32)[:, None]
  label = np.concatenate([np.arange(n), np.zeros(pad, int)]).astype(np.int32)
  mask = np.arange(n + pad) < n
  return [{
      "image": image[i:i + batch_size],
      "label": label[i:i + batch_size],
      "tokens": np.zeros((batch_size, 3), np.int32),
      "mask": mask[i:i + batch_size]
  } for i in range(0, n + pad, batch_size)]


def _double(params, x):
  del params
  return jnp.concatenate([x, 2 * x], axis=1)


def test_embed_batches_keeps_order_and_labels_and_drops_padding():
  values = np.arange(21, dtype=np.float32)
  mesh = parallel.make_mesh({"data": -1})
  embeddings, columns = evaluators.embed_batches(_double, None, _batches(values, 8), mesh)
  np.testing.assert_array_equal(embeddings, np.stack([values, 2 * values], axis=1))
  assert set(columns) == {"label"}  # 'tokens' is not a label: not gathered unless asked
  np.testing.assert_array_equal(columns["label"], np.arange(21))
  _, columns = evaluators.embed_batches(_double, None, _batches(values, 8), mesh, extra=("tokens",))
  assert columns["tokens"].shape == (21, 3)


def test_split_embeddings_are_computed_once_per_step():
  calls = []

  def batches(split, batch_size):
    calls.append(split)
    return _batches(np.arange(10, dtype=np.float32), batch_size)

  embed = evaluators.SplitEmbeddings({"image": ("image", _double)}, batches,
                                     parallel.make_mesh({"data": -1}))
  first, _ = embed(None, 1, "train", 8)
  again, _ = embed(None, 1, "train", 8)
  embed(None, 1, "test", 8)
  assert again is first and calls == ["train", "test"]
  embed(None, 2, "train", 8)  # a new step: new parameters
  assert calls == ["train", "test", "train"]


# ------------------------------------------------------------ a trained run


@pytest.fixture(scope="module")
def trained(tiny_config, digits_data_dir, run_image_text, tmp_path_factory):
  """A tiny SigLIP run on digits with every image-text evaluator at its last step."""
  config = tiny_config("siglip", "data.name=digits", f"data.data_dir={digits_data_dir}",
                       "data.max_len=40", "batch_size=64", "optim.lr=0.003",
                       "optim.warmup_steps=10", f"total_steps={STEPS}",
                       f"checkpoint_every={STEPS}", f"eval_every={STEPS}", f"log_every={STEPS}",
                       "evals.retrieval.batch_size=256", "evals.linear_probe.batch_size=256",
                       "evals.knn.batch_size=256", *EVALUATORS_ON)
  workdir = tmp_path_factory.mktemp("run")
  run_image_text(config, str(workdir))
  results = {}
  for name in ("zero_shot", "retrieval", "linear_probe", "knn"):
    with open(workdir / f"{name}.json") as f:
      (step, results[name]), = json.load(f).items()
    assert step == str(STEPS)
  return results, workdir


def _chance_text_to_image(groups, k):
  """Expected text->image recall@k of random embeddings: P(a correct image among k of N)."""
  n, sizes = len(groups), np.bincount(groups)[groups]
  return float(np.mean([1 - math.comb(n - size, k) / math.comb(n, k) for size in sizes]))


def test_run_writes_every_evaluator_and_its_metrics(trained):
  results, workdir = trained
  assert set(results["retrieval"]) == {
      f"retrieval/{d}/recall@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)
  }
  assert set(results["linear_probe"]) == {"linear_probe/label"}
  assert set(results["knn"]) == {"knn/label"}
  with open(workdir / "metrics.jsonl") as f:  # TensorBoard's scalars, as JSON lines
    logged = {k for line in f for k in json.loads(line)}
  assert {"eval/knn/label", "eval/linear_probe/label",
          "eval/retrieval/text_to_image/recall@10"} <= logged
  assert any(p.name.startswith("events.out.tfevents") for p in workdir.iterdir())


def test_recall_grows_with_k_and_beats_chance(trained, digits_data_dir):
  recall = trained[0]["retrieval"]
  for direction in ("image_to_text", "text_to_image"):
    r1, r5, r10 = (recall[f"retrieval/{direction}/recall@{k}"] for k in (1, 5, 10))
    assert 0 <= r1 <= r5 <= r10 <= 1, direction
  # 40 different captions: a random ranking finds an image's caption in the top 10 a quarter
  # of the time; a caption's images (about 9 of 355) in the top 10 about as often.
  assert recall["retrieval/image_to_text/recall@10"] > 10 / 40 + 0.3
  captions = data.data_source("digits", "test", data_dir=digits_data_dir)
  groups = np.unique([captions[i]["caption"] for i in range(len(captions))],
                     return_inverse=True)[1]
  assert recall["retrieval/text_to_image/recall@10"] > _chance_text_to_image(groups, 10) + 0.3


def test_probe_and_knn_beat_chance(trained):
  results = trained[0]
  assert results["linear_probe"]["linear_probe/label"] > 0.6  # chance: 0.1
  assert results["knn"]["knn/label"] > 0.6
  assert results["zero_shot"]["zero_shot/digit"] > 0.3


# -------------------------------------------------------------- bad settings


@pytest.mark.parametrize("override,expected", [
    ("evals.knn.k=5000", "evals.knn.k=5000 is more than the 512 examples of the training split "
     "'train[:512]'; set --config.evals.knn.k to at most 512"),
    (("evals.knn.k=5000", "evals.knn.train_examples=100000"),
     "evals.knn.k=5000 is more than the 1442 examples of the training split 'train'; set "
     "--config.evals.knn.k to at most 1442"),
    ("evals.knn.vote=mean", "evals.knn.vote='mean' is not one of 'majority', 'similarity'"),
    ("evals.knn.labels=shape", "evals.knn.labels=('shape',) must name class labels of 'digits', "
     "which are 'label'; set --config.evals.knn.labels to some of them, or to None for all"),
    ("evals.linear_probe.l2=0.0", "evals.linear_probe.l2=0.0 must be a number > 0"),
    ("evals.linear_probe.train_examples=0",
     "evals.linear_probe.train_examples=0 must be an integer >= 1"),
    ("evals.retrieval.ks=(1, 0)", "evals.retrieval.ks[1]=0 must be an integer >= 1"),
])
def test_bad_setting_is_one_line_naming_the_key(capsys, digits_data_dir, tmp_path, monkeypatch,
                                                 override, expected):
  monkeypatch.chdir(REPO)
  args = _train_args(tmp_path / "run", digits_data_dir, TINY_OVERRIDES + EVALUATORS_ON,
                     "data.name=digits",
                     *((override,) if isinstance(override, str) else override))
  assert cli_error_line(capsys, args) == f"jaxmm train: error: {expected}"
  assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


def test_a_dataset_without_class_labels_is_an_error():
  with pytest.raises(errors.UserError) as e:
    evaluators.chosen_labels({}, None, "toy", "evals.linear_probe")
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("evals.linear_probe classifies class labels, but data.name='toy' has "
                            "none")
  assert message.endswith("--config.eval_every=0")


def test_labels_none_means_all_and_a_name_is_one():
  available = {"shape": 6, "colour": 8}
  assert evaluators.chosen_labels(available, None, "shapes", "evals.knn") == available
  assert evaluators.chosen_labels(available, "colour", "shapes", "evals.knn") == {"colour": 8}


@pytest.mark.slow  # test_labels_none_means_all_and_a_name_is_one covers labels=None by default
def test_probe_and_knn_classify_every_label_of_shapes(tiny_config, shapes_data_dir):
  """Untrained, on shapes: labels=None gives all four labels, from the first train_examples."""
  config = tiny_config("siglip", f"data.data_dir={shapes_data_dir}",
                       "evals.linear_probe.train_examples=500", "evals.knn.train_examples=500",
                       *EVALUATORS_ON)
  mesh = parallel.make_mesh(config.mesh)
  model = models.get_model(config.model)
  params = jax.jit(model_init.make_init_variables(model, config))(jax.random.key(0))["params"]
  state = types.SimpleNamespace(params=jax.device_put(params, parallel.replicated(mesh)))
  del config.evals.zero_shot, config.evals.retrieval
  parts = image_text.evaluator_parts(model, data.get_tokenizer(config.data.tokenizer), config,
                                     mesh, None)
  results = {}
  for _, evaluate in evaluators.build_evaluators(parts):
    results.update(evaluate(state, 0))
  assert set(results) == {
      f"{name}/{label}" for name in ("linear_probe", "knn")
      for label in ("shape", "colour", "size", "position")
  }
  assert all(0 <= v <= 1 for v in results.values())
  train, _ = parts.embeddings(state.params, 0, "train[:500]", config.evals.knn.batch_size)
  assert len(train) == 500  # the probe and k-NN shared these
