"""SigLIP (Zhai et al. 2023) on the shapes dataset: the default image-text run.

  jaxmm train --config configs/siglip_shapes.py --workdir /tmp/siglip
  jaxmm train --config configs/siglip_shapes.py:base --workdir runs/siglip_b16
  jaxmm sweep --config configs/siglip_shapes.py --workdir runs/siglip_lr
"""
from jaxmm import losses
from jaxmm import sweeps
from jaxmm.configs import image_text_shapes


def get_config(arg: str = "small"):
  # Logit scale 10 and bias -10 as in the paper (Zhai et al. 2023, Algorithm 1):
  # the bias keeps the many negative pairs from dominating the first steps.
  return image_text_shapes.get_config(arg,
                                      loss="siglip",
                                      init_log_scale=losses.SIGLIP_INIT_LOG_SCALE,
                                      init_bias=losses.SIGLIP_INIT_BIAS,
                                      b2=0.95,
                                      eps=1e-8)


def get_sweep(arg: str = "small"):
  """The learning rate at half, one and two times the variant's, each with two seeds.

  Six runs; the spread between seeds says which differences between rates are real.
  """
  lr = get_config(arg).optim.lr
  return sweeps.product({"optim.lr": [lr / 2, lr, 2 * lr]}, seed=[0, 1])
