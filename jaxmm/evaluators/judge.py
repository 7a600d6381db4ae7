"""Judging generated `shapes` images with a trained image-text run (CLIP / SigLIP).

A class-conditional generator is asked for images of (shape, colour) labels.
A judge, the two-tower of a finished `image_text` run, reads them back:

- conditional accuracy: the fraction of images whose zero-shot class (the
  prompts of `jaxmm.evaluators.prompts`, combined by 'max') is the requested
  one, for shape (6-way), colour (8-way) and the (shape, colour) pair
  (48-way), and separately on `shapes.HELD_OUT_PAIRS`, the pairs the judge
  never saw in training;
- FD: the Fréchet distance (`frechet.frechet_distance`) between the judge's
  image embeddings of generated and of real test images, FID's formula in the
  two-tower's embedding space rather than Inception's.

  judge = make_judge("runs/siglip_shapes")
  reference = real_image_features(judge)
  judge_samples(judge, images, shape_labels, colour_labels, reference)
  judge_held_out(judge, images, shape_labels, colour_labels)
"""
from collections.abc import Mapping

import jax
import numpy as np

from jaxmm import analysis
from jaxmm import data
from jaxmm import errors
from jaxmm import parallel
from jaxmm.data import preprocess
from jaxmm.data import shapes
from jaxmm.evaluators import frechet
from jaxmm.evaluators import prompts
from jaxmm.evaluators import zero_shot
from jaxmm.runs import run_files

# The judge's classes, by the zero-shot task that supplies their prompts and labels;
# 'held_out_pairs' classifies among all 48 (shape, colour) pairs (its selection of the held-out
# examples is not used here).
_PROMPT_TASKS = {"shape": "shape", "colour": "colour", "pair": "held_out_pairs"}


class Judge:
  """A trained two-tower's image embeddings and zero-shot (shape, colour, pair) classes.

  The prompts are embedded once, here. Images go through the run's image
  tower (`Run.embed_images`) `batch_size` at a time, the batch split over the
  mesh's batch axes. With several processes, every process passes the same
  images and gets every result.

  Attributes:
    run: the restored run (config, step, params on its mesh).
    batch_size: images (and prompts) per encoder call.
    tasks: 'shape', 'colour', 'pair' -> the ZeroShotTask whose prompts and
      labels define that class.
  """

  def __init__(self, run: analysis.Run, batch_size: int):
    self.run, self.batch_size = run, batch_size
    by_name = {task.name: task for task in prompts.zero_shot_tasks("shapes")}
    self.tasks = {name: by_name[source] for name, source in _PROMPT_TASKS.items()}
    texts = sorted({p for task in self.tasks.values() for ps in task.class_prompts for p in ps})
    index = {text: i for i, text in enumerate(texts)}
    embeddings = run.embed_texts(texts, batch_size=batch_size)
    self._class_prompts = {
        name: [embeddings[[index[p] for p in ps]] for ps in task.class_prompts]
        for name, task in self.tasks.items()
    }

  def image_features(self, images: np.ndarray) -> np.ndarray:
    """Unit-norm image embeddings float32 [N, E] of images float [N, H, W, 3] in [-1, 1].

    Images whose size is not the run's data.image_size are first resized with
    the input pipeline's own antialiased bilinear filter (`preprocess.resize`),
    the one that real images go through.
    """
    images = preprocess.resize(np.asarray(images, np.float32), self.run.config.data.image_size)
    return self.run.embed_images(images, batch_size=self.batch_size)

  def classify_features(self, features: np.ndarray) -> dict[str, np.ndarray]:
    """'shape', 'colour', 'pair' -> int class indices [N] of image embeddings [N, E].

    Each is argmax_c of the class scores of the zero-shot evaluator
    (`zero_shot.class_scores` with its task's ensemble, 'max'). 'pair' indexes
    the 48 (shape, colour) pairs as shape · len(COLOURS) + colour.
    """
    predicted = {}
    for name, task in self.tasks.items():
      scores = zero_shot.class_scores(features, self._class_prompts[name], task.ensemble)
      predicted[name] = np.argmax(scores, axis=-1)
    return predicted

  def classify(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """'shape', 'colour', 'pair' -> int class indices [N] of images [N, H, W, 3] in [-1, 1]."""
    return self.classify_features(self.image_features(images))

  def labels(self, shape_labels: np.ndarray, colour_labels: np.ndarray) -> dict[str, np.ndarray]:
    """'shape', 'colour', 'pair' -> the requested class [N] of each (shape, colour) label [N]."""
    batch = {"shape": np.asarray(shape_labels), "colour": np.asarray(colour_labels)}
    return {name: task.labels(batch) for name, task in self.tasks.items()}


def make_judge(run_dir: str,
               *,
               mesh: jax.sharding.Mesh | None = None,
               batch_size: int = 256,
               config_key: str = "evals.judge") -> Judge:
  """The judge of the latest checkpoint of the image-text run in `run_dir`.

  Args:
    run_dir: a workdir of `jaxmm train` with an `image_text` experiment.
    mesh: default: every device, split over the batch (`{'data': -1}`).
    batch_size: images per encoder call; a multiple of the mesh's batch shards.
    config_key: the caller's config group, named in errors as
      `<config_key>.run` and `<config_key>.batch_size`.

  Raises:
    UserError: `run_dir` holds no run, or not an image-text run on `shapes`,
      or `batch_size` does not split over the mesh.
  """
  mesh = parallel.make_mesh({"data": -1}) if mesh is None else mesh
  parallel.check_batch_size(batch_size, mesh, f"{config_key}.batch_size")
  try:
    config = run_files.run_config(run_dir)
  except FileNotFoundError as e:
    raise errors.UserError(f"{config_key}.run: {e}; train an image-text run with `make train` "
                           "(it writes runs/siglip_shapes) and set "
                           f"--config.{config_key}.run to its workdir") from e
  if config.experiment != "image_text":
    raise errors.UserError(
        f"{config_key}.run={run_dir!r} is an experiment={config.experiment!r} run, but the "
        "judge needs an image-text two-tower (experiment='image_text'); train one with `make "
        f"train` and set --config.{config_key}.run to its workdir")
  if config.data.name != "shapes":
    raise errors.UserError(
        f"{config_key}.run={run_dir!r} was trained on data.name={config.data.name!r}, but "
        "the judge reads `shapes` images; set --config."
        f"{config_key}.run to a run trained on 'shapes' (`make train` writes one)")
  run = analysis.load_run(run_dir, mesh=mesh)
  return Judge(run, batch_size)


def real_image_features(judge: Judge,
                        data_config: Mapping | None = None,
                        split: str = "test") -> np.ndarray:
  """The judge's image embeddings [N, E] of every real image of `split`.

  `data_config` says where the dataset is (default: the judge run's
  `config.data`); its pipeline preprocesses the images, as in evaluation.
  """
  data_config = judge.run.config.data if data_config is None else data_config
  batches = data.eval_batches(data_config, split=split, batch_size=judge.batch_size)
  return np.concatenate([judge.image_features(batch["image"][batch["mask"]]) for batch in batches])


def judge_samples(judge: Judge,
                  images: np.ndarray,
                  shape_labels: np.ndarray,
                  colour_labels: np.ndarray,
                  reference_features: np.ndarray | None = None) -> dict[str, float]:
  """How well images [N, H, W, 3] in [-1, 1] show their requested labels [N].

  Returns 'conditional_accuracy/shape', '/colour' and '/pair': the fraction
  of images whose predicted class (`Judge.classify`) is the requested one;
  and 'fd', the Fréchet distance between the images' embeddings and
  `reference_features` [M, E] (e.g. `real_image_features(judge)`), when given.
  """
  features = judge.image_features(images)
  predicted = judge.classify_features(features)
  requested = judge.labels(shape_labels, colour_labels)
  results = {
      f"conditional_accuracy/{name}": float(np.mean(predicted[name] == requested[name]))
      for name in predicted
  }
  if reference_features is not None:
    results["fd"] = frechet.frechet_distance(features, reference_features)
  return results


def held_out_mask(shape_labels: np.ndarray, colour_labels: np.ndarray) -> np.ndarray:
  """bool [N]: which (shape, colour) labels [N] are one of `shapes.HELD_OUT_PAIRS`."""
  held_out = np.zeros((len(shapes.SHAPES), len(shapes.COLOURS)), bool)
  for shape, colour in shapes.HELD_OUT_PAIRS:
    held_out[shapes.SHAPES.index(shape), shapes.COLOURS.index(colour)] = True
  return held_out[np.asarray(shape_labels), np.asarray(colour_labels)]


def judge_held_out(judge: Judge, images: np.ndarray, shape_labels: np.ndarray,
                   colour_labels: np.ndarray) -> dict[str, float]:
  """`judge_samples`' accuracies over the images of held-out pairs only.

  Of images [N, H, W, 3] and their labels [N], scores those whose (shape,
  colour) is in `shapes.HELD_OUT_PAIRS` (never in the training split), as
  'conditional_accuracy/held_out_shape', '/held_out_colour' and
  '/held_out_pair'. Raises ValueError if there are none.
  """
  selected = held_out_mask(shape_labels, colour_labels)
  if not selected.any():
    raise ValueError(f"none of the {len(selected)} labels is a held-out pair "
                     f"{shapes.HELD_OUT_PAIRS}")
  results = judge_samples(judge,
                          np.asarray(images)[selected],
                          np.asarray(shape_labels)[selected],
                          np.asarray(colour_labels)[selected])
  return {key.replace("accuracy/", "accuracy/held_out_"): value for key, value in results.items()}
