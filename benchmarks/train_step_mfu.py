"""Examples/s and MFU of an image-text config's train step on the devices at hand.

  python benchmarks/train_step_mfu.py --config configs/siglip_shapes.py:base \
      --batch-sizes 256,512,1024,2048 --config.model.remat=False

For each batch size in turn, the step is compiled on the config's mesh over
all devices (jaxmm_step: the loop's own step on one synthetic batch), run
`--warmup` times, then timed over `--steps` steps. MFU is model FLOPs per
second (jaxmm.models.flops: 3x the forward matmuls, plus the loss's logits;
rematerialisation's extra forward is not counted) over the devices' peak
dense bf16 FLOP/s, looked up from the device kind or given by `--peak-tflops`.
A batch that runs out of device memory ends the sweep; the last line names
the largest batch that ran and its numbers. `--profile DIR` then traces
`--profile-steps` more steps of that batch with jax.profiler (a Perfetto
trace in DIR) and prints where the device time went (profile_summary.py).

  python benchmarks/train_step_mfu.py --config configs/siglip_shapes.py:base \
      --batch-sizes 512 --config.model.attention=cudnn --profile /tmp/trace
"""
import argparse
import shlex
import sys

from jaxmm import host

host.configure()  # as `jaxmm train` does (nothing on an accelerator)

import jax  # pylint: disable=wrong-import-position

from jaxmm import config_loading  # pylint: disable=wrong-import-position
import jaxmm_step  # pylint: disable=wrong-import-position
import profile_summary  # pylint: disable=wrong-import-position

# Dense bf16 peak TFLOP/s per device (vendor data sheets), by a substring of
# jax's device_kind, first match wins.
PEAK_BF16_TFLOPS = (
    ("H100", 989.4),  # SXM; the PCIe card is 756
    ("H200", 989.4),
    ("A100", 312.0),
    ("TPU v4", 275.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5", 459.0),  # v5p
    ("TPU v6 lite", 918.0),
)


def parse_args(argv):
  rest, overrides = config_loading.split_overrides(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, metavar="FILE.py[:ARG]")
  parser.add_argument("--batch-sizes",
                      required=True,
                      help="comma-separated global batch sizes, tried in this order")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per batch size")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  parser.add_argument("--profile",
                      metavar="DIR",
                      help="trace the largest batch that ran into DIR and summarise the trace")
  parser.add_argument("--profile-steps", type=int, default=3, help="steps traced by --profile")
  parser.add_argument("--peak-tflops",
                      type=float,
                      default=None,
                      help="peak TFLOP/s of one device (default: from its device kind)")
  args = parser.parse_args(rest)
  args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  args.overrides = overrides
  return args


def peak_tflops(device: jax.Device):
  """Dense bf16 peak of `device` from PEAK_BF16_TFLOPS, or None if its kind is not listed."""
  for kind, tflops in PEAK_BF16_TFLOPS:
    if kind in device.device_kind:
      return tflops
  return None


def is_out_of_memory(error: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def measure(config, args) -> tuple[dict, jaxmm_step.CompiledStep]:
  """Seconds per step, examples/s and model TFLOP/s of `config` (one batch size), and its step."""
  step = jaxmm_step.CompiledStep(config, jaxmm_step.synthetic_batch(config))
  step.run(1 + args.warmup)  # compiles, then warms up
  seconds = step.run(args.steps) / args.steps
  return {
      "s_per_step": seconds,
      "examples_per_s": config.batch_size / seconds,
      "tflops": jaxmm_step.step_flops(config) / seconds / 1e12,
      "params": step.num_params,
  }, step


def profile(step: jaxmm_step.CompiledStep, args) -> None:
  """Traces `args.profile_steps` steps into args.profile and prints the summary."""
  with jax.profiler.trace(args.profile, create_perfetto_trace=True):
    step.run(args.profile_steps)
  print(profile_summary.summarize(args.profile, args.profile_steps, top=25))


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  devices = jax.devices()
  peak = args.peak_tflops or peak_tflops(devices[0])
  print("command:", shlex.join(["python", "benchmarks/train_step_mfu.py", *argv]))
  print(f"jax {jax.__version__}: {len(devices)} x {devices[0].device_kind}; peak "
        f"{f'{peak:g} TFLOP/s per device' if peak else 'unknown (MFU not shown)'}")
  best, best_step = None, None
  for batch_size in args.batch_sizes:
    config = config_loading.load_config(args.config)
    config_loading.apply_overrides(config, args.overrides + [f"batch_size={batch_size}"])
    try:
      result, step = measure(config, args)
    except Exception as e:  # pylint: disable=broad-except
      if not is_out_of_memory(e):
        raise
      print(f"batch {batch_size}: out of device memory")
      break
    mfu = (f", MFU {result['tflops'] / (peak * len(devices)):.1%}" if peak else "")
    print(f"batch {batch_size}: {result['s_per_step']:.4f} s/step, "
          f"{result['examples_per_s']:.1f} examples/s, {result['tflops']:.2f} model TFLOP/s{mfu} "
          f"({result['params'] / 1e6:.1f} M params, dtype {config.model.dtype}, "
          f"remat {config.model.remat})")
    best, best_step = (batch_size, result, mfu), step
  if best is None:
    sys.exit("no batch size fit in device memory")
  batch_size, result, mfu = best
  print(f"largest batch that ran: {batch_size}: {result['examples_per_s']:.1f} examples/s{mfu}")
  if args.profile:
    profile(best_step, args)


if __name__ == "__main__":
  main()
