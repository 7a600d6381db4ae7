"""EDM (Karras et al. 2022): the diffusion default.

  jaxmm train --config configs/edm_shapes.py --workdir runs/edm_shapes
  jaxmm train --config configs/edm_shapes.py:dit --workdir runs/edm_shapes_dit
"""
from jaxmm.configs import diffusion_shapes


def get_config(arg: str = "unet"):
  return diffusion_shapes.get_config(arg, schedule="edm")
