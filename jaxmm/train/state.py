"""The train state, one pytree, and its placement on the mesh."""
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxmm import parallel


@flax.struct.dataclass
class TrainState:
  """Everything a train step changes. The step's RNG is derived as fold_in(seed, step)."""
  step: jax.Array  # int32 []
  params: Any
  opt_state: Any


def _boxed_state(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
                 rng: jax.Array) -> TrainState:
  # The optimizer is initialised on the still-boxed parameters so that its
  # moments inherit the parameters' logical axis names.
  params = init_params(rng)
  return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params))


def state_shardings(init_params: Callable[[jax.Array], Any],
                    tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh,
                    rules=parallel.DEFAULT_RULES) -> TrainState:
  """NamedShardings of the train state, from the logical names `init_params` puts on parameters."""
  abstract = jax.eval_shape(lambda rng: _boxed_state(init_params, tx, rng), jax.random.key(0))
  return parallel.shardings_of(abstract, mesh, rules)


def abstract_state(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
                   shardings: TrainState) -> TrainState:
  """ShapeDtypeStructs of the state, carrying `shardings` (a restore target)."""
  abstract = jax.eval_shape(lambda rng: nn.unbox(_boxed_state(init_params, tx, rng)),
                            jax.random.key(0))
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                      shardings)


def init_state(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation,
               shardings: TrainState, rng: jax.Array) -> TrainState:
  """A fresh state, created directly in its shards (no host holds the whole model)."""
  create = jax.jit(lambda r: nn.unbox(_boxed_state(init_params, tx, r)), out_shardings=shardings)
  return create(rng)
