"""Optimizer and learning-rate schedule from `config.optim`.

Keys: `name` ('adamw', 'sgd' or 'muon'), `lr` (the peak learning rate),
`warmup_steps`, `schedule` ('cosine', 'linear' or 'constant'), `grad_clip_norm`
(None or 0: no clipping), for AdamW `b1`, `b2`, `eps` and `weight_decay`, for SGD
`momentum`, for Muon all of these (`jaxmm.train.muon`: Nesterov `momentum` on the
weight matrices, Adam on the rest), and optionally `partition`, per-parameter
rules (`jaxmm.train.partition`).
A bad value raises `UserError` naming its key and the valid range.
"""
from typing import Any

import jax
import ml_collections
import optax

from jaxmm.errors import non_negative
from jaxmm.errors import one_of
from jaxmm.errors import positive
from jaxmm.errors import UserError
from jaxmm.train import muon
from jaxmm.train import partition

OPTIMIZERS = ("adamw", "sgd", "muon")
SCHEDULES = ("cosine", "linear", "constant")


def _is_number(value: Any) -> bool:
  """Whether `value` is an int or float (not a bool, which Python counts as an int)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _in_unit_interval(key: str, value: Any) -> Any:
  """`value` if it is a number in [0, 1) (a decay rate), else an error."""
  if not (_is_number(value) and 0 <= value < 1):
    raise UserError(f"{key}={value!r} must lie in [0, 1)")
  return value


def _check_schedule_config(optim_config: ml_collections.ConfigDict, total_steps: int) -> None:
  """Raises `UserError` for a bad `lr`, `warmup_steps` or `schedule`."""
  positive("total_steps", total_steps)
  positive("optim.lr", optim_config.lr)
  warmup = optim_config.warmup_steps
  if not (_is_number(warmup) and 0 <= warmup < total_steps and warmup == int(warmup)):
    raise UserError(f"optim.warmup_steps={warmup!r} must lie in [0, total_steps={total_steps}): "
                    "an integer >= 0 and smaller than total_steps")
  one_of("optim.schedule", optim_config.schedule, SCHEDULES)


def check_optim_config(optim_config: ml_collections.ConfigDict, total_steps: int) -> None:
  """Raises `UserError` naming the key of a bad value in `optim_config`.

  Checks every key that `make_optimizer` reads for the optimizer `name`, so a
  caller can fail before anything is built.
  """
  _check_schedule_config(optim_config, total_steps)
  clip = optim_config.grad_clip_norm
  if clip is not None and not (_is_number(clip) and clip >= 0):
    raise UserError(f"optim.grad_clip_norm={clip!r} must be a number >= 0 (0 or None: no clipping)")
  name = one_of("optim.name", optim_config.name, OPTIMIZERS)
  if name in ("adamw", "muon"):
    _in_unit_interval("optim.b1", optim_config.b1)
    _in_unit_interval("optim.b2", optim_config.b2)
    non_negative("optim.eps", optim_config.eps)
    non_negative("optim.weight_decay", optim_config.weight_decay)
  if name in ("sgd", "muon"):
    _in_unit_interval("optim.momentum", optim_config.momentum)
  partition.check_rules(optim_config.get("partition", ()))


def make_schedule(optim_config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps`, then `schedule` down to the end."""
  _check_schedule_config(optim_config, total_steps)
  warmup = int(optim_config.warmup_steps)
  decay_steps = total_steps - warmup
  lr = optim_config.lr
  decays = {
      "cosine": lambda: optax.cosine_decay_schedule(lr, decay_steps),
      "linear": lambda: optax.linear_schedule(lr, 0.0, decay_steps),
      "constant": lambda: optax.constant_schedule(lr),
  }
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), decays[optim_config.schedule]()],
      boundaries=[warmup])


def _decay_mask(params):
  """Weight decay applies to matrices only: not to biases, norms or the loss's scalars."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim_config: ml_collections.ConfigDict,
                   total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation named by `optim_config.name`, and its schedule.

  Gradients are first clipped to global norm `grad_clip_norm` unless it is None or 0.
  `partition` rules (`jaxmm.train.partition`) freeze parameters, scale their learning
  rate or turn off their weight decay.
  """
  check_optim_config(optim_config, total_steps)
  schedule = make_schedule(optim_config, total_steps)

  def make_tx(lr_multiplier: float, weight_decay: bool) -> optax.GradientTransformation:
    lr = schedule if lr_multiplier == 1 else lambda step: lr_multiplier * schedule(step)
    if optim_config.name == "muon":
      return muon.muon(lr,
                       momentum=optim_config.momentum,
                       b1=optim_config.b1,
                       b2=optim_config.b2,
                       eps=optim_config.eps,
                       weight_decay=optim_config.weight_decay if weight_decay else 0.0)
    if optim_config.name == "adamw":
      return optax.adamw(lr,
                         b1=optim_config.b1,
                         b2=optim_config.b2,
                         eps=optim_config.eps,
                         weight_decay=optim_config.weight_decay if weight_decay else 0.0,
                         mask=_decay_mask)
    return optax.sgd(lr, momentum=optim_config.momentum)

  rules = optim_config.get("partition", ())
  tx = partition.partitioned(rules, make_tx) if rules else make_tx(1.0, True)
  if optim_config.grad_clip_norm:
    clip = optax.clip_by_global_norm(optim_config.grad_clip_norm)
    if rules:
      # Frozen gradients are zeroed first, so that they do not shrink the others' clipping.
      clip = optax.chain(optax.masked(optax.set_to_zero(), partition.frozen_mask(rules)), clip)
    tx = optax.chain(clip, tx)
  return tx, schedule
