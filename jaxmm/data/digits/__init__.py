"""The bundled `digits` dataset (scikit-learn's handwritten digits): captions, TFDS builder."""
from jaxmm.data.digits.captions import caption
from jaxmm.data.digits.captions import CAPTION_TEMPLATES
from jaxmm.data.digits.captions import DIGIT_NAMES
