"""EDM (Karras et al. 2022): the diffusion default.

  jaxmm train --config configs/edm_shapes.py --workdir runs/edm_shapes
  jaxmm train --config configs/edm_shapes.py:dit --workdir runs/edm_shapes_dit
  jaxmm sweep --config configs/edm_shapes.py --workdir runs/edm_dropout_lr
"""
from jaxmm import sweeps
from jaxmm.configs import diffusion_shapes


def get_config(arg: str = "unet"):
  return diffusion_shapes.get_config(arg, schedule="edm")


def get_sweep(arg: str = "unet"):
  """Classifier-free guidance's label dropout (Ho & Salimans 2022: 0.1-0.2) against the lr.

  Six runs. More dropout trains the unconditional denoiser that guidance
  extrapolates from, at the cost of conditional steps; with a judge
  (`--config.evals.judge.run=runs/siglip_shapes`) the evaluators score
  samples at guidance 2, so its accuracy and FD show the trade-off.
  """
  lr = get_config(arg).optim.lr
  return sweeps.product({"diffusion.label_dropout": [0.1, 0.2]},
                        {"optim.lr": [lr / 2, lr, 2 * lr]})
