"""Examples/s of one SigLIP train step, jaxmm against open_clip (PyTorch), on the CPU or a GPU.

The same small two-tower (ViT 4x192 with 8x8 patches on 64x64 images; text
transformer 4x192 over 32 byte tokens; 192-d joint embedding) takes full train
steps (forward, backward, gradient clipping, AdamW) on one synthetic batch.
jaxmm's step is the framework's own: the config from configs/siglip_shapes.py
with overrides, jaxmm.train's optimizer, state and compiled step, on a one-CPU
mesh. The reference is open_clip's CLIP with SigLipLoss and torch.optim.AdamW
(see open_clip_reference.py for what differs). After warmup the two sides run
alternately, `--rounds` times `--steps` steps each, so that load from other
processes hits both alike; the table gives medians over rounds of the time
per step, examples/s, achieved GFLOP/s and the ratio jaxmm/torch.

fp32 runs everything in float32; bf16 runs jaxmm with model.dtype=bfloat16
(float32 parameters) and torch under torch.autocast('cpu', torch.bfloat16).
Both sides share the process and its malloc settings (jaxmm.host, as
`jaxmm train` sets them); JAXMM_KEEP_FREED_MEMORY=0 runs both with glibc's
defaults. A 2048x2048 matmul timed first gives the CPU's practical matmul
rate, against which both steps' GFLOP/s are also printed.

  .venv-peers/bin/python benchmarks/step_throughput.py
  .venv-peers/bin/python benchmarks/step_throughput.py --dtype bf16 --rounds 3 --steps 3
  .venv/bin/python benchmarks/step_throughput.py --skip-torch   # jaxmm only

On a GPU (`--device cuda`, JAX on the same GPU) open_clip runs as its own
training script does at best: the model and the loss under torch.compile,
fused AdamW, bf16 autocast, attention through scaled_dot_product_attention;
`--model base` times ViT-B/16 (configs/siglip_shapes.py:base, no remat,
cuDNN attention in jaxmm):

  python benchmarks/step_throughput.py --device cuda --model base --dtype bf16 --batch 256
"""
import argparse
import json
import os
import shlex
import statistics
import sys
import time

# With --device cuda both frameworks share the GPU: JAX must not take 75 % of its memory at start.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from jaxmm import host  # pylint: disable=wrong-import-position

host.configure()  # as `jaxmm train` does; the malloc settings apply to both sides alike

import jax  # pylint: disable=wrong-import-position
import numpy as np

from jaxmm import config_loading
import jaxmm_step
import machine

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs",
                      "siglip_shapes.py")

# The benchmark model, in jaxmm's config terms; open_clip_reference builds the same shapes.
SHAPES = dict(
    image_size=64,
    max_len=32,
    embed_dim=192,
    image=dict(patch_size=8, width=192, depth=4, num_heads=3, mlp_dim=768),
    text=dict(vocab_size=256, width=192, depth=4, num_heads=3, mlp_dim=768),
)
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
TORCH_THREADS = 2


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5, help="alternating timed rounds")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
  parser.add_argument("--warmup",
                      type=int,
                      default=2,
                      help="untimed steps per side before the rounds (after compilation)")
  parser.add_argument("--batch", type=int, default=64, help="global batch size B")
  parser.add_argument("--dtype", choices=("fp32", "bf16", "both"), default="both")
  parser.add_argument("--skip-torch",
                      action="store_true",
                      help="time jaxmm only (no torch/open_clip needed)")
  parser.add_argument("--device",
                      choices=("cpu", "cuda"),
                      default="cpu",
                      help="cuda: both sides on the GPU, open_clip as its training script runs "
                      "at best (torch.compile of model and loss, fused AdamW, bf16 autocast)")
  parser.add_argument("--model",
                      choices=("small", "base"),
                      default="small",
                      help="small: the two-tower of SHAPES; base: configs/siglip_shapes.py:base "
                      "(ViT-B/16 at 224x224, B text tower)")
  parser.add_argument("--json", metavar="FILE", help="also write the results to FILE, as JSON")
  return parser.parse_args(argv)


def jaxmm_config(batch_size: int, dtype: str, model: str = "small"):
  """configs/siglip_shapes.py with the benchmark's shapes (`model`: SHAPES, or the `base`
  variant's ViT-B/16 without remat, with cuDNN attention on a GPU), batch and compute dtype,
  on one device."""
  overrides = [f"batch_size={batch_size}", f"model.dtype={dtype}"]
  if model == "small":
    image, text = SHAPES["image"], SHAPES["text"]
    overrides += [
        f"model.embed_dim={SHAPES['embed_dim']}", f"data.image_size={SHAPES['image_size']}",
        f"data.max_len={SHAPES['max_len']}",
        *(f"model.image.{key}={value}" for key, value in image.items()),
        *(f"model.text.{key}={value}" for key, value in text.items())
    ]
  else:
    overrides += [f"model.activation_dtype={dtype}", "model.remat=False"]
    if jax.default_backend() == "gpu" and dtype == "bfloat16":
      overrides.append("model.attention=cudnn")
  config = config_loading.load_config(CONFIG + ("" if model == "small" else f":{model}"))
  return config_loading.apply_overrides(config,
                                        overrides + ["mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1"])


def shapes_of(config) -> dict:
  """The model's shapes in SHAPES' layout, for open_clip_reference.make_model."""
  keys = ("patch_size", "width", "depth", "num_heads", "mlp_dim")
  return dict(image_size=config.data.image_size,
              max_len=config.data.max_len,
              embed_dim=config.model.embed_dim,
              image={key: config.model.image[key] for key in keys},
              text={key: config.model.text[key] for key in ("vocab_size",) + keys[1:]})


class TorchSide:
  """open_clip's CLIP with SigLipLoss and AdamW: on the CPU eager, `TORCH_THREADS` threads; on a
  GPU compiled, with fused AdamW."""

  def __init__(self, config, batch, device: str):
    import torch  # pylint: disable=import-outside-toplevel
    import open_clip_reference as reference  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(config.seed)
    self.device = torch.device(device)
    cuda = self.device.type == "cuda"
    model = reference.make_model(shapes_of(config)).to(self.device)
    self.num_params = sum(p.numel() for p in model.parameters())
    self.step = reference.make_train_step(model,
                                          reference.make_optimizer(model, config.optim, fused=cuda),
                                          config.optim.grad_clip_norm,
                                          bf16=config.model.dtype == "bfloat16",
                                          compiled=cuda)
    self.images, self.tokens = (t.to(self.device) for t in reference.to_torch_batch(batch))
    # Counting runs one (untimed) step; FlopCounterMode does not see into compiled graphs.
    self.counted_flops = (None if cuda else reference.count_step_flops(
        self.step, self.images, self.tokens))

  def run(self, steps: int) -> float:
    """Seconds for `steps` steps, waiting for the GPU's queue (if any) to drain."""
    import torch  # pylint: disable=import-outside-toplevel
    start = time.perf_counter()
    for _ in range(steps):
      self.step(self.images, self.tokens)
    if self.device.type == "cuda":
      torch.cuda.synchronize(self.device)
    return time.perf_counter() - start


def benchmark(dtype: str, args) -> dict:
  """Median seconds per step of each side over alternating rounds, and their FLOP counts."""
  config = jaxmm_config(args.batch, DTYPES[dtype], args.model)
  batch = jaxmm_step.synthetic_batch(config)
  matmul_gflops = matmul_rate(dtype)
  sides = {}
  start = time.perf_counter()
  sides["jaxmm"] = jaxmm_step.CompiledStep(config, batch, jax.devices()[:1])
  sides["jaxmm"].run(1)  # compiles
  compile_s = time.perf_counter() - start
  if not args.skip_torch:
    sides["torch"] = TorchSide(config, batch, args.device)
  for side in sides.values():
    side.run(args.warmup)
  times = alternate(sides, args.rounds, args.steps, dtype)
  result = {
      "dtype": dtype,
      "flops": jaxmm_step.step_flops(config),
      "matmul_gflops": matmul_gflops,
      "compile_s": compile_s,
      "times": times,
      "median": {
          name: statistics.median(t) for name, t in times.items()
      }
  }
  if "torch" in sides:
    # Rounds run back to back, so a round's pair saw about the same load from elsewhere.
    result["paired_ratio"] = statistics.median(
        t / j for t, j in zip(times["torch"], times["jaxmm"]))
    if sides["torch"].counted_flops is not None:
      result["torch_counted_flops"] = sides["torch"].counted_flops
    result["torch_params"] = sides["torch"].num_params
  result["jaxmm_params"] = sides["jaxmm"].num_params
  return result


def matmul_rate(dtype: str, n: int = 2048, repeats: int = 10) -> float:
  """GFLOP/s of the best of `repeats` jitted [n, n] x [n, n] products, float32-accumulated.

  The practical ceiling the step's GFLOP/s can be read against (bf16: bfloat16
  operands, float32 result, the path jaxmm.models.matmul takes).
  """
  x = jax.numpy.ones((n, n), DTYPES[dtype])
  product = jax.jit(lambda a: jax.numpy.matmul(a, a, preferred_element_type=np.float32))
  product(x).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    product(x).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best / 1e9


def alternate(sides: dict, rounds: int, steps: int, label: str) -> dict[str, list[float]]:
  """Seconds per step of each side (an object with `run(steps) -> seconds`) in `rounds`
  rounds that run the sides in turn, `steps` steps each; prints every round with the load."""
  times = {name: [] for name in sides}
  for i in range(rounds):
    for name, side in sides.items():
      times[name].append(side.run(steps) / steps)
    print(f"{label} round {i + 1}: " +
          ", ".join(f"{name} {t[-1]:.3f} s/step" for name, t in times.items()) +
          f"; load {load_average()}",
          flush=True)
  return times


def load_average() -> str:
  with open("/proc/loadavg") as f:
    return " ".join(f.read().split()[:3])


def print_table(results, args):
  print(f"\nbatch {args.batch}; medians over {args.rounds} rounds of {args.steps} steps; "
        f"min..max of the per-round means in brackets. jaxmm/torch: examples/s ratio of the "
        f"medians [median of the per-round ratios]")
  header = (f"{'dtype':<6}{'side':<7}{'s/step':>9}{'(min..max)':>18}{'examples/s':>12}"
            f"{'GFLOP/s':>9}{'jaxmm/torch':>20}")
  print(header)
  print("-" * len(header))
  for r in results:
    for name, median in r["median"].items():
      t = r["times"][name]
      ratio = (f"{r['median']['torch'] / r['median']['jaxmm']:.2f}x [{r['paired_ratio']:.2f}x]"
               if name == "jaxmm" and "torch" in r["median"] else "")
      print(f"{r['dtype']:<6}{name:<7}{median:>9.4f}{f'({min(t):.3f}..{max(t):.3f})':>18}"
            f"{args.batch / median:>12.1f}{r['flops'] / median / 1e9:>9.1f}{ratio:>20}")
  print("\nGFLOP/s use the model FLOPs of jaxmm.models.flops (3x forward matmuls, plus the loss's "
        "logits), the same count for both sides.")
  for r in results:
    shares = ", ".join(f"{name} {r['flops'] / median / 1e9 / r['matmul_gflops']:.0%}"
                       for name, median in r["median"].items())
    print(f"{r['dtype']}: a 2048x2048 matmul runs at {r['matmul_gflops']:.0f} GFLOP/s here; "
          f"step GFLOP/s as a share of it: {shares}")
  for r in results:
    line = (f"{r['dtype']}: {r['flops'] / 1e9:.1f} GFLOP/step (jaxmm.models.flops); "
            f"jaxmm compile {r['compile_s']:.1f} s; params jaxmm {r['jaxmm_params'] / 1e6:.2f} M")
    if "torch_counted_flops" in r:
      line += (f", torch {r['torch_params'] / 1e6:.2f} M; torch FlopCounterMode "
               f"{r['torch_counted_flops'] / 1e9:.1f} GFLOP/step")
    print(line)


def main(argv=None):
  args = parse_args(argv)
  if (args.device == "cuda") != (jax.default_backend() == "gpu"):
    sys.exit(f"--device {args.device} needs JAX on the same device; its backend is "
             f"{jax.default_backend()}")
  print("command:", shlex.join([os.path.relpath(sys.executable), *sys.argv]))
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({len(jax.devices())} device), "
        f"{os.cpu_count()} CPU cores; load average before: {load_average()}")
  print(f"CPU: {machine.describe()}")
  if not args.skip_torch:
    import open_clip  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
    print(f"torch {torch.__version__} on {args.device}, open_clip {open_clip.__version__}, "
          f"{TORCH_THREADS} torch threads")
  dtypes = ("fp32", "bf16") if args.dtype == "both" else (args.dtype,)
  results = [benchmark(dtype, args) for dtype in dtypes]
  print_table(results, args)
  print(f"load average after: {load_average()}")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
  main()
