"""Flax Linen models, built from `config.model` by name."""
from typing import Any, Mapping

import flax.linen as nn

from jaxmm.models.flops import model_flops_per_example
from jaxmm.models.two_tower import TwoTower

MODELS = {
    "two_tower": TwoTower,
}


def _plain(value):
  """ConfigDict / FrozenDict / dict -> nested plain dict; anything else unchanged."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  return value


def get_model(config_model: Mapping[str, Any]) -> nn.Module:
  """Builds `config.model`: its `name` picks the module, the other keys are its arguments."""
  kwargs = _plain(config_model)
  name = kwargs.pop("name")
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
  return MODELS[name](**kwargs)


__all__ = ["MODELS", "get_model", "model_flops_per_example", "TwoTower"]
