"""What the loop does when a step's loss, gradients or parameters are not finite.

`config.on_nonfinite` chooses:
  'stop' (default): the run ends at the first such step with an error that
      names the step and its non-finite metrics. Nothing computed after the
      last checkpoint is saved or evaluated, so no checkpoint ever holds a
      diverged model and the good ones are never rotated out by bad ones.
  'skip': the step leaves parameters and optimizer state as they were (see
      `make_train_step(skip_nonfinite=True)`), `state.skipped_steps` counts
      it, and the loop warns.
"""
from collections.abc import Mapping, Sequence
import logging

import numpy as np

from jaxmm.errors import UserError

POLICIES = ("stop", "skip")

log = logging.getLogger("jaxmm")


class Diverged(UserError):
  """A step produced a non-finite loss, gradient or parameter under on_nonfinite='stop'."""


def _nonfinite_names(metrics: Mapping[str, np.ndarray]) -> str:
  bad = {k: float(v) for k, v in metrics.items() if k != "finite" and not np.isfinite(v)}
  return ", ".join(f"{k}={v}" for k, v in sorted(bad.items())) or "parameters"


def finite_steps(steps: Sequence[int], metrics: Sequence[Mapping[str, np.ndarray]], policy: str,
                 last_checkpoint: int | None) -> list[Mapping[str, np.ndarray]]:
  """The host metrics of `steps` whose update was finite (each has a bool 'finite').

  Under 'stop' the first non-finite step raises `Diverged`; under 'skip' it
  is logged and left out of what is returned.
  """
  kept = []
  for step, step_metrics in zip(steps, metrics):
    if step_metrics["finite"]:
      kept.append(step_metrics)
      continue
    names = _nonfinite_names(step_metrics)
    if policy == "stop":
      kept_note = ("no checkpoint was saved before it" if last_checkpoint is None else
                   f"checkpoint {last_checkpoint} is the newest and is kept")
      raise Diverged(f"training diverged at step {step}: non-finite {names}; stopped without "
                     f"saving or evaluating it ({kept_note}). Lower optim.lr or raise "
                     "optim.warmup_steps, or set --config.on_nonfinite=skip to leave such "
                     "updates out")
    log.warning("step %d: non-finite %s; update skipped (on_nonfinite='skip')", step, names)
  return kept
