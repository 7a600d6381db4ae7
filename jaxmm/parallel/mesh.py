"""The device mesh: axes `data`, `fsdp` and `tensor`, sized from the config.

`config.mesh` maps each axis name to a size; one size may be -1 and takes the
devices that remain. The global batch is split over (`data`, `fsdp`): both are
data-parallel, `fsdp` additionally shards parameters and optimizer state.
"""
from collections.abc import Mapping, Sequence
import math

import jax
import numpy as np

from jaxmm.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves `mesh_config` ({axis: size}, at most one -1) to sizes in MESH_AXES order."""
  unknown = set(mesh_config) - set(MESH_AXES)
  if unknown:
    raise UserError(f"unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}")
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  named = dict(zip(MESH_AXES, sizes))
  for axis, size in named.items():
    if size == 0 or size < -1:
      raise UserError(f"mesh.{axis}={size} must be a positive size or -1 (the remaining devices)")
  if sizes.count(-1) > 1:
    raise UserError(f"at most one mesh axis may be -1, got {_keys(named)}; give the others a size")
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % fixed:
      raise UserError(f"{_keys(named)}: the fixed axes take {fixed} devices, which does not "
                      f"divide the {num_devices} devices available; make their product divide "
                      f"{num_devices}")
    sizes[sizes.index(-1)] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise UserError(f"{_keys(dict(zip(MESH_AXES, sizes)))} needs {math.prod(sizes)} devices, but "
                    f"{num_devices} are available; set one axis to -1 or make the product "
                    f"{num_devices}")
  return tuple(sizes)


def _keys(named: Mapping[str, int]) -> str:
  """'mesh.data=2, mesh.fsdp=1, mesh.tensor=1'."""
  return ", ".join(f"mesh.{axis}={size}" for axis, size in named.items())


def make_mesh(mesh_config: Mapping[str, int],
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A mesh over `devices` (default: all) with the axes of MESH_AXES.

  Axes are `Auto` (GSPMD), so that the models' logical sharding constraints
  propagate as they did under pjit.
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape,
                       MESH_AXES,
                       devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(shape))


def batch_shards(mesh: jax.sharding.Mesh) -> int:
  """How many ways the global batch is split."""
  return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh, key: str = "batch_size") -> None:
  """Fails, naming config `key` and the numbers, unless `batch_size` splits over the batch axes."""
  shards = batch_shards(mesh)
  if batch_size % shards:
    sizes = " x ".join(f"{axis}={mesh.shape[axis]}" for axis in BATCH_AXES)
    raise UserError(f"{key}={batch_size} does not divide over the mesh's batch axes "
                    f"({sizes} = {shards} shards); use a multiple of {shards}")
  if batch_size % jax.process_count():
    raise UserError(f"{key}={batch_size} does not divide over "
                    f"{jax.process_count()} processes; use a multiple of {jax.process_count()}")


def describe(mesh: jax.sharding.Mesh) -> str:
  """'data=8, fsdp=1, tensor=1 over 8 cpu devices'."""
  axes = ", ".join(f"{name}={size}" for name, size in mesh.shape.items())
  return f"{axes} over {np.size(mesh.devices)} {mesh.devices.flat[0].platform} devices"
