"""`jaxmm filter`: its scores, the pairs it keeps, the dataset it writes, and training on that.

The default tests filter a caption-corrupted copy of `digits` with a tiny run
trained for a few steps; the slow test filters corrupted `shapes` with a model
that has learned, and trains on both datasets.
"""
import json
import os

import jax
import numpy as np
import pytest

from jaxmm import analysis
from jaxmm import data
from jaxmm import parallel
from jaxmm import train
from jaxmm.commands import cli
from jaxmm.commands import data_filter
from jaxmm.data import corrupted_captions
from jaxmm.data import preprocess
from jaxmm.experiments import image_text

KEEP = 0.3


@pytest.fixture(scope="module")
def noisy_dir(digits_data_dir, tmp_path_factory):
  """A data dir holding digits with 30 % of its train captions replaced."""
  noisy = str(tmp_path_factory.mktemp("filter") / "noisy")
  corrupted_captions.write_corrupted_copy("digits", "train", 0.3, noisy, data_dir=digits_data_dir)
  return noisy


@pytest.fixture(scope="module")
def scoring_run(tiny_config, noisy_dir, tmp_path_factory):
  """The workdir of a tiny SigLIP run trained a few steps on the noisy digits, on one device
  (it compiles fastest there); its config's mesh spans every device."""
  config = tiny_config("siglip", "data.name=digits", f"data.data_dir={noisy_dir}", "total_steps=3",
                       "eval_every=0")
  workdir = str(tmp_path_factory.mktemp("filter") / "run")
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  train.run(config, workdir, mesh=mesh, **image_text.build(config, workdir, mesh))
  return workdir


@pytest.fixture(scope="module")
def filtered(scoring_run, noisy_dir, tmp_path_factory):
  """The --out of `jaxmm filter` keeping 30 % of the noisy digits' train split."""
  out = str(tmp_path_factory.mktemp("filter") / "filtered")
  cli.main([
      "filter", "--run", scoring_run, "--dataset", "digits", "--data-dir", noisy_dir, "--split",
      "train", "--keep",
      str(KEEP), "--out", out
  ])
  return out


def _split(data_dir, split, name="digits"):
  """Every record of dataset `name`'s `split` in `data_dir`, as the input pipeline reads them."""
  reader = data.split_reader({"name": name, "data_dir": data_dir, "cache": True}, split)
  return reader.read(np.arange(reader.num_examples))


def _scores(out):
  with np.load(os.path.join(out, data_filter.SCORES_FILE)) as scores:
    return dict(scores)


def test_scores_are_the_cosine_of_the_runs_image_and_caption_embeddings(
    scoring_run, noisy_dir, filtered):
  run = analysis.load_run(scoring_run)
  pairs = _split(noisy_dir, "train")
  images = preprocess.resize(preprocess.normalize(pairs["image"]), run.config.data.image_size)
  image = run.embed_images(images).astype(np.float64)
  text = run.embed_texts(list(pairs["caption"])).astype(np.float64)
  norms = np.linalg.norm(image, axis=-1) * np.linalg.norm(text, axis=-1)
  cosine = np.sum(image * text, axis=-1) / norms
  scores = _scores(filtered)
  np.testing.assert_array_equal(scores["index"], np.arange(len(cosine)))
  assert scores["score"].dtype == np.float32 and np.ptp(cosine) > 1e-3
  np.testing.assert_allclose(scores["score"], cosine, rtol=0, atol=1e-5)


def test_top_fraction_keeps_the_rounded_share_of_highest_scores_with_ties_to_the_earlier():
  scores = np.array([0.1, 0.9, 0.5, 0.9, -0.2, 0.5], np.float32)
  np.testing.assert_array_equal(data_filter.top_fraction(scores, 0.5), [0, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(data_filter.top_fraction(scores, 0.25), [0, 1, 0, 1, 0, 0])
  np.testing.assert_array_equal(data_filter.top_fraction(scores, 0.4), [0, 1, 0, 1, 0, 0])
  np.testing.assert_array_equal(data_filter.top_fraction(scores, 0.01), [0, 1, 0, 0, 0, 0])
  assert data_filter.top_fraction(scores, 1.0).all()


def test_filtered_split_holds_exactly_the_top_fraction_in_source_order(noisy_dir, filtered):
  scores = _scores(filtered)
  kept = scores["kept"]
  assert kept.sum() == round(KEEP * len(kept))
  assert scores["score"][kept].min() >= scores["score"][~kept].max()
  source, copy = _split(noisy_dir, "train"), _split(filtered, "train")
  assert sorted(copy) == sorted(source)  # every feature, `corrupted` included
  for key, column in source.items():
    np.testing.assert_array_equal(copy[key], column[kept])
  summary = json.loads(open(os.path.join(filtered, data_filter.SUMMARY_FILE)).read())
  assert summary["num_pairs"] == len(kept) and summary["num_kept"] == kept.sum()
  assert summary["min_kept_score"] == pytest.approx(scores["score"][kept].min())


def test_other_splits_are_copied_unchanged(noisy_dir, filtered):
  source, copy = _split(noisy_dir, "test"), _split(filtered, "test")
  assert sorted(copy) == sorted(source)
  for key, column in source.items():
    np.testing.assert_array_equal(copy[key], column)


def test_a_config_trains_on_the_filtered_dataset_and_evaluates_zero_shot(
    filtered, tiny_overrides, tmp_path):
  workdir = tmp_path / "run"
  cli.main([
      "train", "--config", "configs/siglip_shapes.py", "--workdir",
      str(workdir), "--config.data.name=digits", f"--config.data.data_dir={filtered}"
  ] + [f"--config.{o}" for o in tiny_overrides] + ["--config.total_steps=2"])
  metrics = analysis.read_metrics(str(workdir))
  assert metrics["step"][-1] == 2 and np.isfinite(metrics["train/loss"][-1])
  assert 0 <= metrics["eval/zero_shot/digit"][-1] <= 1
  # The run read the kept pairs, not a fresh build of digits.
  run_data = analysis.run_summary(str(workdir))["config"].data
  kept = _scores(filtered)["kept"]
  assert data.split_reader(run_data, run_data.train_split).num_examples == kept.sum() < len(kept)


# The slow test trains the default SigLIP config this many steps on each dataset.
SLOW_STEPS = 350


def _train_shapes(workdir, data_dir) -> dict:
  """Trains configs/siglip_shapes.py SLOW_STEPS steps on the `shapes` in `data_dir`; returns
  the zero-shot accuracies at the end, {'shape': ..., 'colour': ..., 'held_out_pairs': ...}."""
  cli.main([
      "train", "--config", "configs/siglip_shapes.py", "--workdir", workdir,
      f"--config.data.data_dir={data_dir}", f"--config.total_steps={SLOW_STEPS}",
      f"--config.checkpoint_every={SLOW_STEPS}", f"--config.eval_every={SLOW_STEPS}",
      "--config.evals.linear_probe.train_examples=512", "--config.evals.knn.train_examples=512"
  ])
  metrics = analysis.latest_metrics(analysis.read_metrics(workdir))
  prefix = "eval/zero_shot/"
  return {
      name[len(prefix):]: value for name, (_, value) in metrics.items() if name.startswith(prefix)
  }


@pytest.mark.slow
def test_filtering_removes_corrupted_pairs_and_what_it_keeps_trains_a_better_model(
    shapes_data_dir, tmp_path):
  """40 % of shapes' training captions are swapped; a run trained on that noisy set scores its
  pairs, keeps half, and the same config trained on the kept half for the same steps
  classifies shapes zero-shot better."""
  noisy, filtered = str(tmp_path / "noisy"), str(tmp_path / "filtered")
  corrupted_captions.write_corrupted_copy("shapes", "train", 0.4, noisy, data_dir=shapes_data_dir)
  unfiltered_run = str(tmp_path / "unfiltered")
  unfiltered = _train_shapes(unfiltered_run, noisy)
  cli.main([
      "filter", "--run", unfiltered_run, "--dataset", "shapes", "--data-dir", noisy, "--split",
      "train", "--keep", "0.5", "--out", filtered
  ])
  corrupted, kept = _split(noisy, "train", "shapes")["corrupted"], _scores(filtered)["kept"]
  assert (corrupted & ~kept).sum() >= 0.9 * corrupted.sum()
  np.testing.assert_array_equal(_split(filtered, "train", "shapes")["corrupted"], corrupted[kept])
  trained_on_filtered = _train_shapes(str(tmp_path / "filtered_run"), filtered)
  assert trained_on_filtered["shape"] > unfiltered["shape"] + 0.05, (trained_on_filtered,
                                                                     unfiltered)
