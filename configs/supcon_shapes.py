"""SupCon (Khosla et al. 2020, eq. 2): the other views of an image and every view of an
image with the same label are positives.

On the bundled shapes dataset (the shape label), linear-probed on the frozen
encoder (configs/supcon_base.py):

  jaxmm train --config configs/supcon_shapes.py --workdir /tmp/supcon_shapes
"""
from jaxmm.configs import supcon_base


def get_config(arg: str = "small"):
  return supcon_base.get_config(arg, loss="supcon", dataset="shapes")
