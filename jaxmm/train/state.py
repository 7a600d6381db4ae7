"""The train state, one pytree, and its placement on the mesh.

An experiment describes its model by `init_variables(rng) -> {'params': ...,
<collection>: ...}` (a flax `init`): 'params' are trained, every other
collection (BatchNorm's 'batch_stats', ...) is the state's `model_state`,
which the loss function may update. `ema` holds the averages that
`config.ema` asks for (`jaxmm.train.ema`).
"""
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxmm import parallel
from jaxmm.train import ema as ema_lib

# rng -> {'params': ..., other collections}, leaves with logical axis names.
InitVariables = Callable[[jax.Array], dict[str, Any]]


@flax.struct.dataclass
class TrainState:
  """Everything a train step changes. The step's RNG is derived as fold_in(seed, step)."""
  step: jax.Array  # int32 []
  params: Any
  opt_state: Any
  model_state: dict[str, Any]  # non-trained collections, e.g. {'batch_stats': ...}; {} if none
  ema: dict[str, Any]  # EMA name -> a params-shaped average; {} if none
  skipped_steps: jax.Array  # int32 []: updates left out as non-finite (config.on_nonfinite='skip')


def first_state(params: Any, model_state: dict[str, Any], tx: optax.GradientTransformation,
                ema_config: ml_collections.ConfigDict) -> TrainState:
  """The state at step 0 of `params`: the optimizer's first state and the averages start from
  them (`jaxmm.weights` writes imported parameters as a run with it)."""
  return TrainState(step=jnp.zeros([], jnp.int32),
                    params=params,
                    opt_state=tx.init(params),
                    model_state=model_state,
                    ema=ema_lib.init(params, ema_config),
                    skipped_steps=jnp.zeros([], jnp.int32))


def _boxed_state(init_variables: InitVariables, tx: optax.GradientTransformation,
                 ema_config: ml_collections.ConfigDict, rng: jax.Array) -> TrainState:
  # The optimizer and the averages are initialised from the still-boxed
  # parameters, so that they inherit the parameters' logical axis names.
  variables = dict(init_variables(rng))
  params = variables.pop("params")
  return first_state(params, variables, tx, ema_config)


def state_shardings(init_variables: InitVariables,
                    tx: optax.GradientTransformation,
                    ema_config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh,
                    rules=parallel.DEFAULT_RULES) -> TrainState:
  """NamedShardings of the train state, from the logical names `init_variables` puts on leaves."""
  abstract = jax.eval_shape(lambda rng: _boxed_state(init_variables, tx, ema_config, rng),
                            jax.random.key(0))
  return parallel.shardings_of(abstract, mesh, rules)


def abstract_state(init_variables: InitVariables, tx: optax.GradientTransformation,
                   ema_config: ml_collections.ConfigDict, shardings: TrainState) -> TrainState:
  """ShapeDtypeStructs of the state, carrying `shardings` (a restore target)."""
  abstract = jax.eval_shape(lambda rng: nn.unbox(_boxed_state(init_variables, tx, ema_config, rng)),
                            jax.random.key(0))
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                      shardings)


def init_state(init_variables: InitVariables, tx: optax.GradientTransformation,
               ema_config: ml_collections.ConfigDict, shardings: TrainState,
               rng: jax.Array) -> TrainState:
  """A fresh state, created directly in its shards (no host holds the whole model)."""
  create = jax.jit(lambda r: nn.unbox(_boxed_state(init_variables, tx, ema_config, r)),
                   out_shardings=shardings)
  return create(rng)
