"""Exact samples of a Gaussian mixture as a training stream, for the 2-D diffusion toy.

Global batch `step` is drawn from a generator seeded by (seed, step), and
host p keeps its rows [p·b, (p+1)·b). So the stream is a pure function of the
step, the same global batches whatever the number of processes (a run may
resume on another count), and resumes exactly from its position
{'next_index': step}, like the TFDS pipeline. Batches are {'x': float32 [b, D]},
b = the global batch size // process count.
"""
import numpy as np

# The data.name of this stream of `jaxmm.diffusion.mixture_2d()`: no dataset files.
MIXTURE_2D = "mixture_2d"


class MixtureStream:
  """Infinite iterator of host-local batches of a mixture (weights [K], means [K, D],
  covariances [K, D, D], e.g. `jaxmm.diffusion.mixture_2d()`), with get/set_state."""

  def __init__(self, mixture, *, global_batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    self._weights = np.asarray(mixture.weights, np.float64)
    self._means = np.asarray(mixture.means, np.float64)
    self._chol = np.linalg.cholesky(np.asarray(mixture.covariances, np.float64))
    self._global = global_batch_size
    self._rows = slice(process_index * (global_batch_size // process_count),
                       (process_index + 1) * (global_batch_size // process_count))
    self._seed = seed
    self._step = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    rng = np.random.default_rng([self._seed, self._step])
    self._step += 1
    k = rng.choice(len(self._weights), self._global, p=self._weights)[self._rows]
    z = rng.standard_normal((self._global, self._means.shape[1]))[self._rows]
    x = self._means[k] + np.einsum("nij,nj->ni", self._chol[k], z)
    return {"x": x.astype(np.float32)}

  def get_state(self) -> dict:
    return {"next_index": self._step}

  def set_state(self, state: dict) -> None:
    self._step = int(state["next_index"])
