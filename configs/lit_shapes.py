"""LiT (Zhai et al. 2022, "LiT: Zero-shot transfer with locked-image text tuning") on shapes.

The image tower and its projection start from the SigLIP run that `make train`
writes (runs/siglip_shapes) and stay locked; only the text tower, its
projection and the loss's scale and bias learn to meet the fixed image
embeddings. Run `make train` first:

  jaxmm train --config configs/lit_shapes.py --workdir runs/lit_shapes
"""
from jaxmm.configs import siglip_shapes

# The locked part of the model: copied from the SigLIP run and frozen.
LOCKED = ("image_tower", "image_proj")


def get_config(arg: str = "small"):
  """The SigLIP config of variant `arg`, with its image side copied and frozen."""
  config = siglip_shapes.get_config(arg)
  config.init_from.workdir = "runs/siglip_shapes"
  config.init_from.subtrees = {name: name for name in LOCKED}
  config.optim.partition = tuple((f"{name}/.*", "frozen") for name in LOCKED)
  return config
