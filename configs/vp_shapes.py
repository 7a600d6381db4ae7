"""VP, the DDPM objective (Ho et al. 2020; Song et al. 2021) in the EDM form.

  jaxmm train --config configs/vp_shapes.py --workdir runs/vp_shapes
  jaxmm train --config configs/vp_shapes.py:dit --workdir runs/vp_shapes_dit
"""
from jaxmm.configs import diffusion_shapes


def get_config(arg: str = "unet"):
  return diffusion_shapes.get_config(arg, schedule="vp")
