"""jaxmm.host: keep_freed_memory stops a jitted step's large temporary block from page-faulting,
and the CPU-only settings are made only where the CPU is JAX's default backend."""
import os
import subprocess
import sys

import jax
import pytest

from jaxmm import host
from jaxmm.host import memory as host_memory

# Runs a jitted pair of matmuls whose 64 MiB intermediate is a temporary, five
# times after a warmup, and prints the minor page faults of those five runs.
# 'same' passes the same input array every time; 'fresh' copies a new 2 MiB
# input from numpy before each run and waits for it, as the train step does.
_SCRIPT = """
import resource, sys
from jaxmm.host import memory as host_memory
host_memory.keep_freed_memory()
import jax, jax.numpy as jnp, numpy as np
step = jax.jit(lambda x, w: jnp.sum((x @ w) @ w.T))
x_host, w = np.ones((2048, 256), np.float32), jnp.ones((256, 8192))
x = jnp.asarray(x_host)
step(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  if sys.argv[1] == "fresh":
    x = host_memory.wait_for_inputs(jax.device_put(x_host))
  step(x, w).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")


def _page_faults(keep: str, inputs: str) -> int:
  env = dict(os.environ, JAX_PLATFORMS="cpu", **{host_memory.ENV_VAR: keep})
  out = subprocess.run([sys.executable, "-c", _SCRIPT, inputs],
                       env=env,
                       capture_output=True,
                       text=True,
                       check=True)
  return int(out.stdout.split()[-1])


# 5 runs x 64 MiB of fresh 4 KiB pages: the page faults of glibc's defaults
# when every run maps its temporary block anew.
_FRESH_PAGES = 5 * 64 * 2**20 // 4096


@linux_only
@pytest.mark.parametrize("inputs", ["same", "fresh"])
def test_keep_freed_memory_stops_page_faults_of_step_temporaries(inputs):
  default = _page_faults("0", inputs)
  if default < _FRESH_PAGES // 8:
    # The premise does not hold here: this machine's kernel or glibc already
    # keeps most of the block mapped (e.g. transparent huge pages), so the
    # defaults leave little for keep_freed_memory to save.
    pytest.skip(f"glibc's defaults page-faulted {default} times, under 2 of the 5 runs' "
                f"{_FRESH_PAGES} fresh pages: nothing to compare on this machine")
  # Kept memory faults at most a quarter as often (fresh inputs add their own
  # pages, 5 x 2 MiB; other processes' load adds a few hundred).
  kept = _page_faults("1", inputs)
  assert kept < default // 4, (kept, default)


def test_opt_out_leaves_malloc_alone(monkeypatch):
  monkeypatch.setenv(host_memory.ENV_VAR, "0")
  assert host_memory.keep_freed_memory() is False


@pytest.fixture
def jax_platforms():
  """set(value) sets jax.config.jax_platforms (what JAX_PLATFORMS sets) until the test ends."""
  before = jax.config.jax_platforms
  yield lambda value: jax.config.update("jax_platforms", value)
  jax.config.update("jax_platforms", before)


@pytest.mark.parametrize("platforms, plugins, cpu", [
    ("cpu", ["jax_plugins.xla_cuda12"], True),
    ("cpu,cuda", [], True),
    ("cuda,cpu", [], False),
    ("tpu", [], False),
    (None, [], True),
    (None, ["jax_plugins.xla_cuda12"], False),
    (None, ["libtpu"], False),
])
def test_cpu_settings_only_where_the_cpu_is_the_default_backend(jax_platforms, monkeypatch,
                                                                 platforms, plugins, cpu):
  jax_platforms(platforms)
  monkeypatch.setattr(host, "accelerator_plugins", lambda: plugins)
  assert host.cpu_is_default() is cpu
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv(host_memory.ENV_VAR, "0")  # leaves this process's malloc as it is
  assert host.configure() is cpu
  assert bool(os.environ["XLA_FLAGS"]) is cpu
