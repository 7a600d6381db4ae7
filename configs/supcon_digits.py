"""SupCon (Khosla et al. 2020, eq. 2): the other views of an image and every view of an
image with the same label are positives.

On the bundled digits dataset (the digit's label), linear-probed on the
frozen encoder (configs/supcon_base.py):

  jaxmm train --config configs/supcon_digits.py --workdir /tmp/supcon_digits
"""
from jaxmm.configs import supcon_base


def get_config(arg: str = "small"):
  return supcon_base.get_config(arg, loss="supcon", dataset="digits")
