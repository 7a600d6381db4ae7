"""XLA temp memory of the SigLIP and CLIP losses' value and gradient, dense vs sharded.

Compiles (never runs, so no batch is too large for the host) value_and_grad
of `siglip_loss` and `clip_loss` w.r.t. both embeddings and the loss's
scalars (log_scale, and SigLIP's bias) at a few global batch sizes B:
  dense   one device, the whole [B, B] logits;
  gather  shard_map over n simulated CPU devices, [B/n, B] logits rows each;
  ring    the same, one recomputed [B/n, B/n] logits block at a time;
and prints `compiled.memory_analysis().temp_size_in_bytes` in MiB (per
device for the sharded variants), the ratios, and the ring's memory in
float32 [b, b] blocks, b = B/n: a constant number of blocks as B grows is
memory that scales as (B/n)².

  PYTHONPATH=. python benchmarks/loss_memory.py --batch 1024 4096 16384 65536 --dim 64
"""
import argparse
import os


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch",
                      type=int,
                      nargs="+",
                      default=[1024, 4096, 16384, 65536],
                      help="global batch sizes B")
  parser.add_argument("--dim", type=int, default=64, help="embedding dim D")
  parser.add_argument("--devices",
                      type=int,
                      default=8,
                      help="simulated CPU devices to shard the batch over")
  return parser.parse_args()


def main():
  args = parse_args()
  # Must be set before jax initialises its CPU backend.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count="
                             f"{args.devices}").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jax.sharding import AxisType  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from jaxmm import losses  # pylint: disable=import-outside-toplevel

  mesh = jax.make_mesh((args.devices,), ("data",), axis_types=(AxisType.Auto,))
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  # Each loss with its number of scalar parameters after the two embeddings.
  loss_fns = {"SigLIP": (losses.siglip_loss, 2), "CLIP": (losses.clip_loss, 1)}

  def temp_mib(loss, num_scalars, batch):
    z = jax.ShapeDtypeStruct((batch, args.dim), jnp.float32)
    grad_fn = jax.value_and_grad(loss, argnums=tuple(range(2 + num_scalars)))
    compiled = jax.jit(grad_fn).lower(z, z, *(scalar,) * num_scalars).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20

  def sharded(loss, num_scalars, variant):
    return jax.shard_map(lambda *a: loss(*a, axis_name="data", variant=variant),
                         mesh=mesh,
                         in_specs=(P("data"), P("data")) + (P(),) * num_scalars,
                         out_specs=P())

  for name, (loss, num_scalars) in loss_fns.items():
    print(f"{name} value+grad, XLA temp MiB (D={args.dim}, "
          f"{args.devices} CPU devices; gather/ring per device)")
    print(f"{'B':>7} {'dense':>10} {'gather':>10} {'ring':>10} "
          f"{'gather/ring':>12} {'dense/ring':>11} {'ring/[b,b]':>11}")
    for batch in args.batch:
      dense = temp_mib(loss, num_scalars, batch)
      gather = temp_mib(sharded(loss, num_scalars, "gather"), num_scalars, batch)
      ring = temp_mib(sharded(loss, num_scalars, "ring"), num_scalars, batch)
      block_mib = (batch // args.devices)**2 * 4 / 2**20
      print(f"{batch:>7} {dense:>10.2f} {gather:>10.2f} {ring:>10.2f} "
            f"{gather / ring:>12.1f} {dense / ring:>11.1f} {ring / block_mib:>11.2f}")
    print()


if __name__ == "__main__":
  main()
