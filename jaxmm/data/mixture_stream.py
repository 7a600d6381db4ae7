"""Exact samples of a Gaussian mixture as a training stream, for the 2-D diffusion toy.

Batch `step` of host p is drawn from a generator seeded by (seed, step, p),
so the stream is a pure function of the step and resumes exactly from its
position {'next_index': step}, like the TFDS pipeline. Batches are
{'x': float32 [b, D]}, b = the global batch size // process count.
"""
import numpy as np


class MixtureStream:
  """Infinite iterator of host-local batches of a mixture (weights [K], means [K, D],
  covariances [K, D, D], e.g. `jaxmm.diffusion.mixture_2d()`), with get/set_state."""

  def __init__(self, mixture, *, global_batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    self._weights = np.asarray(mixture.weights, np.float64)
    self._means = np.asarray(mixture.means, np.float64)
    self._chol = np.linalg.cholesky(np.asarray(mixture.covariances, np.float64))
    self._local = global_batch_size // process_count
    self._seed, self._process = seed, process_index
    self._step = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    rng = np.random.default_rng([self._seed, self._step, self._process])
    self._step += 1
    k = rng.choice(len(self._weights), self._local, p=self._weights)
    z = rng.standard_normal((self._local, self._means.shape[1]))
    x = self._means[k] + np.einsum("nij,nj->ni", self._chol[k], z)
    return {"x": x.astype(np.float32)}

  def get_state(self) -> dict:
    return {"next_index": self._step}

  def set_state(self, state: dict) -> None:
    self._step = int(state["next_index"])
