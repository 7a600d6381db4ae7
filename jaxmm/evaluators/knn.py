"""k-nearest-neighbour classification of frozen features by cosine similarity.

A query takes the labels of the k training features most similar to it
(cosine similarity) and votes:

- 'majority': each neighbour counts once;
- 'similarity': a neighbour of similarity s counts exp(s / temperature), the
  weighting of Wu et al. (2018, eq. 7) that DINO's k-NN evaluation uses
  (Caron et al. 2021; temperature 0.07).

The class with the most votes wins; a tie goes to the lowest class index.
The neighbours are found once (`neighbours`) and can then vote on several
labels of the same examples (`vote`).
"""
import numpy as np

VOTES = ("majority", "similarity")
_CHUNK = 1024  # queries at a time: a [chunk, N] block of similarities instead of [Q, N]


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  x = x.astype(np.result_type(x.dtype, np.float32))
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def neighbours(train_features: np.ndarray, query_features: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
  """The k train_features [N, D] most similar to each query [Q, D]: indices and similarities [Q, k].

  Features need not be unit-norm: they are normalised here. Computes in
  float32, or float64 for float64 inputs. The k neighbours come in no
  particular order.
  """
  if not 1 <= k <= len(train_features):
    raise ValueError(f"k={k} must be in [1, {len(train_features)}] (the training features)")
  train, queries = _unit(train_features), _unit(query_features)
  indices = np.empty((len(queries), k), np.int64)
  similarities = np.empty((len(queries), k), train.dtype)
  for start in range(0, len(queries), _CHUNK):
    similarity = queries[start:start + _CHUNK] @ train.T
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    indices[start:start + _CHUNK] = nearest
    similarities[start:start + _CHUNK] = np.take_along_axis(similarity, nearest, axis=1)
  return indices, similarities


def vote(neighbour_labels: np.ndarray,
         similarities: np.ndarray,
         num_classes: int,
         method: str = "majority",
         temperature: float = 0.07) -> np.ndarray:
  """int [Q]: the class voted by each query's neighbours, labels and similarities [Q, k]."""
  if method not in VOTES:
    raise ValueError(f"vote={method!r}; choose from {VOTES}")
  if method == "majority":
    weights = np.ones(similarities.shape)
  else:
    weights = np.exp(similarities / temperature)
  votes = np.zeros((len(neighbour_labels), num_classes))
  np.add.at(votes, (np.arange(len(neighbour_labels))[:, None], neighbour_labels), weights)
  return np.argmax(votes, axis=1)


def predict(train_features: np.ndarray,
            train_labels: np.ndarray,
            query_features: np.ndarray,
            *,
            k: int,
            num_classes: int,
            method: str = "majority",
            temperature: float = 0.07) -> np.ndarray:
  """int [Q]: the class of each query [Q, D] voted by its k nearest train_features [N, D],
  whose int train_labels [N] lie in [0, num_classes)."""
  indices, similarities = neighbours(train_features, query_features, k)
  return vote(np.asarray(train_labels)[indices], similarities, num_classes, method, temperature)
