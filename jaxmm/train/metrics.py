"""Scalars to TensorBoard event files and the console (process 0 only)."""
from collections.abc import Mapping

import jax
import numpy as np
import tensorboardX
import tqdm


def mean_metrics(history: list[Mapping[str, np.ndarray]]) -> dict[str, float]:
  """Averages per-step host metric dicts, leaving out the per-step 'finite' flag."""
  names = [name for name in history[0] if name != "finite"]
  return {name: float(np.mean([m[name] for m in history])) for name in names}


def format_scalars(scalars: Mapping[str, float]) -> str:
  return ", ".join(f"{name}={value:.4g}" for name, value in sorted(scalars.items()))


class MetricWriter:
  """Writes scalars under `workdir` as TensorBoard events and as console lines."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    self._events = tensorboardX.SummaryWriter(workdir) if self._active else None

  def write_scalars(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
    if not self._active or not scalars:
      return
    for name, value in scalars.items():
      self._events.add_scalar(prefix + name, value, step)
    self._events.flush()
    # tqdm.write keeps an open progress bar intact.
    tqdm.tqdm.write(f"[{step}] {prefix}{format_scalars(scalars)}")

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
