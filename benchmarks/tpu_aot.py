"""The train step compiled ahead of time for a TPU slice that is not here: memory and collectives.

  python benchmarks/tpu_aot.py --topology v5e-8 --config configs/siglip_shapes.py:base \
      --batch-size 256 --config.model.remat=False

builds an abstract TPU topology (`jax.experimental.topologies.get_topology_desc`,
as MaxText's train_compile.py does), a mesh over its devices
(`jaxmm.parallel.make_mesh` with the config's mesh axes), and the loop's own
train step (`jaxmm.train.build_step`), lowers that step for ShapeDtypeStructs
carrying the state's and the batch's shardings and compiles it with the TPU
compiler. Nothing runs and no TPU is needed, but the TPU compiler is: the
`libtpu` wheel that `jax[tpu]` pins for the installed jax
(`pip install "jax[tpu]==<jax version>"`, or that libtpu alone). It prints the
per-chip memory of `jaxmm.train.memory` (the state's shards and XLA's buffer
assignment) and the collective ops of the compiled HLO, counted by kind.
"""
import argparse
import collections
import re
import sys

import jax
from jax.experimental import topologies

from jaxmm import config_loading
from jaxmm import models
from jaxmm import parallel
from jaxmm.train import memory
from jaxmm.train.loop import build_step
from jaxmm.train.state import abstract_state
import jaxmm_step

# Slice name -> get_topology_desc's arguments (chip generation and grid of chips; one host).
TOPOLOGIES = {
    "v4-8": dict(topology_name="v4:2x2x1", chip_config_name="megacore",
                 chips_per_host_bounds=(2, 2, 1)),
    "v5e-8": dict(topology_name="v5e:2x4", chip_config_name="default",
                  chips_per_host_bounds=(2, 4, 1)),
    "v5e-4": dict(topology_name="v5e:2x2", chip_config_name="default",
                  chips_per_host_bounds=(2, 2, 1)),
}
# HLO collective ops; `-start` / `-done` pairs are the asynchronous forms.
COLLECTIVES = re.compile(
    r"\b(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute|"
    r"collective-broadcast)(-start)?\(")


def parse_args(argv):
  rest, overrides = config_loading.split_overrides(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--topology", choices=sorted(TOPOLOGIES), default="v5e-8")
  parser.add_argument("--config", default="configs/siglip_shapes.py:base", metavar="FILE.py[:ARG]")
  parser.add_argument("--batch-size", type=int, default=256, help="global batch size")
  args = parser.parse_args(rest)
  args.overrides = overrides
  return args


def topology_devices(name: str) -> list:
  """The abstract devices of TPU slice `name`; without libtpu, a SystemExit naming it."""
  try:
    return topologies.get_topology_desc(platform="tpu", **TOPOLOGIES[name]).devices
  except Exception as e:  # pylint: disable=broad-except
    sys.exit(f"cannot describe TPU {name} with jax {jax.__version__}: {type(e).__name__}: {e}\n"
             f"The TPU compiler comes with libtpu: pip install 'jax[tpu]=={jax.__version__}'")


def collective_counts(hlo_text: str) -> collections.Counter:
  """{collective op kind: occurrences} in the compiled HLO text."""
  return collections.Counter(
      m.group(1) + (m.group(2) or "") for m in COLLECTIVES.finditer(hlo_text))


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  config = config_loading.load_config(args.config)
  config_loading.apply_overrides(config, args.overrides + [f"batch_size={args.batch_size}"])
  devices = topology_devices(args.topology)
  mesh = parallel.make_mesh(config.mesh, devices)
  parallel.check_batch_size(config.batch_size, mesh)
  print(f"jax {jax.__version__}: {args.topology}, {len(devices)} x {devices[0].device_kind}; "
        f"mesh {parallel.describe(mesh)}; batch {config.batch_size}")
  model = models.get_model(config.model)
  init_variables, loss_fn = jaxmm_step.image_text_parts(model, config, mesh)
  tx, shardings, train_step = build_step(config, mesh, init_variables, loss_fn)
  state = abstract_state(init_variables, tx, config.ema, shardings)
  batch = memory.with_sharding(jaxmm_step.synthetic_batch(config), parallel.batch_sharding(mesh))
  compiled = train_step.lower(state, batch).compile()
  per_chip = dict(memory.state_memory(state), **memory.compiled_memory(compiled))
  print("per chip: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in per_chip.items()))
  counts = collective_counts(compiled.as_text())
  print("collectives in the compiled step: " +
        (", ".join(f"{k} x{n}" for k, n in sorted(counts.items())) or "none"))


if __name__ == "__main__":
  main()
