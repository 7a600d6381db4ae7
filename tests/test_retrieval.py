"""Recall@k against a brute-force float64 ranking of every query."""
import numpy as np
import pytest

from jaxmm.evaluators import retrieval


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference_recall(queries, gallery, query_groups, gallery_groups, k):
  """Sorts each query's gallery by float64 score, a wrong item before a correct one on a tie."""
  queries, gallery = np.float64(queries), np.float64(gallery)
  hits = 0
  for query, group in zip(queries, query_groups):
    scores = [float(np.dot(query, item)) for item in gallery]
    order = sorted(range(len(gallery)), key=lambda j: (-scores[j], gallery_groups[j] == group))
    hits += any(gallery_groups[j] == group for j in order[:k])
  return hits / len(queries)


def _pairs(rng, n=60, groups=20, dim=8, noise=0.8):
  """n (image, caption) pairs over `groups` captions; images are noisy copies of their caption."""
  caption_of = rng.integers(groups, size=n)
  caption_embeddings = _unit(rng.normal(size=(groups, dim)))
  texts = caption_embeddings[caption_of]
  images = _unit(texts + noise * rng.normal(size=(n, dim)))
  tokens = np.stack([np.full(4, g, np.int32) for g in caption_of])
  return np.float32(images), np.float32(texts), tokens


def test_recall_matches_brute_force_in_both_directions():
  images, texts, tokens = _pairs(np.random.default_rng(0))
  groups = retrieval.caption_groups(tokens)
  ks = (1, 5, 10)
  results = retrieval.recall_at_k(images, texts, groups, ks)
  _, first = np.unique(groups, return_index=True)
  for k in ks:
    assert results[f"image_to_text/recall@{k}"] == _reference_recall(
        images, texts[first], groups, groups[first], k)
    assert results[f"text_to_image/recall@{k}"] == _reference_recall(texts, images, groups, groups,
                                                                     k)
  values = [results[f"image_to_text/recall@{k}"] for k in ks]
  assert 0 < values[0] < values[1] < values[2] < 1  # neither trivial nor perfect


def test_unique_captions_are_the_diagonal():
  rng = np.random.default_rng(1)
  texts = _unit(rng.normal(size=(30, 6)))
  images = _unit(texts + 0.7 * rng.normal(size=(30, 6)))
  results = retrieval.recall_at_k(images, texts, np.arange(30), (1, 3))
  scores = images @ texts.T
  rank = (scores > np.diag(scores)[:, None]).sum(1)  # wrong captions above the true one
  assert results["image_to_text/recall@1"] == np.mean(rank < 1)
  assert results["image_to_text/recall@3"] == np.mean(rank < 3)


def test_ties_count_against_the_query():
  equal = np.ones((5, 3), np.float32) / np.sqrt(3)
  results = retrieval.recall_at_k(equal, equal, np.arange(5), (1, 4, 5))
  # Every item scores the same: all 4 wrong ones rank first, the correct one fifth.
  assert results["image_to_text/recall@4"] == results["text_to_image/recall@4"] == 0.0
  assert results["image_to_text/recall@5"] == results["text_to_image/recall@5"] == 1.0


def test_chunks_give_the_same_ranks(monkeypatch):
  images, texts, tokens = _pairs(np.random.default_rng(2), n=50)
  groups = retrieval.caption_groups(tokens)
  whole = retrieval.ranks(texts, images, groups, groups)
  monkeypatch.setattr(retrieval, "_CHUNK", 7)
  np.testing.assert_array_equal(retrieval.ranks(texts, images, groups, groups), whole)


def test_caption_groups_follow_equal_token_rows():
  tokens = np.array([[1, 2], [3, 4], [1, 2], [1, 3]])
  groups = retrieval.caption_groups(tokens)
  assert groups[0] == groups[2] and len({groups[0], groups[1], groups[3]}) == 3


def test_a_query_without_a_correct_item_is_an_error():
  x = np.eye(3)
  with pytest.raises(ValueError, match="no correct item"):
    retrieval.ranks(x, x, np.array([0, 1, 2]), np.array([0, 1, 1]))
