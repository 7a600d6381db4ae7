"""The train step: pure, built from a loss function, compiled once with shardings."""
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import optax

from jaxmm import host_memory
from jaxmm import parallel
from jaxmm.train.state import TrainState

# loss_fn(params, batch, rng) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[[Any, dict[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    seed: int):
  """train_step(state, batch) -> (state, metrics): one optimizer update.

  The step's RNG is fold_in(key(seed), step), so a resumed run draws the same
  numbers without saving any RNG state.
  """

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics,
                   loss=loss,
                   grad_norm=optax.tree.norm(grads),
                   learning_rate=schedule(state.step))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def compile_train_step(train_step,
                       mesh: jax.sharding.Mesh,
                       shardings: TrainState,
                       rules=parallel.DEFAULT_RULES):
  """jit with the state's shardings in and out, the batch split over (data, fsdp).

  The state is donated: its buffers are reused for the new state. On the CPU
  the batch is waited for first (`host_memory.wait_for_inputs`). The mesh and
  the logical-axis rules are in scope while the step traces, so the models'
  activation constraints resolve against them.
  """
  jitted = jax.jit(train_step,
                   in_shardings=(shardings, parallel.batch_sharding(mesh)),
                   out_shardings=(shardings, parallel.replicated(mesh)),
                   donate_argnums=0)

  def step(state, batch):
    batch = host_memory.wait_for_inputs(batch)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(state, batch)

  return step
