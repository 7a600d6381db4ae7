"""Scalars to TensorBoard event files, `metrics.jsonl` and the console (process 0 only).

`workdir/metrics.jsonl` holds one JSON object per write, `{"step": S, "<prefix><name>": value,
...}`, appended across launches, so that runs can be read back without TensorBoard
(`jaxmm.analysis`, `jaxmm sweep --summarize`).

A `train/*` row averages the steps since the row before it, and its
`train/steps_averaged` says how many: `log_every`, except in the row written
when SIGTERM or Ctrl-C stops the run, in the first row after a resume (which
starts at the checkpoint's step), at the final step, and where non-finite
steps were left out (on_nonfinite='skip').
"""
from collections.abc import Mapping
import json
import os

import jax
import numpy as np
import tensorboardX
import tqdm

from jaxmm import storage
from jaxmm.runs.run_files import METRICS_FILE


def mean_metrics(history: list[Mapping[str, np.ndarray]]) -> dict[str, float]:
  """Averages per-step host metric dicts, leaving out the per-step 'finite' flag, and counts
  them as 'steps_averaged'."""
  names = [name for name in history[0] if name != "finite"]
  means = {name: float(np.mean([m[name] for m in history])) for name in names}
  return dict(means, steps_averaged=len(history))


def format_scalars(scalars: Mapping[str, float]) -> str:
  return ", ".join(f"{name}={value:.4g}" for name, value in sorted(scalars.items()))



class MetricWriter:
  """Writes scalars under `workdir` as TensorBoard events, JSON lines and console lines."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    self._events = tensorboardX.SummaryWriter(workdir) if self._active else None
    self._jsonl_path = os.path.join(workdir, METRICS_FILE)

  def write_scalars(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
    if not self._active or not scalars:
      return
    for name, value in scalars.items():
      self._events.add_scalar(prefix + name, value, step)
    self._events.flush()
    record = {"step": int(step), **{prefix + name: float(v) for name, v in scalars.items()}}
    storage.append_text(self._jsonl_path, json.dumps(record) + "\n")
    # tqdm.write keeps an open progress bar intact.
    tqdm.tqdm.write(f"[{step}] {prefix}{format_scalars(scalars)}")

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
