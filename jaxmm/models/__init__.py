"""Flax Linen models, built from `config.model` by name."""
from typing import Any, Mapping

import flax.linen as nn
import jax

from jaxmm import errors
from jaxmm.models.captioner import Captioner
from jaxmm.models.catlip import CatLIP
from jaxmm.models.dit import DiT
from jaxmm.models.flops import model_flops_per_example
from jaxmm.models.mlp_denoiser import MLPDenoiser
from jaxmm.models.resnet import ResNet
from jaxmm.models.transformer import ATTENTION
from jaxmm.models.two_tower import TwoTower
from jaxmm.models.unet import UNet

MODELS = {
    "two_tower": TwoTower,
    "unet": UNet,
    "dit": DiT,
    "mlp_denoiser": MLPDenoiser,
    "resnet": ResNet,
    "catlip": CatLIP,
    "captioner": Captioner,
}


def _plain(value):
  """ConfigDict / FrozenDict / dict -> nested plain dict; anything else unchanged."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  return value


# Compute dtypes a model's `dtype` may name.
DTYPES = ("float32", "bfloat16", "float16")
# Integer model keys that may be 0; every other integer (a width, depth, count, size) must be >= 1.
_MAY_BE_ZERO = ("pad_id", "unimodal_depth")


def _check_integers(kwargs: Mapping[str, Any], prefix: str) -> None:
  for key, value in kwargs.items():
    if isinstance(value, Mapping):
      _check_integers(value, f"{prefix}{key}.")
    elif isinstance(value, int) and not isinstance(value, bool) and key not in _MAY_BE_ZERO:
      errors.integer_at_least(prefix + key, value, 1)


def _check_attention(attention: str, dtype: str) -> None:
  errors.one_of("model.attention", attention, ATTENTION)
  if attention == "cudnn":
    if jax.default_backend() != "gpu":
      raise errors.UserError(f"model.attention 'cudnn' needs an NVIDIA GPU, but this run's "
                             f"devices are {jax.default_backend()}; set model.attention=xla")
    if dtype not in ("bfloat16", "float16"):
      raise errors.UserError(f"model.attention 'cudnn' needs model.dtype bfloat16 or float16, "
                             f"not {dtype}")


def get_model(config_model: Mapping[str, Any]) -> nn.Module:
  """Builds `config.model`: its `name` picks the module, the other keys are its arguments.

  Fails with a `UserError` naming the key for an unknown name, dtype or attention, or an
  integer (a width, depth, count or size) below 1.
  """
  kwargs = _plain(config_model)
  name = errors.one_of("model.name", kwargs.pop("name"), MODELS)
  for key in ("dtype", "activation_dtype"):
    if key in kwargs:
      errors.one_of(f"model.{key}", kwargs[key], DTYPES)
  if "attention" in kwargs:
    _check_attention(kwargs["attention"], kwargs.get("dtype", "float32"))
  _check_integers(kwargs, "model.")
  return MODELS[name](**kwargs)


__all__ = [
    "MODELS", "get_model", "model_flops_per_example", "TwoTower", "UNet", "DiT", "MLPDenoiser",
    "ResNet", "CatLIP", "Captioner"
]
