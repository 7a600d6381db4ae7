"""The supcon experiment: the losses' wiring, BatchNorm state, evaluation, `jaxmm train`, errors."""
import json
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import data
from jaxmm import models
from jaxmm import parallel
from jaxmm import train
from jaxmm.commands import cli
from jaxmm.experiments import supcon
from jaxmm.train import model_init
from conftest import cli_error_line

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = [f"{loss}_{dataset}" for loss in supcon.LOSSES for dataset in ("digits", "shapes")]
# A ResNet small enough that a step compiles and runs in seconds, on 16x16 images.
TINY = ("batch_size=16", "total_steps=2", "checkpoint_every=2", "log_every=1", "eval_every=2",
        "optim.warmup_steps=1", "data.image_size=16", "model.stage_sizes=(1, 1)",
        "model.widths=(4, 8)", "evals.linear_probe.train_examples=256",
        "evals.knn.train_examples=256", "evals.linear_probe.max_steps=20")


def _overrides(name, data_dir=None):
  """TINY for config `name`, with a head of 8 outputs for the contrastive losses."""
  overrides = list(TINY) + ([] if name.startswith("ce_") else ["model.head=(8, 8)"])
  return overrides + ([] if data_dir is None else [f"data.data_dir={data_dir}"])


def _config(name, *overrides, data_dir=None):
  config = config_loading.load_config(str(REPO / "configs" / f"{name}.py"))
  return config_loading.apply_overrides(config, _overrides(name, data_dir) + list(overrides))


def _views_batch(config, batch_size=16):
  rng = np.random.default_rng(0)
  size, views = config.data.image_size, config.data.num_views
  return {
      "views": rng.uniform(-1, 1, (batch_size, views, size, size, 3)).astype(np.float32),
      config.data.label_key: (np.arange(batch_size) % 3).astype(np.int32),  # repeated labels
  }


def _log_softmax(logits):
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _supcon_reference(outputs, labels, temperature, base_temperature):
  """Khosla et al. (2020) eq. 2 written out over anchors, float64; labels None is SimCLR."""
  b, v, _ = outputs.shape
  z = outputs / np.linalg.norm(outputs, axis=-1, keepdims=True)
  z = z.reshape(b * v, -1)
  owner = np.repeat(np.arange(b), v)
  label = owner if labels is None else np.repeat(labels, v)
  terms = []
  for a in range(b * v):
    others = [c for c in range(b * v) if c != a]
    log_prob = _log_softmax(z[others] @ z[a] / temperature)
    positives = [i for i, c in enumerate(others) if label[c] == label[a]]
    if positives:
      terms.append(-(temperature / base_temperature) * log_prob[positives].mean())
  return np.mean(terms)


@pytest.mark.parametrize("loss", supcon.LOSSES)
def test_loss_of_a_sharded_batch_is_the_float64_reference(loss):
  config = _config(f"{loss}_shapes", "loss.temperature=0.2", "loss.base_temperature=0.1")
  model = models.get_model(config.model)
  variables = nn.unbox(
      jax.jit(model_init.make_init_variables(model, config))(jax.random.key(0)))
  batch = _views_batch(config)
  mesh = parallel.make_mesh({"data": 4, "fsdp": 2})
  loss_fn = supcon.make_loss_fn(model, config, mesh)
  model_state = {"batch_stats": variables["batch_stats"]}
  with jax.set_mesh(mesh), nn.logical_axis_rules(parallel.DEFAULT_RULES):
    value, metrics, model_state = jax.jit(loss_fn)(variables["params"], model_state,
                                                   parallel.global_batch(batch, mesh),
                                                   jax.random.key(0))
  # The same network over the whole batch on one device, its views in view-major
  # order: BatchNorm sees the same set of images.
  views = batch["views"]
  b, v = views.shape[:2]
  (_, outputs), reference_state = jax.jit(lambda x: model.apply(
      variables, x, train=True, mutable=["batch_stats"]))(
          views.transpose(1, 0, 2, 3, 4).reshape((v * b,) + views.shape[2:]))
  # The running averages moved by the statistics of the global batch.
  for new, reference, old in zip(jax.tree.leaves(model_state), jax.tree.leaves(reference_state),
                                 jax.tree.leaves(variables["batch_stats"])):
    np.testing.assert_allclose(new, reference, rtol=1e-5, atol=1e-6)
    assert not np.allclose(new, old)
  outputs = np.asarray(outputs, np.float64).reshape(v, b, -1).transpose(1, 0, 2)
  labels = batch["shape"]
  if loss == "ce":
    log_p = _log_softmax(outputs)
    expected = -np.mean(np.take_along_axis(log_p, labels[:, None, None], axis=-1))
    np.testing.assert_allclose(metrics["accuracy"],
                               np.mean(outputs.argmax(-1) == labels[:, None]), rtol=1e-6)
  else:
    expected = _supcon_reference(outputs, labels if loss == "supcon" else None, 0.2, 0.1)
  np.testing.assert_allclose(value, expected, rtol=2e-5)


def test_ce_loss_per_mixture_source_is_the_float64_reference():
  config = _config("ce_shapes", "data.mixture={'b': {'weight': 1.0}, 'a': {'weight': 2.0}}")
  objective = supcon.make_objective(config, parallel.make_mesh({"data": 8}))
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(8, 2, 6)).astype(np.float32)  # [B, V, classes]
  labels = rng.integers(6, size=8).astype(np.int32)
  source = np.array([0, 1, 1, 0, 1, 1, 1, 0], np.int32)  # the index in sorted names: a, b
  loss, metrics = jax.jit(objective)(logits, labels, source)
  per_example = -np.take_along_axis(_log_softmax(logits.astype(np.float64)),
                                    labels[:, None, None], axis=-1).mean(axis=(1, 2))
  # float32 log-softmax of 6 logits of size ~1: relative error a few ulp, far below 1e-5.
  np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["loss/a"], per_example[[0, 3, 7]].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["loss/b"], per_example[[1, 2, 4, 5, 6]].mean(), rtol=1e-5)


@pytest.fixture(scope="module")
def trained(digits_data_dir, tmp_path_factory):
  """(final state, workdir, config) of a tiny SupCon run on digits."""
  workdir = str(tmp_path_factory.mktemp("supcon") / "run")
  config = _config("supcon_digits", "total_steps=3", "checkpoint_every=3", "eval_every=3",
                   data_dir=digits_data_dir)
  return train.train(config, workdir, supcon.build), workdir, config


def test_training_updates_the_batch_statistics_and_load_run_restores_them(trained):
  state, workdir, config = trained
  model = models.get_model(config.model)
  initial = nn.unbox(
      jax.jit(model_init.make_init_variables(model, config))(jax.random.key(0)))
  final = jax.device_get(state.model_state)
  assert set(final) == {"batch_stats"}
  for start, end in zip(jax.tree.leaves(initial["batch_stats"]), jax.tree.leaves(final)):
    assert not np.allclose(start, end)
  for mesh in (None, parallel.make_mesh(config.mesh)):
    run = analysis.load_run(workdir, mesh=mesh)
    assert run.step == 3
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.model_state), final)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.params),
                 jax.device_get(state.params))


def test_evaluation_encodes_with_the_running_averages(trained):
  state, workdir, config = trained
  run = analysis.load_run(workdir)
  model = models.get_model(config.model)
  mesh = parallel.make_mesh(config.mesh)
  embeddings = supcon.make_split_embeddings(model, config, mesh)
  variables = {"params": run.params, **run.model_state}
  features, columns = embeddings(variables, 3, "test", 64)
  assert features.shape == (355, 8) and columns["label"].shape == (355,)
  images = next(iter(data.eval_batches(config.data, split="test", batch_size=64)))["image"]
  by_hand = model.apply(variables, images, method=model.encode)
  np.testing.assert_allclose(features[:64], by_hand, rtol=1e-4, atol=1e-5)
  with open(f"{workdir}/linear_probe.json") as f:
    assert 0 <= json.load(f)["3"]["linear_probe/label"] <= 1


@pytest.fixture
def in_repo(monkeypatch):
  monkeypatch.chdir(REPO)


# One of them in the default suite (supcon_digits trains in `trained`), all six with -m slow.
@pytest.mark.parametrize("name", [
    name if name == "ce_digits" else pytest.param(name, marks=pytest.mark.slow)
    for name in CONFIGS
])
def test_jaxmm_train_runs_each_config(name, digits_data_dir, request, tmp_path, in_repo):
  data_dir = (request.getfixturevalue("shapes_data_dir")
              if name.endswith("_shapes") else digits_data_dir)
  workdir = tmp_path / "run"
  cli.main(["train", "--config", f"configs/{name}.py", "--workdir", str(workdir)] +
           [f"--config.{o}" for o in _overrides(name, data_dir)])
  label = "shape" if name.endswith("_shapes") else "label"
  chance = 1 / (3 if name.endswith("_shapes") else 10)
  for evaluator in ("linear_probe", "knn"):
    with open(workdir / f"{evaluator}.json") as f:
      accuracy = json.load(f)["2"][f"{evaluator}/{label}"]
    # Chance ±0.03 on the test split. Even 2 steps' features separate the classes (on digits
    # probe ~0.5, k-NN ~0.4); misaligned features and labels sit at chance.
    assert chance + 0.1 < accuracy <= 1, (evaluator, accuracy)
  assert analysis.checkpoint_steps(str(workdir)) == [2]


@pytest.mark.parametrize("name,override,expected", [
    ("supcon_digits", "loss.name=supconn",
     "loss.name='supconn' is not one of 'supcon', 'simclr', 'ce'; did you mean 'supcon'?"),
    ("supcon_digits", "data.views=random_crop|flip",
     "data.views op='random_crop' is not one of 'random_resized_crop', 'flip', 'colour_jitter', "
     "'grayscale'"),
    ("supcon_digits", "data.views=flip(prob=1)", "flip takes the literal arguments p"),
    ("simclr_digits", "data.views=", "data.num_views=2 views of data.views='' would all be the "
     "same image"),
    ("supcon_digits", "data.views=None", "data.views=None makes no views"),
    ("simclr_digits", "data.num_views=1", "loss.name='simclr' needs two views of each image"),
    ("ce_digits", "model.head=(7,)", "loss.name='ce' needs one logit per class: "
     "model.head[-1]=7, but data.label_key='label' has 10 classes"),
    ("ce_digits", "data.label_key=digit", "data.label_key='digit' is not one of 'label'"),
    ("supcon_digits", "model.widths=(8,)", "model.stage_sizes=(1, 1) and model.widths=(8,) need "
     "one entry per stage"),
    ("supcon_digits", "loss.contrast_mode=some", "loss.contrast_mode='some' is not one of"),
    ("supcon_digits", "loss.temperature=0.0", "loss.temperature=0.0 must be a number > 0"),
])
def test_bad_input_is_one_line_before_anything_compiles(name, override, expected, digits_data_dir,
                                                        tmp_path, capsys, in_repo):
  line = cli_error_line(capsys, ["train", "--config", f"configs/{name}.py", "--workdir",
                              str(tmp_path / "run")] +
                     [f"--config.{o}" for o in _overrides(name, digits_data_dir) + [override]])
  assert expected in line, line
  assert not (tmp_path / "run" / "checkpoints").exists()
