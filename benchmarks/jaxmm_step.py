"""jaxmm's compiled train step on one synthetic batch, for the benchmarks to time.

The step is the one `jaxmm.train.run` trains with (`jaxmm.train.build_step`:
optimizer, sharded state, the experiment's loss, jit with shardings and
donation) on a freshly initialised state; only the input pipeline is
replaced by one fixed batch, so a timing measures the step alone.
"""
import time

import jax
import numpy as np

from jaxmm import models
from jaxmm import parallel
from jaxmm import train
from jaxmm.experiments import image_text
from jaxmm.train import model_init


def synthetic_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
  """Images [B, S, S, 3] uniform in [-1, 1]; tokens [B, L] in [1, vocab) with 0-padding
  after 8..L tokens (S = data.image_size, L = data.max_len, B = batch_size)."""
  rng = np.random.default_rng(seed)
  size, length, batch = config.data.image_size, config.data.max_len, config.batch_size
  tokens = rng.integers(1, config.model.text.vocab_size, (batch, length), dtype=np.int32)
  tokens[np.arange(length)[None, :] >= rng.integers(8, length + 1, (batch, 1))] = 0
  return {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32), "tokens": tokens}


def step_flops(config) -> int:
  """Model FLOPs of one train step: 3x the forward matmuls (jaxmm.models.flops) plus the
  [B, B] logits of the loss."""
  per_example = models.model_flops_per_example(config.model,
                                               image_size=config.data.image_size,
                                               train=True)
  logits = 2 * config.batch_size * config.model.embed_dim
  return 3 * config.batch_size * (per_example + logits)


def image_text_parts(model, config, mesh):
  """(init_variables, loss_fn) of the image_text experiment."""
  return (model_init.make_init_variables(model, config),
          image_text.make_loss_fn(model, config.loss, mesh))


class CompiledStep:
  """The train step of `config` on a mesh over `devices` (default: all).

  `parts(model, config, mesh) -> (init_variables, loss_fn)` names the
  experiment (default: image_text).
  """

  def __init__(self, config, batch: dict[str, np.ndarray], devices=None, parts=image_text_parts):
    mesh = parallel.make_mesh(config.mesh, devices)
    parallel.check_batch_size(config.batch_size, mesh)
    model = models.get_model(config.model)
    init_variables, loss_fn = parts(model, config, mesh)
    tx, shardings, self.step = train.build_step(config, mesh, init_variables, loss_fn)
    self.state = train.init_state(init_variables, tx, config.ema, shardings,
                                  train.init_rng(config.seed))
    self.batch = parallel.global_batch(batch, mesh)
    self.num_params = sum(x.size for x in jax.tree.leaves(self.state.params))

  def run(self, steps: int) -> float:
    """Seconds for `steps` steps, waiting for the last one to finish."""
    start = time.perf_counter()
    for _ in range(steps):
      self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - start
