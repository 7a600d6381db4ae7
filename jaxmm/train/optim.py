"""Optimizer and learning-rate schedule from `config.optim`."""
import jax
import ml_collections
import optax


def make_schedule(optim_config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps`, then `schedule` down to the end."""
  warmup = int(optim_config.warmup_steps)
  if not 0 <= warmup < total_steps:
    raise ValueError(f"optim.warmup_steps={warmup} must lie in [0, total_steps={total_steps})")
  decay_steps = total_steps - warmup
  lr = optim_config.lr
  decays = {
      "cosine": lambda: optax.cosine_decay_schedule(lr, decay_steps),
      "linear": lambda: optax.linear_schedule(lr, 0.0, decay_steps),
      "constant": lambda: optax.constant_schedule(lr),
  }
  if optim_config.schedule not in decays:
    raise ValueError(f"optim.schedule={optim_config.schedule!r}; choose one of {sorted(decays)}")
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), decays[optim_config.schedule]()],
      boundaries=[warmup])


def _decay_mask(params):
  """Weight decay applies to matrices only: not to biases, norms or the loss's scalars."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim_config: ml_collections.ConfigDict,
                   total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation named by `optim_config.name`, and its schedule."""
  schedule = make_schedule(optim_config, total_steps)
  if optim_config.name == "adamw":
    tx = optax.adamw(schedule,
                     b1=optim_config.b1,
                     b2=optim_config.b2,
                     eps=optim_config.eps,
                     weight_decay=optim_config.weight_decay,
                     mask=_decay_mask)
  elif optim_config.name == "sgd":
    tx = optax.sgd(schedule, momentum=optim_config.get("momentum", 0.9))
  else:
    raise ValueError(f"optim.name={optim_config.name!r}; choose 'adamw' or 'sgd'")
  if optim_config.get("grad_clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), tx)
  return tx, schedule
