"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023) in the EDM form.

  jaxmm train --config configs/flow_shapes.py --workdir runs/flow_shapes
  jaxmm train --config configs/flow_shapes.py:dit --workdir runs/flow_shapes_dit
"""
from jaxmm.configs import diffusion_shapes


def get_config(arg: str = "unet"):
  return diffusion_shapes.get_config(arg, schedule="flow")
