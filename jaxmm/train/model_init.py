"""A model's variables from a run's config: `model.init` on zeros shaped like one example.

The inputs depend on the kind of model (`config.model.name`, a name in
`jaxmm.models.MODELS`) and on the shapes the config's data gives an example
(`jaxmm.data.example_shape`, data.max_len). The experiments initialise their
train state with `make_init_variables`, and `jaxmm.analysis` rebuilds a run's
state shardings with it, without importing the experiment that trained it.
"""
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxmm import data
from jaxmm import errors


def _examples(config: ml_collections.ConfigDict) -> jax.Array:
  """float32 [1, ...] of one example: an image [1, S, S, 3], or a point [1, 2] of the toy."""
  return jnp.zeros((1,) + data.example_shape(config.data), jnp.float32)


def _two_tower_inputs(config: ml_collections.ConfigDict) -> tuple:
  """Images [1, S, S, 3] and tokens int32 [1, L] of data.max_len."""
  return _examples(config), jnp.zeros((1, config.data.max_len), jnp.int32)


def _denoiser_inputs(config: ml_collections.ConfigDict) -> tuple:
  """x [1, ...], c_noise [1] and labels int32 [1, K] (None for an unconditional model), or a
  caption's tokens int32 [1, L] of data.max_len for a text-conditioned one (model.text)."""
  num_classes = config.model.num_classes
  labels = jnp.zeros((1, len(num_classes)), jnp.int32) if num_classes else None
  if config.model.get("text") is not None:
    labels = jnp.zeros((1, config.data.max_len), jnp.int32)
  return _examples(config), jnp.zeros((1,), jnp.float32), labels


# model.name -> config -> the positional inputs of that model's `init` after the rng.
EXAMPLE_INPUTS = {
    "two_tower": _two_tower_inputs,
    "resnet": lambda config: (_examples(config),),
    "catlip": lambda config: (_examples(config),),
    "captioner": _two_tower_inputs,
    "unet": _denoiser_inputs,
    "dit": _denoiser_inputs,
    "mlp_denoiser": _denoiser_inputs,
}


def make_init_variables(model: nn.Module,
                        config: ml_collections.ConfigDict) -> Callable[[jax.Array], Any]:
  """rng -> the variables of `model` (built from config.model), with logical axis names:
  {'params'} and any mutable collection such as {'batch_stats'}."""
  name = errors.one_of("model.name", config.model.name, EXAMPLE_INPUTS)
  inputs = EXAMPLE_INPUTS[name](config)
  return lambda rng: model.init(rng, *inputs)
