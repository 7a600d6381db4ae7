"""jaxmm.host.xla_cpu: large convolutions leave YNNPACK for XLA's Eigen kernels."""
import os
import subprocess
import sys

import pytest

from jaxmm.host import xla_cpu

# Compiles one 3×3 convolution as large as the U-Net's (batch 64, 16×16, 32
# channels) and prints whether XLA:CPU made it a YNNPACK fusion.
_COMPILE_CONV = """
import sys
from jaxmm.host import xla_cpu
if sys.argv[1] == "set":
  assert xla_cpu.use_eigen_convolutions()
import jax, jax.numpy as jnp
conv = lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
text = jax.jit(conv).lower(jnp.ones((64, 16, 16, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
print("ynn" if "ynn_fusion" in text else "eigen")
"""


def _compiled_convolution(mode: str) -> str:
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _COMPILE_CONV, mode],
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=120,
                          check=True)
  return result.stdout.strip().splitlines()[-1]


def test_the_flag_moves_a_large_convolution_off_ynnpack():
  # Without the flag XLA:CPU picks YNNPACK for this convolution (on the AMD
  # EPYC the defaults were measured on), so the check below can fail; with it,
  # XLA compiles its own convolution.
  if _compiled_convolution("default") != "ynn":
    pytest.skip("XLA:CPU does not put this convolution on YNNPACK on this CPU")
  assert _compiled_convolution("set") == "eigen"


def test_appends_to_the_flags_already_set(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert xla_cpu.use_eigen_convolutions()
  assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                     "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
  monkeypatch.delenv("XLA_FLAGS")
  assert xla_cpu.use_eigen_convolutions()
  assert os.environ["XLA_FLAGS"] == xla_cpu.EIGEN_CONVOLUTIONS


def test_keeps_the_users_own_ynnpack_setting(monkeypatch):
  flags = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
  monkeypatch.setenv("XLA_FLAGS", flags)
  assert not xla_cpu.use_eigen_convolutions()
  assert os.environ["XLA_FLAGS"] == flags
