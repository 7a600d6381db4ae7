"""Zero-shot tasks of the bundled datasets: class prompts and label keys.

For `shapes`, the prompts of a class are every caption the dataset can write
for it (all sizes, positions and other attributes), combined by 'max': an
image's class is read off its best-matching full caption.

For `digits`, the prompts of a digit are its captions in every phrasing the
dataset uses, combined by 'mean': they are rewordings of one another.
"""
import itertools

from jaxmm.data import digits
from jaxmm.data import shapes
from jaxmm.evaluators.zero_shot import ZeroShotTask


def _captions_where(keep) -> list[str]:
  return [
      shapes.caption(*attrs)
      for attrs in itertools.product(shapes.SHAPES, shapes.COLOURS, shapes.SIZES, shapes.POSITIONS)
      if keep(*attrs)
  ]


def shapes_tasks() -> list[ZeroShotTask]:
  """Shape (6-way) and colour (8-way) on the test split, and the held-out
  (shape, colour) compositions classified among all pairs."""
  pairs = list(itertools.product(shapes.SHAPES, shapes.COLOURS))
  return [
      ZeroShotTask(
          name="shape",
          class_prompts=[_captions_where(lambda s, c, z, p, k=k: s == k) for k in shapes.SHAPES],
          labels=lambda b: b["shape"],
          ensemble="max"),
      ZeroShotTask(
          name="colour",
          class_prompts=[_captions_where(lambda s, c, z, p, k=k: c == k) for k in shapes.COLOURS],
          labels=lambda b: b["colour"],
          ensemble="max"),
      ZeroShotTask(
          name="held_out_pairs",
          class_prompts=[_captions_where(lambda s, c, z, p, k=k: (s, c) == k) for k in pairs],
          labels=lambda b: b["shape"] * len(shapes.COLOURS) + b["colour"],
          select=lambda b: b["held_out"].astype(bool),
          ensemble="max"),
  ]


def digits_tasks() -> list[ZeroShotTask]:
  """The digit (10-way) on the test split."""
  phrasings = range(len(digits.CAPTION_TEMPLATES))
  return [
      ZeroShotTask(name="digit",
                   class_prompts=[[digits.caption(label, i) for i in phrasings]
                                  for label in range(len(digits.DIGIT_NAMES))],
                   labels=lambda b: b["label"],
                   ensemble="mean")
  ]


TASKS = {"shapes": shapes_tasks, "digits": digits_tasks}


def zero_shot_tasks(dataset: str) -> list[ZeroShotTask]:
  if dataset not in TASKS:
    raise ValueError(f"no zero-shot prompts for dataset {dataset!r} (known: {sorted(TASKS)}); "
                     "add its tasks to jaxmm.evaluators.prompts.TASKS, or train without "
                     "evaluation: --config.eval_every=0")
  return TASKS[dataset]()
