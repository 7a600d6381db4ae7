"""SimCLR (Chen et al. 2020): self-supervised, the only positive of a view is the other
view of its image; labels are used by the linear probe alone.

On the bundled digits dataset (the digit's label), linear-probed on the
frozen encoder (configs/supcon_base.py):

  jaxmm train --config configs/simclr_digits.py --workdir /tmp/simclr_digits
"""
from jaxmm.configs import supcon_base


def get_config(arg: str = "small"):
  return supcon_base.get_config(arg, loss="simclr", dataset="digits")
