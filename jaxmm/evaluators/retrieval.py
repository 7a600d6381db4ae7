"""Image↔text retrieval: recall@k over the pairs of an eval split.

Each image is paired with its caption. Querying with image i ranks every
caption by cosine similarity (image→text); querying with caption i ranks
every image (text→image). Recall@k is the fraction of queries with a correct
item among the k best ranked.

Captions repeat in small datasets (`shapes` writes 1,296 different captions
for its 2,000 test images, `digits` 40 for 355), so pairs are grouped by
caption, word for word (`caption_groups`), and an item is correct when it
is in the query's group. An image is matched against each different caption
once (the gallery of image→text holds one embedding per group, not every
copy of it); a caption is matched against every image, and any image of its
group answers it. With captions that are all different both are the usual
diagonal. Ties count against the query: a wrong item that scores as high as
the best correct one ranks before it, so a model whose embeddings are all
equal gets recall near 0, not 1.
"""
from collections.abc import Sequence

import numpy as np

_CHUNK = 1024  # queries scored at a time: a [chunk, N] block instead of [N, N]


def caption_groups(tokens: np.ndarray) -> np.ndarray:
  """int [N]: the same id for rows of tokens [N, L] that are equal (the same caption)."""
  _, groups = np.unique(np.asarray(tokens), axis=0, return_inverse=True)
  return groups.reshape(-1)


def ranks(queries: np.ndarray, gallery: np.ndarray, query_groups: np.ndarray,
          gallery_groups: np.ndarray) -> np.ndarray:
  """int [Q]: for each query, how many wrong gallery items score ≥ its best correct one.

  queries [Q, E] and gallery [G, E] are unit-norm embeddings; gallery item j
  is correct for query i when gallery_groups[j] == query_groups[i], and every
  query must have a correct item. Rank 0 means a correct item comes first.
  """
  queries, gallery = np.asarray(queries), np.asarray(gallery)
  query_groups, gallery_groups = np.asarray(query_groups), np.asarray(gallery_groups)
  out = np.empty(len(queries), np.int64)
  for start in range(0, len(queries), _CHUNK):
    scores = queries[start:start + _CHUNK] @ gallery.T
    correct = query_groups[start:start + _CHUNK, None] == gallery_groups[None, :]
    if not correct.any(axis=1).all():
      raise ValueError("a query has no correct item in the gallery")
    best = np.where(correct, scores, -np.inf).max(axis=1, keepdims=True)
    out[start:start + _CHUNK] = np.sum(~correct & (scores >= best), axis=1)
  return out


def recall_at_k(image_embeddings: np.ndarray, text_embeddings: np.ndarray, groups: np.ndarray,
                ks: Sequence[int]) -> dict[str, float]:
  """Recall@k of both directions for N (image [N, E], caption [N, E]) pairs in caption `groups` [N].

  Embeddings are unit-norm. Returns 'image_to_text/recall@k' and
  'text_to_image/recall@k' for each k of `ks` (module docstring).
  """
  groups = np.asarray(groups)
  _, first = np.unique(groups, return_index=True)  # one caption of each group
  rank = {
      "image_to_text": ranks(image_embeddings, np.asarray(text_embeddings)[first], groups,
                             groups[first]),
      "text_to_image": ranks(text_embeddings, image_embeddings, groups, groups),
  }
  return {
      f"{direction}/recall@{k}": float(np.mean(rank[direction] < k))
      for direction in rank
      for k in ks
  }
