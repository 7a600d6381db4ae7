"""The train step: pure, built from a loss function, compiled once with shardings."""
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxmm import parallel
from jaxmm.host import memory as host_memory
from jaxmm.train import ema as ema_lib
from jaxmm.train.state import TrainState

# loss_fn(params, model_state, batch, rng) -> (scalar loss, dict of scalar metrics, model_state)
LossFn = Callable[[Any, dict[str, Any], dict[str, jax.Array], jax.Array],
                  tuple[jax.Array, dict[str, jax.Array], dict[str, Any]]]


def make_train_step(loss_fn: LossFn,
                    tx: optax.GradientTransformation,
                    schedule: optax.Schedule,
                    seed: int,
                    ema_config: ml_collections.ConfigDict,
                    skip_nonfinite: bool = False):
  """train_step(state, batch) -> (state, metrics): one optimizer update.

  The step's RNG is fold_in(key(seed), step), so a resumed run draws the same
  numbers without saving any RNG state. The loss function returns the new
  `model_state` (e.g. BatchNorm statistics) beside its metrics, and the EMA
  averages follow the updated parameters (`jaxmm.train.ema`). Metrics hold the
  loss, the loss function's own metrics, `grad_norm`, `param_norm` (of the
  updated params), `learning_rate`, and `finite` (bool: loss, gradient and new
  parameters are all finite). With `skip_nonfinite`, a non-finite update is
  left out: parameters, optimizer state, model state and averages keep their
  values; only `step` and `skipped_steps` advance.
  """

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def objective(params):
      loss, metrics, model_state = loss_fn(params, state.model_state, batch, rng)
      return loss, (metrics, model_state)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(objective,
                                                               has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    new = TrainState(step=state.step + 1,
                     params=params,
                     opt_state=opt_state,
                     model_state=model_state,
                     ema=ema_lib.update(state.ema, params, state.step, ema_config),
                     skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
    if skip_nonfinite:
      keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
      new = new.replace(params=keep(new.params, state.params),
                        opt_state=keep(new.opt_state, state.opt_state),
                        model_state=keep(new.model_state, state.model_state),
                        ema=keep(new.ema, state.ema))
    metrics = dict(metrics,
                   loss=loss,
                   grad_norm=grad_norm,
                   param_norm=param_norm,
                   learning_rate=schedule(state.step),
                   finite=finite)
    return new, metrics

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

  The returned step(state, batch) also has `step.lower(state, batch)`, which
  lowers the same computation for ShapeDtypeStruct arguments without running
  it (`jaxmm.train.memory` compiles that to read XLA's memory analysis).
  """
  jitted = jax.jit(train_step,
                   in_shardings=(shardings, parallel.batch_sharding(mesh)),
                   out_shardings=(shardings, parallel.replicated(mesh)),
                   donate_argnums=0)

  def in_scope(call):
    def scoped(state, batch):
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return call(state, batch)

    return scoped

  run = in_scope(jitted)

  def step(state, batch):
    return run(state, host_memory.wait_for_inputs(batch))

  step.lower = in_scope(jitted.lower)
  return step
