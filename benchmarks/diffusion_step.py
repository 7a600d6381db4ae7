"""Examples/s of the EDM U-Net train step, jaxmm against diffusers (PyTorch), on a CPU or GPU.

The network is the U-Net of configs/edm_shapes.py (32×32×3 images folded
into 16×16×12 by 2×2 patches, channels 32, channel_mult (1, 2, 2), one
residual block per level, attention at 4×4 and in the middle, 4 heads,
conditioned on the shape and colour labels),
trained with EDM's preconditioning, noise distribution and loss weight
(Karras et al. 2022), classifier-free guidance's label dropout, gradient
clipping, AdamW and EDM2's power-function EMA, on one random batch (images
uniform in [-1, 1], random labels).

jaxmm's step is exactly the one `jaxmm train` runs: the config, then
`jaxmm.train.build_step` with `jaxmm.train.model_init.make_init_variables` and
`experiments.diffusion.make_loss_fn`, on a one-device mesh. The reference is
diffusers' UNet2DModel in the same layout with the same loss written in torch
(diffusers_reference.py says what differs), on `TORCH_THREADS` threads, in the
`--torch-modes` of TORCH_MODES: eager, the loss under `torch.compile`, and 'best' (also CUDA
graphs on a GPU and fused AdamW; `--channels` widens the network where a GPU idles).
Where JAX's default backend is a GPU, both sides run on that GPU (torch on
'cuda', its timings synchronised). Every side is
compiled and warmed up first; then the sides run in turn, `--rounds` times
`--steps` steps each, so that load from other processes hits all alike.
The table gives the median over rounds of the time per step, examples/s,
and jaxmm's speed over the faster torch mode (the ratio of the medians, and
in brackets the median of the per-round ratios).
Alternation does not make the ratio independent of load: torch's two
threads slow down far more than XLA's when other processes take a core
(each round prints the load average), so compare runs on a quiet machine.

fp32 runs everything in float32; bf16 runs jaxmm with model.dtype=bfloat16
(float32 parameters, bf16 operands of convolutions and dense layers) and
torch under torch.autocast to bfloat16. All sides share the
process and its malloc settings (jaxmm.host, as `jaxmm train` sets
them). GFLOP/s use the FLOPs that torch's FlopCounterMode counts for one
eager step (convolutions, matmuls, attention; forward and backward), the
same count for every side.

  .venv-peers/bin/python benchmarks/diffusion_step.py
  .venv-peers/bin/python benchmarks/diffusion_step.py --dtypes bf16 --rounds 2 --steps 1
  python benchmarks/diffusion_step.py --batch-size 256 --steps 20 --rounds 5   # on a GPU
"""
import argparse
import json
import os
import shlex
import statistics
import sys
import time

# On a GPU both frameworks share the device: JAX must not take 75 % of its memory at start.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from jaxmm import host  # pylint: disable=wrong-import-position

host.configure()  # as `jaxmm train` does; the malloc settings apply to both sides alike

import jax  # pylint: disable=wrong-import-position
import numpy as np

from jaxmm import config_loading
from jaxmm.experiments import diffusion
from jaxmm.train import model_init
import jaxmm_step
import machine
import step_throughput

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "edm_shapes.py")
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
TORCH_THREADS = 2
# The modes of diffusers_reference.make_train_step.
TORCH_MODES = ("eager", "compiled", "best")


def parse_args(argv=None, description: str = __doc__):
  """The command line shared with conv_floor.py: rounds, steps, warmup, batch size, dtypes and
  the JSON output."""
  parser = argparse.ArgumentParser(description=description.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
  parser.add_argument("--steps", type=int, default=2, help="timed steps per side per round")
  parser.add_argument("--warmup",
                      type=int,
                      default=1,
                      help="untimed steps per side before the rounds, after compilation")
  parser.add_argument("--batch-size",
                      type=int,
                      default=None,
                      help="global batch size (default: the config's)")
  parser.add_argument("--dtypes",
                      default="fp32,bf16",
                      help="comma-separated, from: " + ", ".join(DTYPES))
  parser.add_argument("--channels",
                      type=int,
                      default=None,
                      help="model.channels, the width of the first level (default: the config's)")
  parser.add_argument("--torch-modes",
                      default="eager,compiled",
                      help="comma-separated torch sides, from: " + ", ".join(TORCH_MODES))
  parser.add_argument("--json", metavar="FILE", help="also write the results to FILE, as JSON")
  args = parser.parse_args(argv)
  args.dtypes, args.torch_modes = args.dtypes.split(","), args.torch_modes.split(",")
  for flag, values, valid in (("--dtypes", args.dtypes, DTYPES),
                              ("--torch-modes", args.torch_modes, TORCH_MODES)):
    for value in values:
      if value not in valid:
        parser.error(f"{flag}: {value!r} is not one of {', '.join(valid)}")
  return args


def jaxmm_config(batch_size: int | None, dtype: str, channels: int | None = None):
  """configs/edm_shapes.py (U-Net) with the benchmark's batch, width and compute dtype, on one
  device, and AdamW (the config trains with Muon) to match torch's optimizer."""
  config = config_loading.load_config(CONFIG)
  overrides = [
      f"model.dtype={dtype}", "mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1", "optim.name=adamw"
  ]
  if batch_size is not None:
    overrides.append(f"batch_size={batch_size}")
  if channels is not None:
    overrides.append(f"model.channels={channels}")
  return config_loading.apply_overrides(config, overrides)


def random_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
  """'image' [B, S, S, 3] uniform in [-1, 1] and each label of data.label_keys, int32 [B]."""
  rng = np.random.default_rng(seed)
  b, size = config.batch_size, config.data.image_size
  batch = {"image": rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32)}
  for key, n in zip(config.data.label_keys, config.model.num_classes):
    batch[key] = rng.integers(0, n, b, dtype=np.int32)
  return batch


def diffusion_parts(model, config, mesh):
  """(init_variables, loss_fn) of the diffusion experiment."""
  del mesh
  return model_init.make_init_variables(model, config), diffusion.make_loss_fn(model, config)


class TorchSide:
  """diffusers' UNet2DModel with the EDM loss and AdamW, in one of TORCH_MODES."""

  def __init__(self, config, batch: dict[str, np.ndarray], mode: str):
    import torch  # pylint: disable=import-outside-toplevel
    import diffusers_reference as reference  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(config.seed)
    self.device = torch.device(torch_device())
    model = reference.make_model(config.model, config.data.image_size).to(self.device)
    self.num_params = sum(p.numel() for p in model.parameters())
    self.step = reference.make_train_step(model,
                                          config,
                                          bf16=config.model.dtype == "bfloat16",
                                          mode=mode)
    self.images, self.labels = (t.to(self.device)
                                for t in reference.to_torch_batch(batch, config.data.label_keys))

  def count_flops(self) -> int:
    """FLOPs of one (eager) step as torch's FlopCounterMode counts them; runs that step."""
    from torch.utils import flop_counter  # pylint: disable=import-outside-toplevel
    counter = flop_counter.FlopCounterMode(display=False)
    with counter:
      self.step(self.images, self.labels)
    return counter.get_total_flops()

  def run(self, steps: int) -> float:
    """Seconds for `steps` steps, waiting for the GPU's queue (if any) to drain."""
    import torch  # pylint: disable=import-outside-toplevel
    start = time.perf_counter()
    for _ in range(steps):
      self.step(self.images, self.labels)
    if self.device.type == "cuda":
      torch.cuda.synchronize(self.device)
    return time.perf_counter() - start


def torch_device() -> str:
  """'cuda' where JAX runs on a GPU (both sides then share it), else 'cpu'."""
  return "cuda" if jax.default_backend() == "gpu" else "cpu"


def benchmark(dtype: str, args) -> dict:
  """Median seconds per step of every side over alternating rounds, and the step's FLOPs."""
  config = jaxmm_config(args.batch_size, DTYPES[dtype], args.channels)
  batch = random_batch(config)
  sides, setup_s = {}, {}
  for name in ("jaxmm",) + tuple(f"torch {mode}" for mode in args.torch_modes):
    start = time.perf_counter()
    if name == "jaxmm":
      sides[name] = jaxmm_step.CompiledStep(config, batch, jax.devices()[:1], diffusion_parts)
    else:
      sides[name] = TorchSide(config, batch, mode=name.split()[1])
    sides[name].run(1)  # compiles (jaxmm, torch.compile)
    setup_s[name] = time.perf_counter() - start
    print(f"{dtype} {name}: built and compiled in {setup_s[name]:.1f} s", flush=True)
  counter = sides.get("torch eager") or TorchSide(config, batch, mode="eager")
  flops = counter.count_flops()
  for side in sides.values():
    side.run(args.warmup)
  times = step_throughput.alternate(sides, args.rounds, args.steps, dtype)
  median = {name: statistics.median(t) for name, t in times.items()}
  torch_best = min((f"torch {mode}" for mode in args.torch_modes), key=median.get)
  return {
      "dtype": dtype,
      "batch_size": config.batch_size,
      "flops": flops,
      "setup_s": setup_s,
      "times": times,
      "median": median,
      "torch_best": torch_best,
      "ratio": median[torch_best] / median["jaxmm"],
      # Rounds run back to back, so a round's sides saw about the same load from elsewhere.
      "paired_ratio": statistics.median(t / j for t, j in zip(times[torch_best], times["jaxmm"])),
      "params": {
          "jaxmm": sides["jaxmm"].num_params,
          "torch": counter.num_params
      },
  }


def print_table(results, args):
  print(f"\nmedians over {args.rounds} rounds of {args.steps} steps; min..max of the per-round "
        "means in brackets")
  header = (f"{'dtype':<6}{'side':<16}{'s/step':>9}{'(min..max)':>18}{'examples/s':>12}"
            f"{'GFLOP/s':>9}")
  print(header)
  print("-" * len(header))
  for r in results:
    for name, median in r["median"].items():
      t = r["times"][name]
      print(f"{r['dtype']:<6}{name:<16}{median:>9.3f}{f'({min(t):.3f}..{max(t):.3f})':>18}"
            f"{r['batch_size'] / median:>12.1f}{r['flops'] / median / 1e9:>9.1f}")
  print("\njaxmm examples/s over the faster torch mode: ratio of the medians [median of the "
        "per-round ratios]")
  for r in results:
    print(f"{r['dtype']}: {r['ratio']:.2f}x [{r['paired_ratio']:.2f}x] against "
          f"{r['torch_best']}")
  print()
  for r in results:
    setup = ", ".join(f"{name} {s:.0f} s" for name, s in r["setup_s"].items())
    params = ", ".join(f"{name} {n / 1e6:.3f} M" for name, n in r["params"].items())
    print(f"{r['dtype']}: batch {r['batch_size']}, {r['flops'] / 1e9:.1f} GFLOP/step "
          f"(FlopCounterMode); params {params}; build and compile: {setup}")


def main(argv=None):
  args = parse_args(argv)
  import diffusers  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  print("command:", shlex.join([os.path.relpath(sys.executable), *sys.argv]))
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({len(jax.devices())} device), "
        f"torch {torch.__version__} on {torch_device()} ({TORCH_THREADS} threads), "
        f"diffusers {diffusers.__version__}, "
        f"{os.cpu_count()} CPU cores; load average before: {step_throughput.load_average()}")
  print(f"CPU: {machine.describe()}", flush=True)
  results = [benchmark(dtype, args) for dtype in args.dtypes]
  print_table(results, args)
  print(f"load average after: {step_throughput.load_average()}")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
  main()
