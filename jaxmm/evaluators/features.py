"""Embeddings of whole inputs and dataset splits, the same on every process.

Evaluators that read data through an encoder all do it one way. Every
process reads its rows of each global batch, the rows are assembled into
one global array split over the mesh's batch axes, encoded in one jitted
call, and the embeddings are gathered whole to every process
(`parallel.global_batch`, `parallel.to_host`). Every process then holds the
same arrays, so whatever is computed from them on the host (an accuracy, a
probe fitted by L-BFGS, a k-NN vote) comes out the same everywhere.
"""
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxmm import parallel

# (params, global batch array [b, ...], ...) -> embeddings [b, E] (or [b], a score per row)
Encoder = Callable[..., jax.Array]


def embed_inputs(encode: Encoder, params: Any, inputs: np.ndarray, batch_size: int,
                 mesh: jax.sharding.Mesh) -> np.ndarray:
  """encode over inputs [N, ...] that every process holds whole -> [N, E] on every process.

  Runs batches of `batch_size` (a multiple of the mesh's batch shards), the last
  one padded with copies of the first input, so `encode` compiles once.
  """
  pad = -len(inputs) % batch_size
  inputs = np.concatenate([inputs, np.repeat(inputs[:1], pad, axis=0)])
  chunks = []
  with jax.set_mesh(mesh):
    for start in range(0, len(inputs), batch_size):
      chunk = parallel.shard_whole_batch(inputs[start:start + batch_size], mesh)
      chunks.append(parallel.to_host(encode(params, chunk)))
  return np.concatenate(chunks)[:len(inputs) - pad]


def embed_batches(encode: Encoder,
                  params: Any,
                  batches: Iterable[dict],
                  mesh: jax.sharding.Mesh,
                  key: str | Sequence[str] = "image",
                  extra: Sequence[str] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Embeddings [N, ...] of batch[key] over host-local batches, and the batches' labels.

  `batches` are the process's rows of each global batch with a bool 'mask'
  (False on padding rows), as `data.eval_batches` makes them. `key` may name
  several batch keys: `encode(params, batch[k1], batch[k2], ...)` then sees
  them all (a pair's score from its image and caption). Returns, on every
  process, the embeddings of the N real rows in global batch order and
  their columns [N, ...]: every one-dimensional column but 'mask' (the labels)
  and those named in `extra` (e.g. 'tokens', even when it is `key`); other
  inputs are not gathered.
  """
  keys = (key,) if isinstance(key, str) else tuple(key)
  embeddings, columns = [], []
  with jax.set_mesh(mesh):
    for batch in batches:
      wanted = {k: v for k, v in batch.items() if k in keys or k in extra or np.ndim(v) == 1}
      wanted = parallel.global_batch(wanted, mesh)
      inputs = [wanted[k] if k in extra else wanted.pop(k) for k in keys]
      embeddings.append(parallel.to_host(encode(params, *inputs)))
      columns.append(parallel.to_host(wanted))
  real = np.concatenate([c.pop("mask") for c in columns]).astype(bool)
  columns = {k: np.concatenate([c[k] for c in columns])[real] for k in columns[0]}
  return np.concatenate(embeddings)[real], columns


class SplitEmbeddings:
  """Embeddings of dataset splits under one step's parameters, each computed once.

  Several evaluators called for the same step share them (the train loop
  evaluates one state per step): a k-NN and a linear probe read the training
  split's image embeddings once between them. A call for a new step forgets
  the previous step's.
  """

  def __init__(self, encoders: Mapping[str, tuple[str, Encoder]],
               batches: Callable[[str, int], Iterable[dict]], mesh: jax.sharding.Mesh):
    """
    Args:
      encoders: name -> (the batch key it reads, its encoder), e.g.
        {'image': ('image', encode_image), 'text': ('tokens', encode_text)};
        jitted here.
      batches: (split, global batch size) -> a fresh pass of host-local batches
        with 'mask', e.g. `data.eval_batches` for the process.
      mesh: where the encoders run.
    """
    self._encoders = {name: (key, jax.jit(encode)) for name, (key, encode) in encoders.items()}
    self._batches, self._mesh = batches, mesh
    self._step, self._cache = None, {}

  def __call__(self,
               params: Any,
               step: int,
               split: str,
               batch_size: int,
               encoder: str = "image",
               extra: Sequence[str] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`embed_batches` of `split` by encoder `encoder` with the params of step `step`."""
    if step != self._step:
      self._step, self._cache = step, {}
    cache_key = (split, batch_size, encoder, tuple(extra))
    if cache_key not in self._cache:
      key, encode = self._encoders[encoder]
      self._cache[cache_key] = embed_batches(encode, params, self._batches(split, batch_size),
                                             self._mesh, key, extra)
    return self._cache[cache_key]
