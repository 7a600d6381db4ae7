"""k-NN classification against a brute-force float64 vote over sorted neighbours."""
import math

import numpy as np
import pytest

from jaxmm.evaluators import knn


def _reference(train, labels, queries, k, num_classes, method, temperature):
  """Sorts all training points by float64 cosine similarity and counts the first k's votes."""
  predicted = []
  for query in np.float64(queries):
    similarity = [
        float(np.dot(query, x) / (np.linalg.norm(query) * np.linalg.norm(x)))
        for x in np.float64(train)
    ]
    nearest = sorted(range(len(train)), key=lambda j: -similarity[j])[:k]
    votes = [0.0] * num_classes
    for j in nearest:
      votes[labels[j]] += 1.0 if method == "majority" else math.exp(similarity[j] / temperature)
    predicted.append(max(range(num_classes), key=lambda c: (votes[c], -c)))  # ties: lowest class
  return np.array(predicted)


@pytest.fixture
def points():
  """Four overlapping clusters: unnormalised features, so normalisation matters."""
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(4, 6))
  labels = rng.integers(4, size=80)
  train = centres[labels] + 0.9 * rng.normal(size=(80, 6))
  train *= rng.uniform(0.5, 3.0, size=(80, 1))
  query_labels = rng.integers(4, size=40)
  queries = centres[query_labels] + 0.9 * rng.normal(size=(40, 6))
  return np.float32(train), labels, np.float32(queries), query_labels


@pytest.mark.parametrize("method", knn.VOTES)
@pytest.mark.parametrize("k", [1, 4, 15, 80])
def test_predictions_match_brute_force(points, method, k):
  train, labels, queries, _ = points
  got = knn.predict(train, labels, queries, k=k, num_classes=4, method=method, temperature=0.1)
  np.testing.assert_array_equal(got, _reference(train, labels, queries, k, 4, method, 0.1))


def test_neighbours_vote_better_than_chance(points):
  train, labels, queries, query_labels = points
  accuracy = np.mean(knn.predict(train, labels, queries, k=5, num_classes=4) == query_labels)
  assert accuracy > 0.5  # chance is 1/4


def test_chunks_give_the_same_neighbours(points, monkeypatch):
  train, _, queries, _ = points
  whole = knn.neighbours(train, queries, 6)
  monkeypatch.setattr(knn, "_CHUNK", 7)
  for a, b in zip(knn.neighbours(train, queries, 6), whole):
    np.testing.assert_array_equal(a, b)


def test_bad_k_and_vote_are_errors(points):
  train, labels, queries, _ = points
  with pytest.raises(ValueError, match=r"k=81 must be in \[1, 80\]"):
    knn.neighbours(train, queries, 81)
  with pytest.raises(ValueError, match="vote='mean'"):
    knn.predict(train, labels, queries, k=3, num_classes=4, method="mean")
