"""XLA temp memory of the SigLIP loss's value and gradient, dense vs sharded.

Compiles (never runs) value_and_grad of `siglip_loss` w.r.t. both embeddings,
log_scale and bias at a few global batch sizes B:
  dense   one device, the whole [B, B] logits;
  gather  shard_map over n simulated CPU devices, [B/n, B] logits rows each;
  ring    the same, one recomputed [B/n, B/n] logits block at a time;
and prints `compiled.memory_analysis().temp_size_in_bytes` in MiB (per
device for the sharded variants) with the ratios.

  PYTHONPATH=. python benchmarks/loss_memory.py --batch 1024 4096 16384 --dim 64
"""
import argparse
import os


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch",
                      type=int,
                      nargs="+",
                      default=[1024, 4096, 16384],
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
  from jaxmm.losses import siglip_loss  # pylint: disable=import-outside-toplevel

  mesh = jax.make_mesh((args.devices,), ("data",), axis_types=(AxisType.Auto,))
  scalar = jax.ShapeDtypeStruct((), jnp.float32)

  def temp_mib(loss, batch):
    z = jax.ShapeDtypeStruct((batch, args.dim), jnp.float32)
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3))).lower(z, z, scalar,
                                                                             scalar).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20

  def sharded(variant):
    return jax.shard_map(
        lambda zi, zt, s, b: siglip_loss(zi, zt, s, b, axis_name="data", variant=variant),
        mesh=mesh,
        in_specs=(P("data"), P("data"), P(), P()),
        out_specs=P())

  print(f"SigLIP value+grad, XLA temp MiB (D={args.dim}, "
        f"{args.devices} CPU devices; gather/ring per device)")
  print(f"{'B':>7} {'dense':>10} {'gather':>10} {'ring':>10} "
        f"{'gather/ring':>12} {'dense/ring':>11}")
  for batch in args.batch:
    dense = temp_mib(siglip_loss, batch)
    gather = temp_mib(sharded("gather"), batch)
    ring = temp_mib(sharded("ring"), batch)
    print(f"{batch:>7} {dense:>10.2f} {gather:>10.2f} {ring:>10.2f} "
          f"{gather / ring:>12.1f} {dense / ring:>11.1f}")


if __name__ == "__main__":
  main()
