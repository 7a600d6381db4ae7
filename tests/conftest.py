"""Tests run JAX on the CPU with 8 simulated devices."""
import os

# Must happen before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  pylint: disable=wrong-import-position

assert jax.device_count() == 8, jax.devices()
