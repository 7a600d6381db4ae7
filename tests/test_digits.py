"""The bundled `digits` dataset: scikit-learn's handwritten digits as a TFDS builder."""
import json
import os
import pathlib

import numpy as np
import pytest
from sklearn import datasets
import tensorflow_datasets as tfds

from jaxmm import data
from jaxmm import evaluators
from jaxmm.commands import cli
from jaxmm.data import digits
from jaxmm.data import pipeline
from jaxmm.data.digits import digits_dataset_builder

from conftest import TINY_OVERRIDES

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def records(digits_data_dir):
  return {
      split: pipeline._stack(source.__getitems__(range(len(source))))
      for split in ("train", "test")
      for source in [data.data_source("digits", split, data_dir=digits_data_dir)]
  }


@pytest.fixture(scope="module")
def sklearn_digits():
  return datasets.load_digits()


def test_split_sizes_are_a_fifth_of_each_digit_in_test(records, sklearn_digits):
  per_digit = np.bincount(sklearn_digits.target)
  assert len(records["test"]["label"]) == sum(n // 5 for n in per_digit) == 355
  assert len(records["train"]["label"]) == 1797 - 355
  np.testing.assert_array_equal(np.bincount(records["test"]["label"]), per_digit // 5)
  np.testing.assert_array_equal(np.bincount(records["train"]["label"]), per_digit - per_digit // 5)


def test_splits_are_disjoint_and_cover_load_digits(records, sklearn_digits):
  train, test = records["train"]["index"], records["test"]["index"]
  assert not set(train.tolist()) & set(test.tolist())
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
  for split in records:  # each record is the load_digits example it names
    np.testing.assert_array_equal(records[split]["label"],
                                  sklearn_digits.target[records[split]["index"]])


def test_split_is_deterministic_and_matches_the_build(records, sklearn_digits):
  first = digits_dataset_builder.split_indices(sklearn_digits.target)
  second = digits_dataset_builder.split_indices(sklearn_digits.target.copy())
  for split in ("train", "test"):
    np.testing.assert_array_equal(first[split], second[split])
    np.testing.assert_array_equal(first[split], records[split]["index"])


def test_images_are_load_digits_scaled_and_repeated_4x4(records, sklearn_digits):
  for split in records:
    levels = sklearn_digits.images[records[split]["index"]]
    # Independently of the builder: 0..16 -> 0..255, each pixel a 4x4 block, three equal channels.
    grey = np.rint(levels / 16 * 255)
    expected = np.stack([np.kron(image, np.ones((4, 4))) for image in grey])
    image = records[split]["image"]
    assert image.shape == (len(levels), 32, 32, 3) and image.dtype == np.uint8
    for channel in range(3):
      np.testing.assert_array_equal(image[..., channel], expected)


def test_captions_name_the_digit(records):
  for split in records:
    for caption, label, index in zip(records[split]["caption"], records[split]["label"],
                                     records[split]["index"]):
      caption = caption.decode()
      assert caption == digits.caption(int(label), int(index))
      assert [n for n in NAMES if n in caption.replace(",", "").split(" ")] == [NAMES[label]]
  captions = {c.decode() for c in records["test"]["caption"]}
  assert "a photo of the digit seven" in captions
  assert len(captions) == 10 * len(digits.CAPTION_TEMPLATES)  # every phrasing of every digit


def test_tfds_finds_the_prepared_dataset_by_name(digits_data_dir):
  builder = tfds.builder("digits", data_dir=digits_data_dir)
  assert isinstance(builder, digits_dataset_builder.Builder) and builder.is_prepared()
  assert builder.info.features["label"].names == list(NAMES)
  assert data.class_labels({"name": "digits", "data_dir": digits_data_dir}) == {"label": 10}


def test_zero_shot_prompts_are_every_phrasing_of_each_digit():
  (task,) = evaluators.zero_shot_tasks("digits")
  assert task.name == "digit" and task.ensemble == "mean"
  assert len(task.class_prompts) == 10
  for label, prompts in enumerate(task.class_prompts):
    assert len(set(prompts)) == len(digits.CAPTION_TEMPLATES)
    assert all(NAMES[label] in prompt for prompt in prompts)
  np.testing.assert_array_equal(task.labels({"label": np.array([3, 7])}), [3, 7])


@pytest.mark.slow
def test_siglip_config_trains_two_steps_on_digits(digits_data_dir, tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  workdir = tmp_path / "run"
  overrides = [o for o in TINY_OVERRIDES if not o.startswith("total_steps")] + [
      "data.name=digits", f"data.data_dir={digits_data_dir}", "data.max_len=40",
      "total_steps=2", "checkpoint_every=2", "eval_every=2", "log_every=1"
  ]
  cli.main(["train", "--config", "configs/siglip_shapes.py", "--workdir",
            str(workdir)] + [f"--config.{o}" for o in overrides])
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert len(losses) == 2 and np.all(np.isfinite(losses))
  with open(workdir / "zero_shot.json") as f:
    assert 0.0 <= json.load(f)["2"]["zero_shot/digit"] <= 1.0
  assert os.path.isdir(workdir / "checkpoints" / "2")
