"""Per-device memory of a config's train step, over device counts and global batches.

  rows = plan("configs/siglip_shapes.py", overrides, device_counts=[1, 8], batch_sizes=[256, 1024])

One row per (device count, global batch), in that order: the config with
`batch_size` set to the batch, on its mesh (`config.mesh`) over that many
devices, measured by `jaxmm.train.memory.step_memory` (its docstring names
each field, all in bytes per device), plus `platform`, `devices`, `mesh`,
`batch_size`, `batch_per_device` and `loss_temp_bytes`. Nothing trains: the
experiment's parts come from its `build` in `EXPERIMENTS` with evaluation left
out (`config.evals` emptied), the batch is abstract, shaped like one example
read through the experiment's own input pipeline, and the step is only
compiled. Texts are tokenized as all padding (`tokenizers.PaddingTokenizer`
of model.text.pad_id): every tokenizer gives int32 [data.max_len], so the
plan is the same, and needs no vocabulary file (big_vision's SentencePiece
models, which jaxmm does not ship).

Devices: a mesh over the first N devices present. On the CPU more devices are
simulated (the `--xla_force_host_platform_device_count` of XLA_FLAGS, set here
as `jax_num_cpu_devices`), at most `MAX_SIMULATED_CPU_DEVICES` (2048):
`request_cpu_devices` asks for them before JAX starts its CPU backend; once
that has started with fewer (as in a test session), each larger count is
measured by a child `jaxmm inspect --memory --json` process that starts with
that many. An accelerator cannot be simulated: asking for more devices than it
has is an error.

Loss temporaries: where the experiment's loss can be compiled by itself
(`LOSSES_ALONE`), `loss_temp_bytes` is XLA's temp_size_in_bytes of its
value_and_grad alone, on the step's batch sharding; it is a part of
`temp_bytes`, not an addition to it. For image_text that is the contrastive
loss on float32 embeddings [B, E] and its scalars: the [b, B] logits rows of
'gather', the [b, b] blocks of 'ring'. None where the loss cannot be separated
from the model (diffusion's loss is an elementwise mean of the network's
output).
"""
from collections.abc import Callable, Sequence
import json
import logging
import math
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm import config_loading
from jaxmm import errors
from jaxmm import parallel
from jaxmm import train
from jaxmm.data import tokenizers
from jaxmm.experiments import EXPERIMENTS
from jaxmm.experiments import image_text
from jaxmm.train import memory

Progress = Callable[[str], None]

# The most CPU devices one process can simulate: XLA:CPU numbers a device
# process_index * 2048 + its local index (kMaxCpuDevicesPerProcess in
# xla/pjrt/plugin/xla_cpu/cpu_topology.h), so device 2048 would belong to a second
# process, and compiling for it fails ("Multiprocess computations aren't implemented").
MAX_SIMULATED_CPU_DEVICES = 2048


def _contrastive_loss_alone(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """image_text's loss and its abstract arguments: zimg, ztxt float32 [B, E] split over the
  batch axes (the towers' heads run in float32), and {'log_scale', 'bias'} replicated."""
  embeddings = jax.ShapeDtypeStruct((config.batch_size, config.model.embed_dim),
                                    jnp.float32,
                                    sharding=parallel.batch_sharding(mesh))
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=parallel.replicated(mesh))
  names = ("log_scale",) if config.model.init_bias is None else ("log_scale", "bias")
  loss = image_text.make_contrastive_loss(config.loss, mesh)
  return loss, (embeddings, embeddings, dict.fromkeys(names, scalar))


# experiment name -> (config, mesh) -> (loss, its abstract arguments), for experiments
# whose loss compiles apart from the model.
LOSSES_ALONE = {"image_text": _contrastive_loss_alone}


def check_simulated_counts(device_counts: Sequence[int]) -> None:
  """Raises `UserError` for a device count above `MAX_SIMULATED_CPU_DEVICES`, before JAX starts
  (no single process has more accelerator devices either)."""
  for count in device_counts:
    if count > MAX_SIMULATED_CPU_DEVICES:
      raise errors.UserError(f"--devices {count}: one process simulates at most "
                             f"{MAX_SIMULATED_CPU_DEVICES} CPU devices; give at most "
                             f"{MAX_SIMULATED_CPU_DEVICES} (memory per device follows the batch "
                             "per device and the fsdp and tensor sizes, so a smaller data axis "
                             "with the same of those plans the same)")


def request_cpu_devices(count: int) -> None:
  """Gives JAX's CPU backend `count` devices if it has not started yet; else changes nothing."""
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # the backend has started: it keeps the devices it has
    pass


def planning_config(spec: str, overrides: Sequence[str],
                    batch_size: int | None = None) -> ml_collections.ConfigDict:
  """The config of `spec` with `overrides` (and `batch_size`), evaluation left out and texts
  tokenized as padding (module docstring).

  Evaluators are not part of the train step: none is built, and their batch
  sizes are not checked against the mesh.
  """
  config = config_loading.load_config(spec)
  extra = [] if batch_size is None else [f"batch_size={batch_size}"]
  config_loading.apply_overrides(config, list(overrides) + extra)
  config.eval_every = 0
  config.evals = ml_collections.ConfigDict()
  if "text" in config.model:  # a model without a text tower reads no text
    config.data.tokenizer = f"{tokenizers.PADDING_PREFIX}{config.model.text.pad_id}"
  return config


def check(config: ml_collections.ConfigDict, device_counts: Sequence[int],
          batch_sizes: Sequence[int] | None, present: Sequence[jax.Device]) -> None:
  """Raises `UserError` for a device count or batch that cannot be planned, before any compile.

  `present` are the devices this process has; `batch_sizes` None stands for
  the config's batch_size.
  """
  errors.one_of("experiment", config.experiment, EXPERIMENTS)
  train.check_config(config)
  platform = present[0].platform
  for count in device_counts:
    if count > len(present) and platform != "cpu":
      raise errors.UserError(f"--devices {count}: only {len(present)} {platform} devices are "
                             f"present; give at most {len(present)} (more devices are simulated "
                             "on the CPU only)")
    try:
      shape = dict(zip(parallel.MESH_AXES, parallel.mesh_shape(config.mesh, count)))
    except errors.UserError as e:
      raise errors.UserError(f"--devices {count}: {e}") from None
    shards = math.prod(shape[axis] for axis in parallel.BATCH_AXES)
    for batch_size in batch_sizes or [config.batch_size]:
      if batch_size % shards:
        axes = " x ".join(f"{axis}={shape[axis]}" for axis in parallel.BATCH_AXES)
        change = (f"set --config.batch_size to a multiple of {shards}" if batch_sizes is None
                  else f"give --batch-sizes that are multiples of {shards}")
        raise errors.UserError(f"global batch {batch_size} does not split over --devices {count} "
                               f"(batch axes {axes} = {shards} shards); {change}")


def _example_batch(build, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   workdir: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{key: (shape of one example, dtype)} of the experiment's training batches, from one
  example per process read through its own input pipeline (`config` has that batch size)."""
  batch = next(build(config, workdir, mesh)["train_data"])  # host numpy arrays [1, ...]
  return {key: (value.shape[1:], value.dtype) for key, value in batch.items()}


def _measure(build, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, workdir: str,
             examples: dict) -> dict:
  """One row: `config`'s train step on `mesh` (see the module docstring)."""
  parts = build(config, workdir, mesh)
  batch = {
      key: jax.ShapeDtypeStruct((config.batch_size, *shape), dtype)
      for key, (shape, dtype) in examples.items()
  }
  row = dict(platform=mesh.devices.flat[0].platform,
             devices=mesh.size,
             mesh=dict(mesh.shape),
             batch_size=config.batch_size,
             batch_per_device=config.batch_size // parallel.batch_shards(mesh))
  row.update(memory.step_memory(config, mesh, parts["init_variables"], parts["loss_fn"], batch))
  row["loss_temp_bytes"] = None
  if config.experiment in LOSSES_ALONE:
    loss, args = LOSSES_ALONE[config.experiment](config, mesh)
    row["loss_temp_bytes"] = memory.value_and_grad_temp_bytes(loss, *args)
  return row


class _OncePerMessage(logging.Filter):
  """Lets each distinct message through once: every row builds the experiment again, and
  its warnings (e.g. about damaged shard examples skipped) say the same each time."""

  def __init__(self):
    super().__init__()
    self._seen = set()

  def filter(self, record):
    message = record.getMessage()
    if message in self._seen:
      return False
    self._seen.add(message)
    return True


def plan(spec: str,
         overrides: Sequence[str],
         device_counts: Sequence[int] | None = None,
         batch_sizes: Sequence[int] | None = None,
         progress: Progress = lambda line: None) -> list[dict]:
  """Rows of per-device memory for each device count (default: the devices present) and
  global batch (default: the config's `batch_size`); see the module docstring.

  Args:
    spec, overrides: the config, 'FILE.py[:ARG]' and ['KEY=VALUE', ...].
    progress: called with a line before each compile.

  Raises:
    UserError: a device count that the mesh or the platform cannot have (or more
      than `MAX_SIMULATED_CPU_DEVICES`), a
      batch that does not split over a mesh's batch axes, or a bad config.
  """
  if device_counts is not None:
    check_simulated_counts(device_counts)
    request_cpu_devices(max(device_counts))
  present = jax.devices()
  device_counts = device_counts or [len(present)]
  config = planning_config(spec, overrides)
  check(config, device_counts, batch_sizes, present)
  batch_sizes = batch_sizes or [config.batch_size]
  build = EXPERIMENTS[config.experiment]
  total = len(device_counts) * len(batch_sizes)
  rows = []
  once = _OncePerMessage()
  logging.getLogger("jaxmm").addFilter(once)
  try:
    with tempfile.TemporaryDirectory() as workdir:  # build() wants one; nothing is written
      for count in device_counts:
        if count > len(present):
          progress(f"[{len(rows) + 1}/{total}] {count} devices: in a child process with "
                   f"{count} simulated CPU devices")
          rows += _in_child_process(spec, overrides, count, batch_sizes, progress)
          continue
        mesh = parallel.make_mesh(config.mesh, present[:count])
        examples = _example_batch(build, planning_config(spec, overrides, jax.process_count()),
                                  mesh, workdir)
        for batch_size in batch_sizes:
          progress(f"[{len(rows) + 1}/{total}] {parallel.describe(mesh)}, global batch "
                   f"{batch_size}: compiling")
          rows.append(
              _measure(build, planning_config(spec, overrides, batch_size), mesh, workdir,
                       examples))
  finally:
    logging.getLogger("jaxmm").removeFilter(once)
  return rows


def _in_child_process(spec: str, overrides: Sequence[str], count: int,
                      batch_sizes: Sequence[int], progress: Progress) -> list[dict]:
  """The rows of `count` CPU devices, measured by `jaxmm inspect --memory --json` in a child
  process whose CPU backend starts with that many; its stderr lines go to `progress`."""
  command = [
      sys.executable, "-m", "jaxmm.commands.cli", "inspect", "--memory", "--json", "--config", spec,
      "--devices",
      str(count), "--batch-sizes", ",".join(map(str, batch_sizes))
  ] + [config_loading.OVERRIDE_PREFIX + override for override in overrides]
  error_prefix = "jaxmm inspect: error: "
  error = None
  with tempfile.TemporaryFile("w+") as out:
    child = subprocess.Popen(command,
                             stdout=out,
                             stderr=subprocess.PIPE,
                             text=True,
                             env=dict(os.environ, JAX_PLATFORMS="cpu"))
    for line in child.stderr:
      if line.startswith(error_prefix):
        error = line[len(error_prefix):].strip()
      else:
        progress(line.rstrip("\n"))
    status = child.wait()
    if error is not None:
      raise errors.UserError(error)
    if status:
      raise RuntimeError(f"the child process measuring {count} devices failed with exit status "
                         f"{status}; its output is above")
    out.seek(0)
    return json.load(out)["rows"]
