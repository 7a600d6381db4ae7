"""Per-device memory of the compiled train step, read from XLA before anything runs.

`step_memory` builds the loop's own step (`build_step`: optimizer, sharded
state, the experiment's loss, jit with the state's shardings and donation),
lowers it for abstract arguments (ShapeDtypeStructs that carry the state's and
the batch's shardings) and compiles it. Nothing is allocated or run, so a
batch of any size can be planned on any host. Every number is in bytes per
device:

  params_bytes, opt_state_bytes, ema_bytes, model_state_bytes
      this device's shards of those fields of the train state:
      prod(sharding.shard_shape(shape)) x itemsize, summed over the leaves;
  state_bytes     the whole state (the fields above and the step counters);
  batch_bytes     this device's rows of the global batch, every key of it (the
                  loop puts them all on the device);
  and from `compiled.memory_analysis()`, XLA's buffer assignment of the
  per-device (SPMD-partitioned) program:
  argument_bytes  argument_size_in_bytes: the inputs the step reads: the state
                  and the batch's keys that the loss uses (jit drops unused
                  inputs, e.g. the class labels an image-text loss ignores);
  output_bytes    output_size_in_bytes: the new state and the metrics;
  alias_bytes     alias_size_in_bytes: outputs written into the donated state's
                  buffers, counted in both of the above;
  temp_bytes      temp_size_in_bytes: every other buffer of the step:
                  activations kept for the backward pass, gradients, the loss's
                  temporaries, the optimizer update's intermediates, after XLA
                  has let buffers whose lifetimes do not overlap share memory;
  generated_code_bytes  generated_code_size_in_bytes: the compiled program
                  (XLA:CPU reports 0);
  peak_bytes      argument + temp + output - alias: what the step holds at
                  once as XLA plans it (generated code and unused batch keys
                  not included).

XLA's numbers belong to the backend that compiled them: XLA:CPU fuses and
upcasts differently from a GPU or TPU compiler, so a CPU plan of an
accelerator's config is an estimate of its shape, not of its last megabyte.
On the CPU the plan is compiled with the optimization barriers of
jax.checkpoint kept (`compile_for_plan`), so that `model.remat` counts as it
would on an accelerator.
"""
from collections.abc import Callable
import math
from typing import Any

import jax
import ml_collections

from jaxmm import parallel
from jaxmm.train.loop import build_step
from jaxmm.train.state import InitVariables, abstract_state
from jaxmm.train.step import LossFn

# XLA:CPU removes optimization barriers early (its `cse_barrier_expander`
# pass), and with them what keeps jax.checkpoint's (`model.remat`)
# recomputation from being merged back into the forward pass: its buffer plan
# of a remat model then equals the plan without remat, to the byte. With the
# pass off, ten checkpointed pairs of [1024, 1024] matmuls need 40 MiB of
# temps instead of 80 MiB (80 MiB without checkpointing either way). The
# program is only planned, never run, so nothing else depends on the pass.
_COMPILER_OPTIONS = {"cpu": {"xla_disable_hlo_passes": "cse_barrier_expander"}}


def compile_for_plan(lowered: jax.stages.Lowered, platform: str) -> jax.stages.Compiled:
  """`lowered` compiled for its memory analysis; on the CPU with jax.checkpoint's barriers kept."""
  return lowered.compile(_COMPILER_OPTIONS.get(platform, {}))


def shard_bytes(tree: Any) -> int:
  """Bytes of one device's shards of a pytree of ShapeDtypeStructs with NamedShardings.

  Named shardings split every device's part alike, so any device's is the size.
  """
  return sum(
      math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
      for leaf in jax.tree.leaves(tree))


def state_memory(state: Any) -> dict[str, int]:
  """Per-device bytes of an abstract `TrainState`'s fields (see the module docstring)."""
  return dict(params_bytes=shard_bytes(state.params),
              opt_state_bytes=shard_bytes(state.opt_state),
              ema_bytes=shard_bytes(state.ema),
              model_state_bytes=shard_bytes(state.model_state),
              state_bytes=shard_bytes(state))


def compiled_memory(compiled: jax.stages.Compiled) -> dict[str, int]:
  """XLA's memory analysis of `compiled`, per device, with the peak it implies."""
  stats = compiled.memory_analysis()
  memory = dict(argument_bytes=stats.argument_size_in_bytes,
                output_bytes=stats.output_size_in_bytes,
                alias_bytes=stats.alias_size_in_bytes,
                temp_bytes=stats.temp_size_in_bytes,
                generated_code_bytes=stats.generated_code_size_in_bytes)
  memory["peak_bytes"] = (memory["argument_bytes"] + memory["temp_bytes"] +
                          memory["output_bytes"] - memory["alias_bytes"])
  return memory


def step_memory(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                init_variables: InitVariables, loss_fn: LossFn,
                batch: dict[str, jax.ShapeDtypeStruct]) -> dict[str, int]:
  """Per-device memory of `config`'s train step on `mesh` (the module docstring names each).

  Args:
    init_variables, loss_fn: the experiment's, as `jaxmm.train.run` takes them.
    batch: the global batch's shapes and dtypes, {key: [B, ...]}; it is split
      over the mesh's batch axes as the loop splits it.
  """
  tx, shardings, train_step = build_step(config, mesh, init_variables, loss_fn)
  state = abstract_state(init_variables, tx, config.ema, shardings)
  batch = with_sharding(batch, parallel.batch_sharding(mesh))
  compiled = compile_for_plan(train_step.lower(state, batch), mesh.devices.flat[0].platform)
  return dict(state_memory(state), batch_bytes=shard_bytes(batch), **compiled_memory(compiled))


def with_sharding(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """The ShapeDtypeStructs of `tree`, each placed by `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def value_and_grad_temp_bytes(fn: Callable[..., jax.Array], *args: Any) -> int:
  """XLA temp_size_in_bytes per device of value_and_grad of scalar `fn` w.r.t. all `args`.

  `args` are pytrees of ShapeDtypeStructs with shardings; nothing runs. Used
  to measure a loss's temporaries apart from the model's.
  """
  grad_fn = jax.value_and_grad(fn, argnums=tuple(range(len(args))))
  platform = next(iter(jax.tree.leaves(args)[0].sharding.device_set)).platform
  compiled = compile_for_plan(jax.jit(grad_fn).lower(*args), platform)
  return compiled.memory_analysis().temp_size_in_bytes
