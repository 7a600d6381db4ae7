"""CLIP (Radford et al. 2021) on the shapes dataset, the softmax baseline to SigLIP.

  jaxmm train --config configs/clip_shapes.py --workdir /tmp/clip
  jaxmm train --config configs/clip_shapes.py:base --config.loss.variant=ring --workdir runs/clip
"""
from jaxmm.configs import image_text_shapes
from jaxmm import losses


def get_config(arg: str = "small"):
  # CLIP's initial temperature 0.07 (logit scale 1/0.07) and no bias; Adam's
  # beta2 = 0.98 and eps = 1e-6 as the paper trained its ViTs (Radford et al. 2021).
  return image_text_shapes.get_config(arg,
                                      loss="clip",
                                      init_log_scale=losses.CLIP_INIT_LOG_SCALE,
                                      init_bias=None,
                                      b2=0.98,
                                      eps=1e-6)
