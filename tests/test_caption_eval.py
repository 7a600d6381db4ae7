"""The caption evaluator's reading of captions, checked by hand."""
import numpy as np

from jaxmm.data import shapes
from jaxmm.evaluators import captioning


def test_named_class_prefers_the_longest_name_and_refuses_ties():
  positions = shapes.POSITIONS
  assert captioning.named_class("a small red cross in the top left", positions) == 0
  assert captioning.named_class("a small red cross at the top", positions) == 1
  assert captioning.named_class("a small red cross on the left", positions) == 3
  assert captioning.named_class("a small red cross", positions) == -1
  # Two names of one length: ambiguous, so wrong whatever the label.
  assert captioning.named_class("a red or blue cross", shapes.COLOURS) == -1
  # Whole words only: 'starry' names no star.
  assert captioning.named_class("a starry square", shapes.SHAPES) == 1


def test_caption_scores_by_hand():
  references = [shapes.caption(0, 0, 0, 0), shapes.caption(4, 2, 1, 8), shapes.caption(5, 7, 2, 1)]
  generated = [references[0], "a medium blue star in the bottom left", "a large white"]
  labels = {"shape": np.array([0, 4, 5]), "colour": np.array([0, 2, 7]),
            "size": np.array([0, 1, 2]), "position": np.array([0, 8, 1]),
            "held_out": np.array([False, True, True])}
  names = {"shape": shapes.SHAPES, "colour": shapes.COLOURS, "size": shapes.SIZES,
           "position": shapes.POSITIONS}
  scores = captioning.caption_scores(generated, references, labels, names)
  # Shape: right, right, missing; position: right, 'bottom left' for 'bottom right', missing.
  assert scores == {"shape_accuracy": 2 / 3, "colour_accuracy": 1.0, "size_accuracy": 1.0,
                    "position_accuracy": 1 / 3, "exact_match": 1 / 3,
                    "held_out_exact_match": 0.0}
