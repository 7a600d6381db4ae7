"""The caption-corrupted copy of a dataset that data filtering is tested on."""
import numpy as np
import pytest

from jaxmm import data
from jaxmm.data import corrupted_captions
from jaxmm.errors import UserError

# 40 captions, each written twice, so that a donor with the same caption exists.
CAPTIONS = np.array([f"caption {i % 20}" for i in range(40)], dtype=object)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_corrupt_replaces_exactly_the_marked_captions_by_other_ones(fraction):
  replaced, corrupted = corrupted_captions.corrupt(CAPTIONS, fraction, seed=3)
  assert corrupted.dtype == bool and corrupted.sum() == round(fraction * len(CAPTIONS))
  np.testing.assert_array_equal(replaced != CAPTIONS, corrupted)
  assert set(replaced[corrupted]) <= set(CAPTIONS)


def test_corrupt_is_a_function_of_the_seed():
  first, marked = corrupted_captions.corrupt(CAPTIONS, 0.5, seed=0)
  again, marked_again = corrupted_captions.corrupt(CAPTIONS, 0.5, seed=0)
  other, marked_other = corrupted_captions.corrupt(CAPTIONS, 0.5, seed=1)
  np.testing.assert_array_equal(first, again)
  np.testing.assert_array_equal(marked, marked_again)
  assert not np.array_equal(marked, marked_other)


def test_corrupt_refuses_what_cannot_be_done():
  with pytest.raises(UserError, match=r"fraction=1.5 must lie in \[0, 1\]"):
    corrupted_captions.corrupt(CAPTIONS, 1.5, seed=0)
  with pytest.raises(UserError, match="every caption is the same"):
    corrupted_captions.corrupt(np.array(["a", "a"], dtype=object), 0.5, seed=0)


def _split(data_dir, split):
  """Every record of digits' `split` in `data_dir`, read by the input pipeline's reader."""
  reader = data.split_reader({"name": "digits", "data_dir": data_dir, "cache": True}, split)
  return reader.read(np.arange(reader.num_examples))


def test_corrupted_copy_differs_from_its_source_exactly_where_marked(digits_data_dir, tmp_path):
  source_dir, copy_dir = digits_data_dir, str(tmp_path / "noisy")
  corrupted_captions.write_corrupted_copy("digits",
                                          "train",
                                          0.3,
                                          copy_dir,
                                          seed=5,
                                          data_dir=source_dir)
  source, copy = _split(source_dir, "train"), _split(copy_dir, "train")
  marked = copy["corrupted"]
  assert marked.sum() == round(0.3 * len(marked))
  np.testing.assert_array_equal(copy["caption"] != source["caption"], marked)
  for key in ("image", "label", "index"):
    np.testing.assert_array_equal(copy[key], source[key])
  # The other split is copied as it was, with nothing marked.
  source, copy = _split(source_dir, "test"), _split(copy_dir, "test")
  assert not copy.pop("corrupted").any()
  assert sorted(copy) == sorted(source)
  for key, column in source.items():
    np.testing.assert_array_equal(copy[key], column)
