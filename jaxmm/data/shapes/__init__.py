"""The bundled `shapes` dataset: vocabularies, captions and its TFDS builder."""
from jaxmm.data.shapes.shapes_dataset_builder import caption
from jaxmm.data.shapes.shapes_dataset_builder import COLOURS
from jaxmm.data.shapes.shapes_dataset_builder import HELD_OUT_PAIRS
from jaxmm.data.shapes.shapes_dataset_builder import POSITIONS
from jaxmm.data.shapes.shapes_dataset_builder import SHAPES
from jaxmm.data.shapes.shapes_dataset_builder import SIZES
