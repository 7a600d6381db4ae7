"""The `shapes` dataset's attributes and captions, apart from its TFDS builder (no tfds import)."""
import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta", "orange", "white")
SIZES = ("small", "medium", "large")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
             "bottom right")

# Each colour is held out once and no shape more than twice, so every shape and
# every colour still occurs in train with other partners.
HELD_OUT_PAIRS = tuple((SHAPES[i % len(SHAPES)], COLOURS[i]) for i in range(len(COLOURS)))

_POSITION_PHRASES = {
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}


def _name(value, names):
  return names[value] if isinstance(value, (int, np.integer)) else value


def caption(shape, colour, size, position) -> str:
  """English caption, e.g. "a small red triangle in the top left".

  Each argument is a class name or its integer label.
  """
  shape, colour = _name(shape, SHAPES), _name(colour, COLOURS)
  size, position = _name(size, SIZES), _name(position, POSITIONS)
  return f"a {size} {colour} {shape} {_POSITION_PHRASES[position]}"
