"""Seconds per train step of CatLIP against SigLIP on the same image tower, side by side.

configs/catlip_shapes.py and configs/siglip_shapes.py (variant `--variant`,
default small) differ only in what follows the image tower: CatLIP's linear
layer of label logits and binary cross-entropy, SigLIP's text tower and
sigmoid loss over the batch's B² pairs. Both compiled steps
(`jaxmm_step.CompiledStep`, the step `jaxmm train` runs) take one synthetic
batch; after a warmup they run alternately, `--rounds` times `--steps` steps
each, so that load from other processes hits both alike. Prints the CPU, the
load average, the medians over rounds and the median of the per-round ratios.

  .venv/bin/python benchmarks/catlip_step.py
  .venv/bin/python benchmarks/catlip_step.py --rounds 3 --steps 5
"""
import argparse
import os
import statistics

from jaxmm import host

host.configure()  # as `jaxmm train` does

import numpy as np  # pylint: disable=wrong-import-position

from jaxmm import config_loading  # pylint: disable=wrong-import-position
from jaxmm.experiments import catlip  # pylint: disable=wrong-import-position
from jaxmm.train import model_init  # pylint: disable=wrong-import-position
import jaxmm_step  # pylint: disable=wrong-import-position
import machine  # pylint: disable=wrong-import-position

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
# The vocabulary size of catlip_shapes on the shapes dataset (its caption_vocabulary.json).
NUM_LABELS = 22


def catlip_parts(model, config, mesh):
  """(init_variables, loss_fn) of the catlip experiment."""
  del mesh  # the step's jit reduces the batch
  return model_init.make_init_variables(model, config), catlip.make_loss_fn(model)


def catlip_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
  """Images [B, S, S, 3] uniform in [-1, 1] and multi-hot labels [B, V], each label on with
  probability 1/4 (a shapes caption names 4 to 6 of its 22 words)."""
  rng = np.random.default_rng(seed)
  size, batch = config.data.image_size, config.batch_size
  return {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
          "caption_labels": (rng.random((batch, NUM_LABELS)) < 0.25).astype(np.float32)}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="small", help="the configs' ARG (default small)")
  parser.add_argument("--rounds", type=int, default=5, help="alternations (default 5)")
  parser.add_argument("--steps", type=int, default=10, help="steps per round (default 10)")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  load = lambda name: config_loading.load_config(
      os.path.join(CONFIGS, f"{name}_shapes.py:{args.variant}"))
  siglip_config, catlip_config = load("siglip"), load("catlip")
  catlip_config.model.num_labels = NUM_LABELS
  steps = {
      "siglip": jaxmm_step.CompiledStep(siglip_config, jaxmm_step.synthetic_batch(siglip_config)),
      "catlip": jaxmm_step.CompiledStep(catlip_config, catlip_batch(catlip_config),
                                        parts=catlip_parts),
  }
  for step in steps.values():
    step.run(2)  # compile and warm up
  times = {name: [] for name in steps}
  for _ in range(args.rounds):
    for name, step in steps.items():
      times[name].append(step.run(args.steps) / args.steps)
  with open("/proc/loadavg") as f:
    loadavg = " ".join(f.read().split()[:3])
  print(f"{machine.describe()}; {os.cpu_count()} cores; load average {loadavg}")
  print(f"variant {args.variant}, batch {siglip_config.batch_size}; medians over "
        f"{args.rounds} rounds of {args.steps} steps")
  for name, step in steps.items():
    print(f"{name:<7} {statistics.median(times[name]):.4f} s/step "
          f"({min(times[name]):.4f}..{max(times[name]):.4f}), {step.num_params:,} parameters")
  ratio = statistics.median(s / c for s, c in zip(times["siglip"], times["catlip"]))
  print(f"siglip / catlip: {ratio:.2f}x (median of the per-round ratios)")


if __name__ == "__main__":
  main()
