"""The evaluators of a diffusion run, as `config.eval` names them (`EVALUATORS`).

Each is made as make(model, config, mesh, workdir) and called as
evaluator(state, step) -> {metric: value}; each samples with the first
parameter average of `config.ema` (the params when there is none), through
`jaxmm.runs.sampling.make_sampler`, as `jaxmm sample` does:

  sample_grid  a PNG of samples under workdir/samples/, one row per class
  judge        samples of every (shape, colour) pair scored by a trained
               image-text run (`jaxmm.evaluators.judge`), into judge.json
  two_sample   MMD² between samples of the 2-D toy and exact draws of
               `jaxmm.diffusion.mixture_2d()`, into two_sample.json
"""
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import data
from jaxmm import diffusion
from jaxmm import errors
from jaxmm import parallel
from jaxmm.evaluators import judge as judge_lib
from jaxmm.evaluators import sample_grid
from jaxmm.evaluators import zero_shot
from jaxmm.runs import sampling

log = logging.getLogger("jaxmm")

JUDGE_FILE = "judge.json"
TWO_SAMPLE_FILE = "two_sample.json"


def make_sample_grid_evaluator(model, config, mesh, workdir):
  """evaluator(state, step): a PNG grid of samples, one row per class of the first label."""
  del mesh
  sample = sampling.make_sampler(model, config)
  grid = config.eval.sample_grid
  labels, columns = sampling.grid_labels(tuple(config.model.num_classes), grid.per_row)
  num = grid.rows * columns if labels is None else len(labels)

  def evaluate(state, step):
    images = sample(sampling.eval_params(state, config),
                    jax.random.key(config.seed),
                    None if labels is None else jnp.asarray(labels),
                    num,
                    sampler=grid.sampler,
                    num_steps=grid.num_steps,
                    guidance=grid.guidance)
    sample_grid.write_png(sample_grid.grid_path(workdir, step), parallel.to_host(images), columns)
    return {}

  return evaluate


def make_judge_evaluator(model, config, mesh, workdir):
  """evaluator(state, step): samples of every (shape, colour) pair judged by a trained
  image-text run (`eval.judge.run`): conditional accuracy overall and on the held-out
  pairs, and the FD to the real test images in the judge's image features. Results go
  to TensorBoard and workdir/judge.json.

  With `eval.judge.from_sigmas` (e.g. (0.3, 1.0, 4.0)), the same number of test
  images are also noised to each σ and denoised with their own labels, and judged
  (`judge/from_sigma_<σ>/conditional_accuracy/*`). Accuracy already low from a
  small σ means the model loses the labels in drawing the image, at low noise;
  accuracy that falls only from larger σ, in deciding them, at high noise. The
  σ is traced, so every σ shares one compiled sampler.
  """
  settings = config.eval.judge
  from_sigmas = tuple(settings.get("from_sigmas", ()))
  sigma_min = diffusion.schedule_from_config(config.diffusion).sigma_min
  if any(
      isinstance(s, bool) or not isinstance(s, (int, float)) or s < sigma_min for s in from_sigmas):
    raise errors.UserError(f"eval.judge.from_sigmas={from_sigmas!r} must hold noise levels σ of "
                           f"at least the schedule's sigma_min={sigma_min:g}, e.g. (0.3, 1.0, 4.0)")
  if from_sigmas and settings.sampler == "unipc":
    raise errors.UserError("eval.judge.from_sigmas denoises from each σ with one compiled "
                           "sampler, and 'unipc' needs its σ grid before compiling; set "
                           "eval.judge.sampler to another sampler, e.g. 'heun'")
  if settings.run is None:
    log.warning("eval.judge.run is None: no judge; set --config.eval.judge.run to a "
                "trained image-text run, e.g. runs/siglip_shapes from `make train`")
    return lambda state, step: {}
  judge = judge_lib.make_judge(settings.run, mesh=mesh, config_key="eval.judge")
  reference = judge_lib.real_image_features(judge, config.data, split=config.data.eval_split)
  pairs = np.array([(s, c) for s in range(config.model.num_classes[0])
                    for c in range(config.model.num_classes[1])], np.int32)
  labels = np.repeat(pairs, settings.per_pair, axis=0)
  sample = sampling.make_sampler(model, config)
  if from_sigmas:  # the first len(labels) test images
    batch = next(iter(data.eval_batches(config.data, batch_size=len(labels))))
    real_images = jnp.asarray(batch["image"][batch["mask"]])
    real_labels = np.stack([batch[key] for key in config.data.label_keys],
                           axis=-1).astype(np.int32)[batch["mask"]]

  def judged_samples(state, labels, **start_kw):
    """Samples [N, ...] of labels [N, K] with the judge's sampler settings, on the host;
    start_kw: `start` and `sigma_max` to denoise given images from that σ."""
    return parallel.to_host(
        sample(sampling.eval_params(state, config),
               jax.random.key(config.seed + 1),
               jnp.asarray(labels),
               len(labels),
               sampler=settings.sampler,
               num_steps=settings.num_steps,
               guidance=settings.guidance,
               **start_kw))

  def evaluate(state, step):
    images = judged_samples(state, labels)
    results = judge_lib.judge_samples(judge, images, labels[:, 0], labels[:, 1], reference)
    results.update(judge_lib.judge_held_out(judge, images, labels[:, 0], labels[:, 1]))
    for sigma in from_sigmas:
      denoised = judged_samples(state,
                                real_labels,
                                start=real_images,
                                sigma_max=float(sigma))
      scores = judge_lib.judge_samples(judge, denoised, real_labels[:, 0], real_labels[:, 1])
      results.update({f"from_sigma_{sigma:g}/{k}": v for k, v in scores.items()})
    results = {f"judge/{k}": float(v) for k, v in results.items()}
    if workdir is not None and jax.process_index() == 0:
      zero_shot.write_results(os.path.join(workdir, JUDGE_FILE), step, results)
    return results

  return evaluate


def make_two_sample_evaluator(model, config, mesh, workdir):
  """evaluator(state, step): MMD² (`diffusion.mmd2`) between samples of the toy and exact
  samples of `diffusion.mixture_2d()`; 0 in expectation when they agree."""
  del mesh
  settings = config.eval.two_sample
  truth = diffusion.mixture_2d().sample(jax.random.key(config.seed + 2), settings.num)
  sample = sampling.make_sampler(model, config)

  def evaluate(state, step):
    samples = parallel.to_host(
        sample(sampling.eval_params(state, config),
               jax.random.key(config.seed + 1),
               None,
               settings.num,
               sampler=settings.sampler,
               num_steps=settings.num_steps))
    results = {"two_sample/mmd2": float(diffusion.mmd2(samples, truth))}
    if workdir is not None and jax.process_index() == 0:
      zero_shot.write_results(os.path.join(workdir, TWO_SAMPLE_FILE), step, results)
    return results

  return evaluate


# The evaluators a config may name under `eval` (their settings beside).
EVALUATORS = {
    "sample_grid": make_sample_grid_evaluator,
    "judge": make_judge_evaluator,
    "two_sample": make_two_sample_evaluator,
}
