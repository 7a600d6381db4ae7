"""Keep freed host memory mapped, so that XLA:CPU steps stop page-faulting.

XLA:CPU gives each run of an executable one block for all its temporaries
(about 500 MiB for the benchmark's train step) and frees it when the run
ends. glibc serves a request that large with a fresh `mmap` and frees it with
`munmap`, so every step touches new pages and the kernel zeroes them again:
on the benchmark model that was 125k page faults and 0.18 s of system time
per step, a third of the step's CPU time.

`keep_freed_memory` makes the block come from glibc's main heap and stay
there: large requests are served from the heap instead of `mmap`
(M_MMAP_MAX=0), the heap is never given back (M_TRIM_THRESHOLD), and JAX runs
single-device CPU computations on the calling thread
(`jax_cpu_enable_async_dispatch=False`), because the main heap serves the
main thread, while requests this large from a worker thread's arena always
fall back to `mmap`. XLA:CPU runs a computation on the calling thread only
if its inputs are ready when it is called: a batch just copied from numpy may
still be in flight, and the step would then run on a worker thread, so
`wait_for_inputs` waits for it first (the train step does). Each step then
reuses the pages of the one before.
The price: the process keeps its peak host memory until it exits, and the
Python thread waits for each CPU step (the input pipeline prefetches in its
own threads). Limiting glibc to one arena (M_ARENA_MAX=1) would avoid the
second change but serialises every thread's malloc, which made compilation
40 % slower.

`jaxmm.host.configure` calls it before JAX creates its CPU client, which reads
the dispatch setting once, and only where the CPU is the default backend; set
JAXMM_KEEP_FREED_MEMORY=0 to leave glibc and JAX at their defaults.
"""
import ctypes
import ctypes.util
import os

import jax

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # the largest int mallopt takes

ENV_VAR = "JAXMM_KEEP_FREED_MEMORY"


def _glibc():
  """The process's C library if it is glibc, else None (musl, macOS)."""
  name = ctypes.util.find_library("c")
  if name is None:
    return None
  libc = ctypes.CDLL(name)
  return libc if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> bool:
  """Makes XLA:CPU reuse the host memory of its previous run instead of unmapping it.

  Call it before the process's first JAX computation.

  Returns:
    True when the settings took effect; False when JAXMM_KEEP_FREED_MEMORY=0
    or the C library is not glibc.
  """
  if os.environ.get(ENV_VAR, "1") == "0":
    return False
  libc = _glibc()
  if libc is None:
    return False
  if libc.mallopt(_M_MMAP_MAX, 0) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) != 1:
    return False
  jax.config.update("jax_cpu_enable_async_dispatch", False)
  return True


def wait_for_inputs(tree):
  """Blocks until `tree`'s arrays are ready when XLA:CPU runs computations inline.

  Measured on the default config's step: a fresh batch passed straight from
  `jaxmm.parallel.global_batch` left 10k-107k page faults (0.17-0.35 s) per
  step, the same batch waited for first none (0.15 s). Returns `tree`; does
  nothing when computations are dispatched asynchronously (an accelerator, or
  a CPU that `keep_freed_memory` left at JAX's default), where waiting would
  only stall dispatch.
  """
  if jax.config.read("jax_cpu_enable_async_dispatch") or jax.default_backend() != "cpu":
    return tree
  return jax.block_until_ready(tree)
