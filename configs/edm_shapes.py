"""EDM (Karras et al. 2022): the diffusion default.

  jaxmm train --config configs/edm_shapes.py --workdir runs/edm_shapes
  jaxmm train --config configs/edm_shapes.py:dit --workdir runs/edm_shapes_dit
  jaxmm sweep --config configs/edm_shapes.py --workdir runs/edm_dropout_lr

The default and its autoguidance guide (docs/guidance.md), then samples of the pair:

  make train-guided
  jaxmm sample --run runs/edm_shapes --guide-run runs/edm_shapes_guide --guidance 2 --out s.png
"""
from jaxmm import sweeps
from jaxmm.configs import diffusion_shapes

# The guide of autoguidance (Karras et al. 2024): the same U-Net with half the
# channels (a quarter of the parameters: a convolution's weights grow with
# channels²) and a quarter of the steps, so that its errors are those of the
# default, only larger; the paper's best guides are that much smaller and shorter.
GUIDE_CHANNELS_FRACTION = 0.5
GUIDE_STEPS_FRACTION = 0.25


def get_config(arg: str = "unet"):
  if arg == "guide":
    return guide_config()
  return diffusion_shapes.get_config(arg, schedule="edm")


def guide_config():
  """The default's U-Net and training, smaller and shorter (GUIDE_*_FRACTION)."""
  config = diffusion_shapes.get_config("unet", schedule="edm")
  config.model.channels = int(config.model.channels * GUIDE_CHANNELS_FRACTION)
  config.total_steps = int(config.total_steps * GUIDE_STEPS_FRACTION)
  config.checkpoint_every = config.eval_every = config.total_steps
  return config


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
