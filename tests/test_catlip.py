"""CatLIP: the binary cross-entropy, the vocabulary and targets, training, resume, errors."""
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import data
from jaxmm import errors
from jaxmm import losses
from jaxmm import models
from jaxmm import parallel
from jaxmm import train
from jaxmm.commands import cli
from jaxmm.data import caption_labels
from jaxmm.experiments import catlip
from conftest import cli_error_line

REPO = pathlib.Path(__file__).resolve().parents[1]
# A ViT small enough that a step compiles and runs in seconds, on 16x16 images.
TINY = ("batch_size=16", "total_steps=4", "checkpoint_every=2", "log_every=1", "eval_every=4",
        "optim.warmup_steps=1", "optim.lr=0.01", "data.image_size=16", "model.image.patch_size=8",
        "model.image.width=32", "model.image.depth=1", "model.image.num_heads=2",
        "model.image.mlp_dim=64", "evals.linear_probe.train_examples=512",
        "evals.knn.train_examples=512", "evals.linear_probe.max_steps=50")


def _overrides(data_dir, *more):
  return list(TINY) + [f"data.data_dir={data_dir}"] + list(more)


def _config(data_dir, *more):
  config = config_loading.load_config(str(REPO / "configs" / "catlip_shapes.py"))
  return config_loading.apply_overrides(config, _overrides(data_dir, *more))


def _bce_reference(x, y):
  """Mean of −[y log σ(x) + (1 − y) log(1 − σ(x))] in float64, with −log σ(x) = log(1 + e^−x)
  written as logaddexp(0, −x), which is exact where exp(−x) overflows."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return np.mean(y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x))


def test_binary_cross_entropy_is_the_float64_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(0, 3, (32, 22))
  y = (rng.random((32, 22)) < 0.25).astype(np.float64)
  # float32: each of the 704 terms is rounded (relative 6e-8) and summed; the worst case of
  # a sequential float32 sum is 704 · 6e-8 ≈ 4e-5 relative.
  got = losses.binary_cross_entropy_loss(jnp.float32(x), jnp.float32(y))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, _bce_reference(np.float32(x), y), rtol=5e-5)
  with jax.enable_x64(True):
    got, grad = jax.value_and_grad(losses.binary_cross_entropy_loss)(jnp.asarray(x),
                                                                     jnp.asarray(y))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, _bce_reference(x, y), rtol=1e-12)
    # dL/dx = (σ(x) − y) / (B·V).
    np.testing.assert_allclose(grad, (1 / (1 + np.exp(-x)) - y) / x.size, rtol=1e-10,
                               atol=1e-18)


def test_binary_cross_entropy_stays_finite_at_large_logits():
  # By hand: a confident right answer costs log(1 + e^−1000) ≈ 0, a confident wrong one 1000,
  # and a zero logit log 2 whatever its target.
  x = np.array([[1000.0, -1000.0, 1000.0, -1000.0, 0.0, 0.0]], np.float32)
  y = np.array([[1.0, 0.0, 0.0, 1.0, 0.0, 1.0]], np.float32)
  got = losses.binary_cross_entropy_loss(x, y)
  np.testing.assert_allclose(got, (2000 + 2 * math.log(2)) / 6, rtol=1e-6)
  np.testing.assert_allclose(got, _bce_reference(x, y), rtol=1e-6)
  grad = jax.grad(losses.binary_cross_entropy_loss)(x, y)
  # (σ(x) − y) / 6: 0, 0, 1/6, −1/6, 1/12, −1/12.
  np.testing.assert_allclose(grad, [[0, 0, 1 / 6, -1 / 6, 1 / 12, -1 / 12]], atol=1e-7)


CAPTIONS = ["A red circle on the left.", b"a RED square, top left", "2 red circles",
            "blue square", "square"]


def test_vocabulary_and_targets_of_a_hand_made_caption_list():
  assert caption_labels.caption_words(CAPTIONS[0]) == ["red", "circle", "left"]
  counts = caption_labels.word_counts(CAPTIONS)
  # red 3, square 3, left 2; circle, top, circles, blue once each ("2" is no word).
  assert counts == {"red": 3, "square": 3, "left": 2, "circle": 1, "top": 1, "circles": 1,
                    "blue": 1}
  words = caption_labels.vocabulary(counts, min_count=2)
  assert words == ("red", "square", "left")  # by count, then alphabetically
  np.testing.assert_array_equal(caption_labels.multi_hot(CAPTIONS, words),
                                [[1, 0, 1], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 1, 0]])
  assert caption_labels.vocabulary(counts, min_count=4) == ()


def test_training_batches_carry_the_targets_of_their_captions():
  tokenizer = data.get_tokenizer("bytes")

  class Tokens:
    position = {"next_index": 7}

    def __next__(self):
      return {"image": np.zeros((5, 2, 2, 3)), "tokens": tokenizer.encode_batch(CAPTIONS, 32)}

    def get_state(self):
      return self.position

    def set_state(self, state):
      self.position = state

  batches = caption_labels.CaptionLabelBatches(Tokens(), tokenizer, ("square", "red", "blue"))
  batch = next(batches)
  assert set(batch) == {"image", "caption_labels"}
  np.testing.assert_array_equal(batch["caption_labels"],
                                [[0, 1, 0], [1, 1, 0], [0, 1, 0], [1, 0, 1], [1, 0, 0]])
  batches.set_state({"next_index": 3})
  assert batches.get_state() == {"next_index": 3}


def test_loss_starts_at_log_2_and_falls_on_a_fixed_batch(shapes_data_dir, tmp_path):
  config = _config(shapes_data_dir)
  mesh = parallel.make_mesh(config.mesh)
  parts = catlip.build(config, str(tmp_path), mesh)
  assert config.model.num_labels == 22
  batch = parallel.global_batch(next(parts["train_data"]), mesh)
  config.optim.warmup_steps, config.total_steps = 0, 100  # a constant rate over the 10 steps
  tx, shardings, step = train.build_step(config, mesh, parts["init_variables"], parts["loss_fn"])
  state = train.init_state(parts["init_variables"], tx, config.ema, shardings,
                           train.init_rng(config.seed))
  losses_seen = []
  for _ in range(10):
    state, metrics = step(state, batch)
    losses_seen.append(float(metrics["loss"]))
  # The zero-initialised head makes every logit 0 at the first step: the loss is log 2.
  assert losses_seen[0] == pytest.approx(math.log(2), rel=1e-6)
  # Then it falls with every step for a while, towards and below the labels' mean entropy in
  # the batch (≈ 0.46, the cost of predicting each word's frequency whatever the image).
  assert all(b < a for a, b in zip(losses_seen[:5], losses_seen[1:5])), losses_seen
  assert losses_seen[-1] < math.log(2) - 0.15, losses_seen


@pytest.fixture(scope="module")
def trained(shapes_data_dir, tmp_path_factory):
  """The workdir of a 4-step run of `jaxmm train --config configs/catlip_shapes.py`."""
  workdir = tmp_path_factory.mktemp("catlip") / "run"
  cli.main(["train", "--config", str(REPO / "configs" / "catlip_shapes.py"), "--workdir",
            str(workdir)] + [f"--config.{o}" for o in _overrides(shapes_data_dir)])
  return workdir


def test_jaxmm_train_writes_the_vocabulary_and_the_probe(trained):
  vocabulary = json.loads((trained / catlip.VOCABULARY_FILE).read_text())
  # shapes' captions: 3 sizes, 8 colours, 6 shapes and the 5 words of the 9 positions.
  assert sorted(vocabulary["words"]) == sorted(
      ["small", "medium", "large", "red", "green", "blue", "yellow", "cyan", "magenta", "orange",
       "white", "circle", "square", "triangle", "diamond", "star", "cross", "top", "bottom",
       "left", "right", "center"])
  assert vocabulary["counts"] == sorted(vocabulary["counts"], reverse=True)
  run = analysis.load_run(str(trained))
  assert run.config.model.num_labels == 22 and run.step == 4
  assert run.params["head"]["kernel"].shape == (32, 22)
  results = json.loads((trained / "linear_probe.json").read_text())["4"]
  assert set(results) == {f"linear_probe/{k}" for k in ("shape", "colour", "size", "position")}
  # The features the probe reads: the tower's pooled output, unit-norm.
  images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), np.uint8)
  features = run.embed_images(images)
  model = models.get_model(run.config.model)
  pooled = model.apply({"params": run.params}, images / 127.5 - 1,
                       method=lambda m, x: m.image_tower(x))
  pooled = np.asarray(pooled, np.float64)
  np.testing.assert_allclose(features, pooled / np.linalg.norm(pooled, axis=1, keepdims=True),
                             rtol=1e-5, atol=1e-6)


def test_resume_is_exact_and_reads_the_saved_vocabulary(trained, shapes_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  train.train(_config(shapes_data_dir, "total_steps=2", "eval_every=0"), workdir, catlip.build)
  # The vocabulary is read back, not rebuilt: a reordered one would change the targets.
  path = pathlib.Path(workdir) / catlip.VOCABULARY_FILE
  assert path.read_text() == (trained / catlip.VOCABULARY_FILE).read_text()
  state = train.train(_config(shapes_data_dir, "eval_every=0"), workdir, catlip.build)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params),
               analysis.load_run(str(trained)).params)


def test_a_run_uses_the_vocabulary_in_its_workdir(shapes_data_dir, tmp_path):
  saved = {"min_count": 100, "words": ["red", "circle"], "counts": [2448, 3384]}
  (tmp_path / catlip.VOCABULARY_FILE).write_text(json.dumps(saved))
  config = _config(shapes_data_dir)
  parts = catlip.build(config, str(tmp_path), parallel.make_mesh(config.mesh))
  assert config.model.num_labels == 2
  batch = next(parts["train_data"])
  first = data.get_tokenizer("bytes").decode(
      next(data.train_iterator(config.data, global_batch_size=16, seed=0))["tokens"][0])
  assert batch["caption_labels"][0].tolist() == [float("red" in first), float("circle" in first)]
  other = _config(shapes_data_dir, "data.label_min_count=50")
  with pytest.raises(errors.UserError, match="was built with data.label_min_count=100; set "
                     "--config.data.label_min_count=100 to resume, or use a new --workdir"):
    catlip.build(other, str(tmp_path), parallel.make_mesh(other.mesh))


@pytest.fixture
def in_repo(monkeypatch):
  monkeypatch.chdir(REPO)


@pytest.mark.parametrize("override,expected", [
    ("data.label_min_count=10000", "data.label_min_count=10000 leaves no label: the most "
     "frequent word of the train captions, 'left', occurs 6816 times; set "
     "--config.data.label_min_count=6816 or less"),
    ("data.label_min_count=0", "data.label_min_count=0 must be an integer >= 1"),
    ("data.text_key=None", "CatLIP's labels are words of the captions: data.text_key=None is "
     "not a feature of 'shapes'"),
    ("data.text_key=shape", "the 20000 train captions of data.text_key='shape' hold no words"),
    ("model.num_labels=5", "model.num_labels=5, but the label vocabulary has 22 words"),
    ("evals.knn.type=zero_shot", "evals.knn.type='zero_shot' is not an evaluator of "
     "experiment='catlip', whose types are 'linear_probe', 'knn'"),
])
def test_bad_input_is_one_line_before_training(override, expected, shapes_data_dir, tmp_path,
                                               capsys, in_repo):
  line = cli_error_line(capsys, ["train", "--config", "configs/catlip_shapes.py", "--workdir",
                                 str(tmp_path / "run")] +
                        [f"--config.{o}" for o in _overrides(shapes_data_dir, override)])
  assert expected in line, line
  assert not (tmp_path / "run" / "checkpoints").exists()
