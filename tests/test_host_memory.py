"""keep_freed_memory: a jitted step that needs a large temporary block stops page-faulting."""
import os
import subprocess
import sys

import pytest

from jaxmm import host_memory

# Runs a jitted pair of matmuls whose 64 MiB intermediate is a temporary, five
# times after a warmup, and prints the minor page faults of
# those five runs.
_SCRIPT = """
import resource
from jaxmm import host_memory
host_memory.keep_freed_memory()
import jax, jax.numpy as jnp
step = jax.jit(lambda x, w: jnp.sum((x @ w) @ w.T))
x, w = jnp.ones((8192, 256)), jnp.ones((256, 2048))
step(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  step(x, w).block_until_ready()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(keep: str) -> int:
  env = dict(os.environ, JAX_PLATFORMS="cpu", **{host_memory.ENV_VAR: keep})
  out = subprocess.run([sys.executable, "-c", _SCRIPT],
                       env=env,
                       capture_output=True,
                       text=True,
                       check=True)
  return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_keep_freed_memory_stops_page_faults_of_step_temporaries():
  default = _page_faults("0")
  kept = _page_faults("1")
  # 5 runs x 64 MiB of fresh 4 KiB pages is about 80k faults with glibc's defaults.
  assert default > 20_000, default
  assert kept < 1_000, kept


def test_opt_out_leaves_malloc_alone(monkeypatch):
  monkeypatch.setenv(host_memory.ENV_VAR, "0")
  assert host_memory.keep_freed_memory() is False
