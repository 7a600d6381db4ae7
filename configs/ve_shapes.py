"""VE, the NCSN / SMLD objective (Song & Ermon 2019; Song et al. 2021) in the EDM form.

  jaxmm train --config configs/ve_shapes.py --workdir runs/ve_shapes
  jaxmm train --config configs/ve_shapes.py:dit --workdir runs/ve_shapes_dit
"""
from jaxmm.configs import diffusion_shapes


def get_config(arg: str = "unet"):
  return diffusion_shapes.get_config(arg, schedule="ve")
