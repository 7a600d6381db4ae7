"""Runs XLA:CPU's convolutions on its Eigen kernels instead of YNNPACK.

XLA:CPU (jaxlib 0.10) hands large convolutions to YNNPACK fusions. The
diffusion U-Net's train step (configs/edm_shapes.py, batch 64) took 0.297 s
that way on a 2-core AMD EPYC (Zen 4) against 0.252 s with XLA's own Eigen
convolutions, while the SigLIP step (matmuls, which stay on YNNPACK) was
unchanged: 0.250 against 0.246 s (README, Diffusion). The flag below removes
convolutions, and only them, from the YNNPACK fusion types:

    --xla_cpu_experimental_ynn_fusion_type=-individual_convolution

XLA reads XLA_FLAGS when JAX starts its CPU backend, so `jaxmm.host.configure`
calls `use_eigen_convolutions` before the first JAX computation, where the CPU
is the default backend. A `xla_cpu_experimental_ynn_fusion_type` already in
XLA_FLAGS is the user's choice and is kept.
"""
import os

YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
EIGEN_CONVOLUTIONS = f"--{YNN_FUSION_FLAG}=-individual_convolution"


def use_eigen_convolutions() -> bool:
  """Adds EIGEN_CONVOLUTIONS to XLA_FLAGS; call it before the first JAX computation.

  Returns:
    True when the flag was added; False when XLA_FLAGS already sets the YNNPACK
    fusion types.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if YNN_FUSION_FLAG in flags:
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {EIGEN_CONVOLUTIONS}".strip()
  return True
