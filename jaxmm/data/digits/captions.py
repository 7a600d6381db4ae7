"""The `digits` dataset's class names and captions, apart from its TFDS builder (no tfds import)."""
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_TEMPLATES = (
    "a photo of the digit {}",
    "a handwritten {}",
    "the number {}, written by hand",
    "a picture of a handwritten {}",
)


def caption(label: int, index: int) -> str:
  """The caption of digit `label` at position `index` of load_digits, e.g. 'a handwritten seven'."""
  return CAPTION_TEMPLATES[index % len(CAPTION_TEMPLATES)].format(DIGIT_NAMES[label])
