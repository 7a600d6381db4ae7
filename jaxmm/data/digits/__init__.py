"""The bundled `digits` dataset (scikit-learn's handwritten digits): captions, TFDS builder."""
from jaxmm.data.digits.digits_dataset_builder import caption
from jaxmm.data.digits.digits_dataset_builder import CAPTION_TEMPLATES
from jaxmm.data.digits.digits_dataset_builder import DIGIT_NAMES
