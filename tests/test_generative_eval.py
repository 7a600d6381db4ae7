"""Judging generated images: the Fréchet distance, and a trained two-tower as classifier."""
import itertools
import json
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxmm import config_loading
from jaxmm import data
from jaxmm import errors
from jaxmm import evaluators
from jaxmm import models
from jaxmm import parallel
from jaxmm import train
from jaxmm.data import preprocess
from jaxmm.data import shapes
from jaxmm.experiments import image_text
from jaxmm.runs import checkpoints
from jaxmm.train import model_init

STEP = 7


def _fd_from_sample_moments(a, b):
  """The FID formula with scipy's general matrix square root, on [N, D] and [M, D] samples."""
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(cov_a @ cov_b).real
  return np.sum((a.mean(0) - b.mean(0))**2) + np.trace(cov_a + cov_b - 2 * root)


def test_frechet_distance_of_diagonal_gaussians_is_their_closed_form():
  rng = np.random.default_rng(0)
  mean_a, mean_b = np.array([0.0, 1.0, -1.0, 2.0]), np.array([0.5, 1.0, 0.0, 2.0])
  var_a, var_b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 9.0])
  a = mean_a + np.sqrt(var_a) * rng.standard_normal((200_000, 4))
  b = mean_b + np.sqrt(var_b) * rng.standard_normal((200_000, 4))
  # Diagonal covariances commute, so Tr(Σa + Σb − 2(Σa Σb)^½) = Σ (√a − √b)².
  exact = np.sum((mean_a - mean_b)**2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b))**2)
  assert exact == 3.5
  np.testing.assert_allclose(evaluators.frechet_distance(a, b), exact, rtol=0.02)


def test_frechet_distance_equals_the_formula_on_full_sample_covariances():
  rng = np.random.default_rng(1)
  a = rng.standard_normal((60, 6)) @ rng.standard_normal((6, 6))
  b = rng.standard_normal((90, 6)) @ rng.standard_normal((6, 6)) + 0.3
  distance = evaluators.frechet_distance(a, b)
  assert isinstance(distance, float)
  np.testing.assert_allclose(distance, _fd_from_sample_moments(a, b), rtol=1e-9)
  np.testing.assert_allclose(evaluators.frechet_distance(b, a), distance, rtol=1e-9)


@pytest.mark.parametrize("num, dim", [(500, 8), (10, 32)])  # the second covariance is singular
def test_frechet_distance_of_identical_sets_is_zero(num, dim):
  features = np.random.default_rng(2).standard_normal((num, dim)).astype(np.float32)
  assert abs(evaluators.frechet_distance(features, features.copy())) < 1e-9


def test_frechet_distance_rejects_mismatched_widths():
  with pytest.raises(ValueError, match="different widths: 3 and 4"):
    evaluators.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def _write_run(workdir, config, params):
  """A one-checkpoint run of `config` holding `params`, through the real state and checkpoint
  code."""
  init_variables = model_init.make_init_variables(models.get_model(config.model), config)
  tx, _ = train.make_optimizer(config.optim, config.total_steps)
  shardings = train.state_shardings(init_variables, tx, config.ema,
                                    parallel.make_mesh(config.mesh))
  state = train.init_state(init_variables, tx, config.ema, shardings, jax.random.key(0))
  state = state.replace(step=jnp.int32(STEP), params=params)
  manager = checkpoints.make_manager(workdir, async_save=False)
  checkpoints.save(manager, STEP, state, {"next_index": STEP},
                   json.loads(config_loading.config_to_json(config)))
  checkpoints.finish(manager)
  manager.close()


def _centred_params(config, images, texts):
  """Initial two-tower parameters whose projections subtract the towers' mean output over
  `images` and `texts`: at initialisation all embeddings are nearly one vector, and every
  image would get the same class."""
  model = models.get_model(config.model)

  @jax.jit
  def init(rng):
    params = nn.unbox(model_init.make_init_variables(model, config)(rng))["params"]
    towers = model.apply({"params": params},
                         images,
                         texts,
                         method=lambda m, x, t: {
                             "image": m.image_tower(x),
                             "text": m.text_tower(t)
                         })
    for name, features in towers.items():
      projection = params[f"{name}_proj"]
      projection["bias"] = -features.mean(0) @ projection["kernel"]
    return params

  return jax.tree.map(np.asarray, init(jax.random.key(0)))


@pytest.fixture(scope="module")
def judge_run(tiny_config, shapes_data_dir, tmp_path_factory):
  """A saved tiny SigLIP run (with whole captions): its config, workdir, model and params, and
  what the zero-shot evaluator reports for them."""
  config = tiny_config("siglip", "data.max_len=48", f"data.data_dir={shapes_data_dir}")
  batch = data.eval_batches(config.data, batch_size=256)[0]
  params = _centred_params(config, batch["image"], batch["tokens"])
  workdir = str(tmp_path_factory.mktemp("judge_run"))
  _write_run(workdir, config, params)
  model = models.get_model(config.model)
  parts = image_text.evaluator_parts(model, data.get_tokenizer(config.data.tokenizer), config,
                                     parallel.make_mesh(config.mesh), None)
  evaluate = evaluators.EVALUATORS["zero_shot"].make("evals.zero_shot", config.evals.zero_shot,
                                                     parts)
  return types.SimpleNamespace(config=config,
                               workdir=workdir,
                               model=model,
                               params=params,
                               zero_shot=evaluate(params, STEP))


@pytest.fixture(scope="module")
def judge(judge_run):
  return evaluators.make_judge(judge_run.workdir, batch_size=256)


@pytest.fixture(scope="module")
def test_split(judge_run):
  """The test split as the zero-shot evaluator reads it: images [N, 16, 16, 3] and labels [N]."""
  batches = list(data.eval_batches(judge_run.config.data, batch_size=256))
  return {
      key: np.concatenate([b[key][b["mask"]] for b in batches])
      for key in ("image", "shape", "colour", "held_out")
  }


def _encoder(judge_run, method):
  model = judge_run.model
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x, method=method))
  return lambda x: np.asarray(apply(judge_run.params, x))


def test_image_features_are_the_models_unit_norm_image_embeddings(judge, judge_run, test_split):
  images = test_split["image"][:40]
  features = judge.image_features(images)
  assert features.shape == (40, 16) and features.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(features, axis=-1), 1.0, rtol=1e-5)
  direct = _encoder(judge_run, judge_run.model.encode_image)(images)
  np.testing.assert_allclose(features, direct, atol=1e-5)


def test_images_of_another_size_are_resized_as_the_pipeline_does(judge, judge_run):
  data_config = judge_run.config.data
  stored = data.split_reader(data_config, "test").read(np.arange(8))["image"]  # uint8 32x32
  piped = data.eval_batches(data_config, batch_size=8)[0]["image"]  # 16x16
  np.testing.assert_array_equal(judge.image_features(preprocess.normalize(stored)),
                                judge.image_features(piped))


def _captions(keep):
  """Every caption of the (shape, colour) labels for which keep(shape, colour)."""
  return [
      shapes.caption(*attrs)
      for attrs in itertools.product(range(len(shapes.SHAPES)), range(len(shapes.COLOURS)),
                                     shapes.SIZES, shapes.POSITIONS)
      if keep(*attrs[:2])
  ]


def test_classes_are_the_best_matching_caption(judge, judge_run, test_split):
  images = test_split["image"][:300]
  data_config = judge_run.config.data
  every = _captions(lambda s, c: True)
  tokens = data.get_tokenizer(data_config.tokenizer).encode_batch(every, data_config.max_len)
  text = dict(zip(every, _encoder(judge_run, judge_run.model.encode_text)(tokens)))
  image = _encoder(judge_run, judge_run.model.encode_image)(images)
  classes = {
      "shape": [lambda s, c, k=k: s == k for k in range(len(shapes.SHAPES))],
      "colour": [lambda s, c, k=k: c == k for k in range(len(shapes.COLOURS))],
      "pair": [lambda s, c, k=k: (s, c) == k for k in np.ndindex(6, 8)],
  }
  predicted = judge.classify(images)
  for name, keeps in classes.items():
    best = [(image @ np.stack([text[t] for t in _captions(keep)]).T).max(1) for keep in keeps]
    np.testing.assert_array_equal(predicted[name], np.argmax(np.stack(best, 1), 1), err_msg=name)
    assert len(np.unique(predicted[name])) > len(keeps) // 2, name  # not a constant


def test_accuracy_on_real_images_is_the_zero_shot_evaluators(judge, judge_run, test_split):
  labelled = test_split["image"], test_split["shape"], test_split["colour"]
  results = evaluators.judge_samples(judge, *labelled)
  zero_shot = judge_run.zero_shot
  assert results["conditional_accuracy/shape"] == zero_shot["shape"]
  assert results["conditional_accuracy/colour"] == zero_shot["colour"]
  held_out = evaluators.judge_held_out(judge, *labelled)
  assert held_out["conditional_accuracy/held_out_pair"] == zero_shot["held_out_pairs"]
  assert set(held_out) == {
      f"conditional_accuracy/held_out_{k}" for k in ("shape", "colour", "pair")
  }


def test_pair_accuracy_counts_the_requested_pair(judge, test_split):
  images, shape, colour = (test_split[k][:64] for k in ("image", "shape", "colour"))
  predicted = judge.classify(images)
  results = evaluators.judge_samples(judge, images, shape, colour)
  for name, requested in (("shape", shape), ("colour", colour),
                          ("pair", shape * len(shapes.COLOURS) + colour)):
    assert results[f"conditional_accuracy/{name}"] == np.mean(predicted[name] == requested)
  assert "fd" not in results


def test_fd_is_between_the_samples_and_the_reference_features(judge, test_split):
  reference = evaluators.real_image_features(judge)
  np.testing.assert_array_equal(reference, judge.image_features(test_split["image"]))
  labelled = (test_split[k][:500] for k in ("image", "shape", "colour"))
  results = evaluators.judge_samples(judge, *labelled, reference)
  np.testing.assert_allclose(results["fd"],
                             _fd_from_sample_moments(reference[:500].astype(np.float64),
                                                     reference.astype(np.float64)),
                             rtol=1e-6)
  assert results["fd"] > 0


def test_held_out_mask_selects_exactly_the_held_out_pairs(test_split):
  shape, colour = np.array(list(np.ndindex(len(shapes.SHAPES), len(shapes.COLOURS)))).T
  selected = evaluators.held_out_mask(shape, colour)
  assert {(shapes.SHAPES[s], shapes.COLOURS[c]) for s, c in zip(shape[selected], colour[selected])
         } == set(shapes.HELD_OUT_PAIRS)
  assert selected.sum() == len(shapes.HELD_OUT_PAIRS)
  # The dataset's own flag on its test split agrees.
  np.testing.assert_array_equal(evaluators.held_out_mask(test_split["shape"], test_split["colour"]),
                                test_split["held_out"])


def test_held_out_accuracy_needs_held_out_pairs(judge, test_split):
  seen = ~test_split["held_out"]
  labelled = (test_split[k][seen][:3] for k in ("image", "shape", "colour"))
  with pytest.raises(ValueError, match="none of the 3 labels is a held-out pair"):
    evaluators.judge_held_out(judge, *labelled)


def test_a_run_that_is_not_image_text_is_a_user_error(judge_run, tmp_path):
  config = judge_run.config.copy_and_resolve_references()
  config.experiment = "diffusion"
  _write_run(str(tmp_path), config, {"w": np.zeros(3, np.float32)})
  with pytest.raises(errors.UserError,
                     match=r"evals\.judge\.run=.* is an experiment='diffusion' run.*make train"):
    evaluators.make_judge(str(tmp_path))


def test_a_run_on_another_dataset_is_a_user_error(judge_run, tmp_path):
  config = judge_run.config.copy_and_resolve_references()
  config.data.name = "toy_pairs"
  _write_run(str(tmp_path), config, {"w": np.zeros(3, np.float32)})
  with pytest.raises(errors.UserError, match=r"data\.name='toy_pairs'.*trained on 'shapes'"):
    evaluators.make_judge(str(tmp_path))


@pytest.mark.parametrize("where", ["missing", "empty", "no_checkpoint"])
def test_no_run_is_a_user_error(tmp_path, where):
  run_dir = tmp_path / where
  if where != "missing":
    run_dir.mkdir()
  if where == "no_checkpoint":
    (run_dir / checkpoints.CHECKPOINT_DIR).mkdir()
  with pytest.raises(errors.UserError,
                     match=r"^gen\.judge\.run: no (run|complete checkpoint) in .*make train"):
    evaluators.make_judge(str(run_dir), config_key="gen.judge")


def test_a_batch_that_does_not_split_over_the_mesh_is_a_user_error(judge_run):
  with pytest.raises(errors.UserError, match=r"evals\.judge\.batch_size=100 .*multiple of 8"):
    evaluators.make_judge(judge_run.workdir, batch_size=100)
