"""Cross-entropy on the encoder's logits, the supervised baseline of Khosla et al. (2020).

On the bundled digits dataset (the digit's label), linear-probed on the
frozen encoder (configs/supcon_base.py):

  jaxmm train --config configs/ce_digits.py --workdir /tmp/ce_digits
"""
from jaxmm.configs import supcon_base


def get_config(arg: str = "small"):
  return supcon_base.get_config(arg, loss="ce", dataset="digits")
