"""CPU-only process settings: freed host memory kept mapped, XLA:CPU's convolution kernels, and
checkpoint arrays saved whole.

`configure()` applies both, once per process, before JAX starts its backends:
the `jaxmm` command, the benchmarks and the test suite call it first thing.
It applies them only where the CPU will be JAX's default backend, which it
decides without starting a backend (so without `jax.devices()`):

- JAX_PLATFORMS (or `jax.config.jax_platforms`) set: its first platform is
  the default, so the CPU exactly when that is 'cpu' ('cpu', 'cpu,cuda');
- unset: JAX prefers any accelerator it has a plugin for, so the CPU exactly
  when no accelerator plugin is installed (`accelerator_plugins`: libtpu, or
  a PJRT plugin such as jax-cuda12-plugin in the `jax_plugins` namespace or
  entry points).

A GPU or TPU plugin installed on a machine without that device makes JAX fall
back to the CPU without these settings; JAX_PLATFORMS=cpu gets them there.
`memory.wait_for_inputs`, which the train step calls, does nothing unless the
CPU runs computations inline, which only `configure` turns on.
"""
import importlib.metadata
import importlib.util
import pkgutil

import jax

from jaxmm.host import checkpoint_saves
from jaxmm.host import memory
from jaxmm.host import xla_cpu


def accelerator_plugins() -> list[str]:
  """The installed modules that give JAX an accelerator backend: 'libtpu', and the PJRT
  plugins JAX loads (the `jax_plugins` namespace package and entry points)."""
  found = [entry.value for entry in importlib.metadata.entry_points(group="jax_plugins")]
  if importlib.util.find_spec("jax_plugins") is not None:
    import jax_plugins  # pylint: disable=import-outside-toplevel
    found += [name for _, name, _ in pkgutil.iter_modules(jax_plugins.__path__, "jax_plugins.")]
  if importlib.util.find_spec("libtpu") is not None:
    found.append("libtpu")
  return sorted(set(found))


def cpu_is_default() -> bool:
  """Whether the CPU will be JAX's default backend (the rule in the module docstring)."""
  platforms = jax.config.jax_platforms  # JAX_PLATFORMS, as JAX read it on import
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  return not accelerator_plugins()


def configure() -> bool:
  """Applies the CPU-only settings (`memory.keep_freed_memory`,
  `xla_cpu.use_eigen_convolutions`) if the CPU will be the default backend; call it before
  the process's first JAX computation. Returns whether it applied them."""
  if not cpu_is_default():
    return False
  memory.keep_freed_memory()
  xla_cpu.use_eigen_convolutions()
  return True


def configure_saves() -> bool:
  """`checkpoint_saves.save_whole_arrays` if the CPU will be the default backend; the code that
  makes checkpoint managers calls it (it imports orbax, which `configure` leaves to the commands
  that need it). Returns whether it applied it."""
  if not cpu_is_default():
    return False
  checkpoint_saves.save_whole_arrays()
  return True
