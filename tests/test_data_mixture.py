"""Weighted mixtures of sources (data.mixture): shares, each source's own stream, hosts, resume,
per-source counts and mistakes."""
import json
import math

import ml_collections
import numpy as np
import pytest

from jaxmm import data
from jaxmm import errors
from jaxmm.data import pipeline
from jaxmm.data import source_mixture


def _config(data_dir, mixture, **overrides):
  config = dict(name="shapes", data_dir=data_dir, train_split="train", eval_split="test",
                image_size=32, max_len=48, tokenizer="bytes", augment=True, mixture=mixture)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def _two_sources(data_dir, **overrides):
  """'big': shapes train; 'small': the first 40 test examples, a quarter of the stream."""
  return _config(data_dir, {"big": {"weight": 3.0, "data": {}},
                            "small": {"weight": 1.0, "data": {"train_split": "test[:40]"}}},
                 **overrides)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("weights", [(0.3, 0.7), (0.45, 0.45, 0.1), (5.0, 1.0, 1.0, 2.0, 0.5)])
def test_shares_stay_within_the_bound(weights):
  n = 20_000
  source, inner = source_mixture.assign(np.arange(n), list(weights))
  shares = np.array(weights) / sum(weights)
  # Each of the ceil(log2 K) levels of the split rounds a count to the nearest integer: off by
  # at most 1/2 each, and a level's error passes down scaled by a share <= 1.
  bound = math.ceil(math.log2(len(weights))) / 2
  seen = np.cumsum(source[:, None] == np.arange(len(weights)), axis=0)  # [N, K]: n_k(N)
  expected = np.arange(1, n + 1)[:, None] * shares[None, :]
  assert np.abs(seen - expected).max() <= bound + 1e-9  # n·share is exact to ~1e-12 here
  batch = 64  # every global batch: B·w_k ± twice the bound
  per_batch = np.diff(np.concatenate([np.zeros((1, len(weights))), seen[batch - 1::batch]]),
                      axis=0)
  assert np.abs(per_batch - batch * shares).max() <= 2 * bound + 1e-9
  # Each source's stream is read in order, position by position.
  for k in range(len(weights)):
    np.testing.assert_array_equal(inner[source == k], np.arange(np.sum(source == k)))


def test_each_source_reads_its_own_stream_and_epochs(shapes_data_dir):
  config = _two_sources(shapes_data_dir, augment=False)
  batches = _take(data.train_iterator(config, global_batch_size=40, seed=7), 8)
  tokens = np.concatenate([b["tokens"] for b in batches])
  source = np.concatenate([b["source"] for b in batches])
  assert np.bincount(source).tolist() == [240, 80]  # 320 positions at 3 : 1
  # The small source's own stream, as the pipeline makes it for that config alone.
  small = pipeline.train_iterator(_config(shapes_data_dir, None, augment=False,
                                          train_split="test[:40]"),
                                  global_batch_size=40,
                                  seed=source_mixture.source_seed(7, "small"))
  own = np.concatenate([b["tokens"] for b in _take(small, 2)])
  np.testing.assert_array_equal(tokens[source == 1], own)
  # 80 examples of a 40-example split: two epochs of its own, each every example once.
  test = data.data_source("shapes", "test[:40]", data_dir=shapes_data_dir)
  captions = sorted(test[i]["caption"] for i in range(40))
  for epoch in range(2):
    rows = tokens[source == 1][40 * epoch:40 * (epoch + 1)]
    decoded = sorted(data.get_tokenizer("bytes").decode(row).encode() for row in rows)
    assert decoded == captions


def test_two_copies_of_a_dataset_are_read_in_different_orders(shapes_data_dir):
  copy = {"weight": 1.0, "data": {"train_split": "test[:40]"}}
  config = _config(shapes_data_dir, {"a": copy, "b": copy}, augment=False)
  batch = next(data.train_iterator(config, global_batch_size=80, seed=0))
  a, b = (batch["tokens"][batch["source"] == k] for k in (0, 1))
  assert sorted(map(bytes, a)) == sorted(map(bytes, b))  # one epoch of the same 40 examples each
  assert np.mean(np.all(a == b, axis=1)) < 0.2  # by chance 1/40 of the rows would agree


def test_two_hosts_see_the_global_batches_of_one(shapes_data_dir):
  config = _two_sources(shapes_data_dir)
  whole = _take(data.train_iterator(config, global_batch_size=16, seed=1), 3)
  hosts = [_take(data.train_iterator(config, global_batch_size=16, seed=1, process_index=p,
                                     process_count=2), 3) for p in range(2)]
  for step in range(3):
    for key in whole[step]:
      np.testing.assert_array_equal(
          np.concatenate([hosts[0][step][key], hosts[1][step][key]]), whole[step][key])


def test_resume_from_state_and_counts_per_source(shapes_data_dir):
  config = _two_sources(shapes_data_dir)
  original = data.train_iterator(config, global_batch_size=8, seed=5)
  _take(original, 4)
  # Hand count: of positions 0..31 the big source (share 3/4) gets L(32) = floor(24.5) = 24.
  assert original.metrics() == {"mixture/big": 24, "mixture/small": 8}
  state = json.loads(json.dumps(original.get_state()))
  expected = _take(original, 2)
  # Positions 32..47: L(48) - L(32) = floor(36.5) - 24 = 12 of them.
  assert original.metrics() == {"mixture/big": 12, "mixture/small": 4}
  resumed = data.train_iterator(config, global_batch_size=8, seed=5)
  resumed.set_state(state)
  for got, want in zip(_take(resumed, 2), expected):
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("mixture, overrides, expected", [
    ({"a": {"weight": 0.0, "data": {}}}, {},
     "data.mixture.a.weight=0.0 must be a number > 0"),
    ({"a": {"weight": -1.0, "data": {}}}, {}, "data.mixture.a.weight=-1.0 must be"),
    ({"a": {"weight": 1.0, "data": {"data_dri": "x"}}}, {},
     "data.mixture.a.data.data_dri is not a data config key; did you mean 'data_dir'?"),
    ({"a": {"weight": 1.0, "wieght": 2.0}}, {}, "data.mixture.a.wieght is not a mixture entry"),
    ({"a": {"weight": 1.0, "data": {}}, "b": {"weight": 1.0, "data": {"image_size": 16}}}, {},
     "data.mixture sources disagree on what a batch holds: 'image' is float32 [b, 32, 32, 3] "
     "from 'a' but float32 [b, 16, 16, 3] from 'b'"),
    ({"a": {"weight": 1.0, "data": {"text_key": "label"}}}, {},
     "data.mixture.a.data: data.text_key='label' is not a feature of 'shapes'"),
])
def test_mistakes_name_the_key(shapes_data_dir, mixture, overrides, expected):
  with pytest.raises(errors.UserError, match="^" + expected.replace("[", r"\[").replace(
      "?", r"\?")):
    data.train_iterator(_config(shapes_data_dir, mixture, **overrides), global_batch_size=8,
                        seed=0)
