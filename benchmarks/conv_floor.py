"""The EDM U-Net train step's convolutions alone, in XLA:CPU and in torch, against torch's whole step.

A floor for `benchmarks/diffusion_step.py`: however fast everything else
in jaxmm's step were, the step cannot take less than its convolutions. The
script reads every convolution of the step's forward pass (each
`conv_general_dilated` in the jaxpr of configs/edm_shapes.py's loss: input,
kernel and output shapes) and times, alternating in rounds in one process:

  jaxmm step    jaxmm's whole train step, as diffusion_step.py times it;
  jaxmm convs   those convolutions with both gradients (input and kernel,
                XLA's own transposed convolutions), one jit, on random data;
  torch convs   the same convolutions in torch (F.conv2d on NCHW tensors,
                as diffusers runs them), forward and autograd backward;
  torch step    the whole torch train step of diffusion_step.py (diffusers'
                UNet2DModel, EDM loss, AdamW, EMA), eager.

The table gives the medians and, last, torch's step over jaxmm's
convolutions: the most that jaxmm's step could reach against torch's
(eager, the slower torch mode) if everything but its convolutions cost
nothing. Where that is under 1.3×, the goal of diffusion_step.py is out
of reach on this machine without faster convolution kernels. bf16 takes
the convolutions of `model.dtype=bfloat16` (bf16 operands, float32
results) against torch.autocast to bfloat16. XLA_FLAGS and the malloc
settings are those of `jaxmm train` (jaxmm.host).

  .venv-peers/bin/python benchmarks/conv_floor.py     # --rounds --steps --batch-size --dtypes
"""
import functools
import json
import statistics
import sys
import time

from jaxmm import host  # pylint: disable=wrong-import-position

host.configure()

import jax  # pylint: disable=wrong-import-position
import jax.extend.core
import numpy as np

from jaxmm import models
import diffusion_step
import jaxmm_step
import machine
import step_throughput


def step_convolutions(config) -> list[dict]:
  """Every convolution of the forward pass of `config`'s diffusion loss, in order: its
  'lhs' [B, H, W, Cin] and 'rhs' [k, k, Cin, Cout] shapes, operand 'dtype' and jax.lax
  parameters."""
  model = models.get_model(config.model)
  init_variables, loss_fn = diffusion_step.diffusion_parts(model, config, None)
  params = jax.eval_shape(init_variables, jax.random.key(0))["params"]
  batch = diffusion_step.random_batch(config)
  jaxpr = jax.make_jaxpr(loss_fn)(params, {}, batch, jax.random.key(0))
  convs = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        lhs, rhs = (v.aval for v in eqn.invars)
        convs.append({
            "lhs": lhs.shape,
            "rhs": rhs.shape,
            "dtype": lhs.dtype,
            "params": dict(eqn.params)
        })
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jaxpr.jaxpr)
  return convs


def convolve(x, w, params: dict):
  """x convolved with w as a `conv_general_dilated` equation with these parameters does."""
  return jax.lax.conv_general_dilated_p.bind(x, w, **params)


def conv_flops(conv: dict) -> int:
  """Forward FLOPs (2 per multiply-add) of a stride-1 'SAME' convolution."""
  b, h, w, _ = conv["lhs"]
  kh, kw, cin, cout = conv["rhs"]
  return 2 * b * h * w * kh * kw * cin * cout


class JaxConvs:
  """The convolutions with their input and kernel gradients, one jitted function."""

  def __init__(self, convs: list[dict]):
    rng = np.random.default_rng(0)
    self.args = []
    for conv in convs:
      x = rng.standard_normal(conv["lhs"], np.float32).astype(conv["dtype"])
      w = rng.standard_normal(conv["rhs"], np.float32).astype(conv["dtype"])
      y = jax.eval_shape(functools.partial(convolve, params=conv["params"]), x, w)
      self.args.append((x, w, rng.standard_normal(y.shape, np.float32)))
    params = [conv["params"] for conv in convs]

    def all_convs(args):
      out = []
      for (x, w, g), p in zip(args, params):
        y, vjp = jax.vjp(functools.partial(convolve, params=p), x, w)
        out.append((y,) + vjp(g))
      return out

    self.fn = jax.jit(all_convs)
    self.args = jax.device_put(self.args)

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      out = self.fn(self.args)
    jax.block_until_ready(out)
    return time.perf_counter() - start


class TorchConvs:
  """The same convolutions in torch: F.conv2d on NCHW tensors, forward and backward, in
  float32 or under torch.autocast to bfloat16."""

  def __init__(self, convs: list[dict], bf16: bool):
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(diffusion_step.TORCH_THREADS)
    gen = torch.Generator().manual_seed(0)
    self.torch = torch
    self.bf16 = bf16
    self.args = []
    for conv in convs:
      b, h, w, cin = conv["lhs"]
      kh, kw, _, cout = conv["rhs"]
      x = torch.randn(b, cin, h, w, generator=gen, requires_grad=True)
      weight = torch.randn(cout, cin, kh, kw, generator=gen, requires_grad=True)
      g = torch.randn(b, cout, h, w, generator=gen)
      self.args.append((x, weight, g, kh // 2))

  def run(self, steps: int) -> float:
    functional = self.torch.nn.functional
    start = time.perf_counter()
    for _ in range(steps):
      for x, weight, g, pad in self.args:
        x.grad = weight.grad = None
        with self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=self.bf16):
          y = functional.conv2d(x, weight, padding=pad)
        y.backward(g.to(y.dtype))
    return time.perf_counter() - start


def benchmark(dtype: str, args) -> dict:
  """Median seconds of every side over alternating rounds, and the convolutions' FLOPs."""
  config = diffusion_step.jaxmm_config(args.batch_size, diffusion_step.DTYPES[dtype])
  convs = step_convolutions(config)
  flops = 3 * sum(conv_flops(c) for c in convs)
  print(
      f"{dtype}: {len(convs)} convolutions in the forward pass, batch {config.batch_size}; "
      f"{flops / 1e9:.1f} GFLOP with both gradients",
      flush=True)
  batch = diffusion_step.random_batch(config)
  sides = {
      "jaxmm step":
          jaxmm_step.CompiledStep(config, batch,
                                  jax.devices()[:1], diffusion_step.diffusion_parts),
      "jaxmm convs":
          JaxConvs(convs),
      "torch convs":
          TorchConvs(convs, bf16=dtype == "bf16"),
      "torch step":
          diffusion_step.TorchSide(config, batch, mode="eager"),
  }
  for side in sides.values():
    side.run(1)  # compiles
    side.run(args.warmup)
  times = step_throughput.alternate(sides, args.rounds, args.steps, dtype)
  return {
      "dtype": dtype,
      "flops": flops,
      "median": {
          name: statistics.median(t) for name, t in times.items()
      }
  }


def print_table(results, args):
  print(f"\n{' '.join(sys.argv)}")
  print(f"{machine.describe()}; medians over {args.rounds} rounds of "
        f"{args.steps}, seconds")
  print("| dtype | jaxmm step | jaxmm convs | torch convs | torch step (eager) | "
        "torch step / 1.3 | torch step / jaxmm convs |")
  print("|---|---|---|---|---|---|---|")
  for r in results:
    m, gflop = r["median"], r["flops"] / 1e9
    print(f"| {r['dtype']} | {m['jaxmm step']:.3f} | {m['jaxmm convs']:.3f} "
          f"({gflop / m['jaxmm convs']:.0f} GFLOP/s) | {m['torch convs']:.3f} "
          f"({gflop / m['torch convs']:.0f} GFLOP/s) | {m['torch step']:.3f} | "
          f"{m['torch step'] / 1.3:.3f} | **{m['torch step'] / m['jaxmm convs']:.2f}×** |")


def main(argv=None):
  args = diffusion_step.parse_args(argv, __doc__)
  print(machine.describe(), flush=True)
  results = [benchmark(dtype, args) for dtype in args.dtypes]
  print_table(results, args)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
  main()
