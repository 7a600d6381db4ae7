"""The evaluators of a diffusion run, as `config.evals` asks for them (`registry.EVALUATORS`).

Each is made as make(key, settings, parts) and called as evaluate(params,
step) -> {metric: value}; each samples through `parts.sample`
(`jaxmm.runs.sampling.make_sampler`, as `jaxmm sample` does) with the params
of `parts.variables`, the first parameter average of `config.ema` (the
params when there is none):

  sample_grid  a PNG of samples under workdir/samples/NAME/, one row per class
  judge        samples of every (shape, colour) pair scored by a trained
               image-text run (`jaxmm.evaluators.judge`), guided as its settings
               say: classifier-free, or autoguidance by `guide.run`, on an interval
  two_sample   MMD² between samples of the 2-D toy and exact draws of
               `jaxmm.diffusion.mixture_2d()`
"""
import logging

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import analysis
from jaxmm import diffusion
from jaxmm import errors
from jaxmm import models
from jaxmm import parallel
from jaxmm.evaluators import judge as judge_lib
from jaxmm.evaluators import sample_grid
from jaxmm.runs import sampling

log = logging.getLogger("jaxmm")


def make_sample_grid(key, settings, parts):
  """evaluate(params, step): a PNG grid of samples, one row per class of the first label, at
  workdir/samples/NAME/step_N.png (key = 'evals.NAME')."""
  name = key.rpartition(".")[2]
  config = parts.config
  labels, columns = sampling.grid_labels(tuple(config.model.num_classes), settings.per_row)
  num = settings.rows * columns if labels is None else len(labels)

  def evaluate(params, step):
    images = parts.sample(params,
                          jax.random.key(config.seed),
                          None if labels is None else jnp.asarray(labels),
                          num,
                          sampler=settings.sampler,
                          num_steps=settings.num_steps,
                          guidance=settings.guidance)
    if parts.workdir is not None:
      sample_grid.write_png(sample_grid.grid_path(parts.workdir, name, step),
                            parallel.to_host(images), columns)
    return {}

  return evaluate


def guided_sampler(key, settings, parts):
  """(sample, keyword arguments) that sample as `settings` guide: `parts.sample`, or with
  `settings.guide.run` a sampler autoguided by that run (its `step` and average `ema`), and
  the interval `settings.guidance_interval`; every setting checked before anything compiles."""
  interval = diffusion.check_interval(settings.get("guidance_interval"),
                                      f"{key}.guidance_interval")
  guide = settings.get("guide") or {}
  if guide.get("run") is None:
    return parts.sample, dict(interval=interval)
  try:
    guide_run = analysis.load_run(guide.run, guide.get("step"), mesh=parts.mesh)
  except (FileNotFoundError, ValueError) as e:
    raise errors.UserError(f"{key}.guide.run={guide.run!r}: {e}") from e
  sampling.check_guide(parts.config, guide_run.config, f"{key}.guide.run")
  guide_params = sampling.choose_params(guide_run, guide.get("ema"), f"{key}.guide.ema")
  sample = sampling.make_sampler(models.get_model(parts.config.model), parts.config,
                                 guide_run.model)
  return sample, dict(interval=interval, guide_params=guide_params)


def make_judge(key, settings, parts):
  """evaluate(params, step): samples of every (shape, colour) pair judged by a trained
  image-text run (`settings.run`): conditional accuracy overall and on the held-out
  pairs, and the FD to the real test images in the judge's image features.

  With `settings.from_sigmas` (e.g. (0.3, 1.0, 4.0)), the same number of test
  images are also noised to each σ and denoised with their own labels, and judged
  (`from_sigma_<σ>/conditional_accuracy/*`). Accuracy already low from a
  small σ means the model loses the labels in drawing the image, at low noise;
  accuracy that falls only from larger σ, in deciding them, at high noise. The
  σ is traced, so every σ shares one compiled sampler.

  `settings.guide` (run, step, ema) makes the guidance autoguidance by that run,
  and `settings.guidance_interval` (lo, hi) limits it to lo < σ <= hi
  (`guided_sampler`).
  """
  config = parts.config
  from_sigmas = tuple(settings.get("from_sigmas", ()))
  sigma_min = diffusion.schedule_from_config(config.diffusion).sigma_min
  if any(
      isinstance(s, bool) or not isinstance(s, (int, float)) or s < sigma_min for s in from_sigmas):
    raise errors.UserError(f"{key}.from_sigmas={from_sigmas!r} must hold noise levels σ of "
                           f"at least the schedule's sigma_min={sigma_min:g}, e.g. (0.3, 1.0, 4.0)")
  if from_sigmas and settings.sampler == "unipc":
    raise errors.UserError(f"{key}.from_sigmas denoises from each σ with one compiled "
                           "sampler, and 'unipc' needs its σ grid before compiling; set "
                           f"{key}.sampler to another sampler, e.g. 'heun'")
  sample, guide_kw = guided_sampler(key, settings, parts)
  if settings.run is None:
    log.warning("%s.run is None: no judge; set --config.%s.run to a trained image-text run, "
                "e.g. runs/siglip_shapes from `make train`", key, key)
    return lambda params, step: {}
  judge = judge_lib.make_judge(settings.run, mesh=parts.mesh, config_key=key)
  reference = judge_lib.real_image_features(judge, config.data, split=config.data.eval_split)
  pairs = np.array([(s, c) for s in range(config.model.num_classes[0])
                    for c in range(config.model.num_classes[1])], np.int32)
  labels = np.repeat(pairs, settings.per_pair, axis=0)
  if from_sigmas:  # the first len(labels) test images, whole on every process
    batch = parallel.gather_rows(next(iter(parts.eval_batches(config.data.eval_split,
                                                              len(labels)))))
    real_images = jnp.asarray(batch["image"][batch["mask"]])
    real_labels = np.stack([batch[k] for k in config.data.label_keys],
                           axis=-1).astype(np.int32)[batch["mask"]]

  def judged_samples(params, labels, **start_kw):
    """Samples [N, ...] of labels [N, K] with the judge's sampler settings, on the host;
    start_kw: `start` and `sigma_max` to denoise given images from that σ."""
    return parallel.to_host(
        sample(params,
               jax.random.key(config.seed + 1),
               jnp.asarray(labels),
               len(labels),
               sampler=settings.sampler,
               num_steps=settings.num_steps,
               guidance=settings.guidance,
               **guide_kw,
               **start_kw))

  def evaluate(params, step):
    del step
    images = judged_samples(params, labels)
    results = judge_lib.judge_samples(judge, images, labels[:, 0], labels[:, 1], reference)
    results.update(judge_lib.judge_held_out(judge, images, labels[:, 0], labels[:, 1]))
    for sigma in from_sigmas:
      denoised = judged_samples(params,
                                real_labels,
                                start=real_images,
                                sigma_max=float(sigma))
      scores = judge_lib.judge_samples(judge, denoised, real_labels[:, 0], real_labels[:, 1])
      results.update({f"from_sigma_{sigma:g}/{k}": v for k, v in scores.items()})
    return {k: float(v) for k, v in results.items()}

  return evaluate


def make_two_sample(key, settings, parts):
  """evaluate(params, step): MMD² (`diffusion.mmd2`) between samples of the toy and exact
  samples of `diffusion.mixture_2d()`; 0 in expectation when they agree."""
  del key
  seed = parts.config.seed
  truth = diffusion.mixture_2d().sample(jax.random.key(seed + 2), settings.num)

  def evaluate(params, step):
    del step
    samples = parallel.to_host(
        parts.sample(params,
                     jax.random.key(seed + 1),
                     None,
                     settings.num,
                     sampler=settings.sampler,
                     num_steps=settings.num_steps))
    return {"mmd2": float(diffusion.mmd2(samples, truth))}

  return evaluate
