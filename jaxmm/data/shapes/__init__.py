"""The bundled `shapes` dataset: vocabularies, captions and its TFDS builder."""
from jaxmm.data.shapes.vocabulary import caption
from jaxmm.data.shapes.vocabulary import COLOURS
from jaxmm.data.shapes.vocabulary import HELD_OUT_PAIRS
from jaxmm.data.shapes.vocabulary import POSITIONS
from jaxmm.data.shapes.vocabulary import SHAPES
from jaxmm.data.shapes.vocabulary import SIZES
