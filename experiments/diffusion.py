"""Diffusion and flow-matching pretraining in the EDM form (Karras et al. 2022).

One trainer for the VP, VE, EDM and flow-matching objectives, chosen by
`diffusion.schedule`: a denoiser network (U-Net, DiT, or an MLP for 2-D data,
`config.model`) wrapped in the schedule's preconditioning and trained with
its noise distribution and loss weight (`jaxmm.diffusion.denoising_loss`).
Conditioning on integer labels (`data.label_keys`, e.g. shape and colour)
with classifier-free guidance: during training each example's labels are all
dropped (set to -1, the network's null token) with probability
`diffusion.label_dropout` (Ho & Salimans 2022), so one network learns the
conditional and the unconditional denoiser. Parameter averages
(`config.ema`) are what evaluation and `jaxmm sample` use by default.

The evaluators a config names under `eval` are in `EVALUATORS`.
"""
import dataclasses
import io
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm import data
from jaxmm import diffusion
from jaxmm import errors
from jaxmm import evaluators
from jaxmm import models
from jaxmm import parallel
from jaxmm import storage
from jaxmm.evaluators import sample_grid
from jaxmm.evaluators import zero_shot
from jaxmm.experiments import inputs
from jaxmm.train import ema as ema_lib

log = logging.getLogger("jaxmm")

JUDGE_FILE = "judge.json"
TWO_SAMPLE_FILE = "two_sample.json"


def make_schedule(config: ml_collections.ConfigDict):
  """`config.diffusion.schedule` with the hyperparameters in `diffusion.schedule_args` (runs
  saved without that key use the schedule's defaults)."""
  name, schedule_args = config.diffusion.schedule, config.diffusion.get("schedule_args") or {}
  schedule_cls = diffusion.SCHEDULES[errors.one_of("diffusion.schedule", name,
                                                   diffusion.SCHEDULES)]
  foreign = sorted(set(schedule_args) - {f.name for f in dataclasses.fields(schedule_cls)})
  if foreign:
    raise errors.UserError(f"diffusion.schedule_args has {', '.join(foreign)}, which the {name!r} "
                           f"schedule does not take; start from configs/{name}_shapes.py rather "
                           "than overriding diffusion.schedule, or remove those arguments")
  return diffusion.get_schedule(name, **schedule_args)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `UserError` for a diffusion value that cannot work, before anything is built."""
  make_schedule(config)
  rate = config.diffusion.label_dropout
  if not 0 <= rate < 1:
    raise errors.UserError(f"diffusion.label_dropout={rate!r} must lie in [0, 1), e.g. 0.1")
  if len(config.data.label_keys) != len(config.model.num_classes):
    raise errors.UserError(f"data.label_keys={tuple(config.data.label_keys)!r} and "
                           f"model.num_classes={tuple(config.model.num_classes)!r} must have one "
                           "entry per label")
  for name in config.eval:
    errors.one_of("evaluator name under eval", name, EVALUATORS)
  if config.eval_every and not ema_lib.names(config.ema):
    log.warning("no parameter average (config.ema); evaluation samples with the raw params")


# data.name of the 2-D toy: exact samples of `diffusion.mixture_2d()`, no dataset files.
MIXTURE_2D = "mixture_2d"


def example_shape(data_config) -> tuple[int, ...]:
  """The shape of one example: (2,) points of the toy, else (S, S, 3) images of data.image_size."""
  if data_config.name == MIXTURE_2D:
    return (2,)
  return (data_config.image_size, data_config.image_size, 3)


def examples(batch: dict) -> jax.Array:
  """The batch's examples x0: 'image' from the TFDS pipeline, 'x' from the mixture stream."""
  return batch["image"] if "image" in batch else batch["x"]


def labels_of(batch: dict, label_keys) -> jax.Array | None:
  """int32 [B, K]: the batch's labels named by `label_keys`, or None if there are none."""
  if not label_keys:
    return None
  return jnp.stack([batch[key] for key in label_keys], axis=-1).astype(jnp.int32)


def drop_labels(labels: jax.Array, rng: jax.Array, rate: float) -> jax.Array:
  """labels [B, K] with every label of an example set to -1 (dropped) with probability `rate`."""
  dropped = jax.random.bernoulli(rng, rate, labels.shape[:1])
  return jnp.where(dropped[:, None], -1, labels)


def make_loss_fn(model, config: ml_collections.ConfigDict):
  """loss_fn(params, model_state, batch, rng) -> (loss, metrics, model_state): the mean of
  λ(σ)·‖D(x0 + σn, σ) − x0‖² over the batch (jaxmm.diffusion.denoising_loss)."""
  schedule = make_schedule(config)
  label_keys, rate = tuple(config.data.label_keys), config.diffusion.label_dropout

  def loss_fn(params, model_state, batch, rng):
    drop_rng, noise_rng = jax.random.split(rng)
    labels = labels_of(batch, label_keys)
    if labels is not None and rate > 0:
      labels = drop_labels(labels, drop_rng, rate)
    net = lambda x, c_noise: model.apply({"params": params}, x, c_noise, labels)
    loss = jnp.mean(diffusion.denoising_loss(net, schedule, examples(batch), noise_rng))
    return loss, {}, model_state

  return loss_fn


def guided_denoiser(model, schedule, params, labels: jax.Array | None, guidance: float = 1.0):
  """D(x [B, ...], sigma [B]) -> x0_hat with classifier-free guidance of scale `guidance`.

  D_w = D(x; σ, ∅) + w·(D(x; σ, c) − D(x; σ, ∅)) (Ho & Salimans 2022, eq. 6 in
  the denoiser's x0 form): w = 1 is the conditional denoiser, w = 0 the
  unconditional one; labels None is an unconditional model.
  """
  net = lambda labels_: lambda x, c_noise: model.apply({"params": params}, x, c_noise, labels_)
  conditional = diffusion.denoiser(net(labels), schedule)
  if labels is None or guidance == 1.0:
    return conditional
  unconditional = diffusion.denoiser(net(jnp.full_like(labels, -1)), schedule)

  def guided(x, sigma):
    uncond = unconditional(x, sigma)
    return uncond + guidance * (conditional(x, sigma) - uncond)

  return guided


def make_sampler(model, config: ml_collections.ConfigDict):
  """sample(params, rng, labels [N, K] or None, num, *, sampler, num_steps, guidance,
  start=None, sigma_max=None) -> [N, ...].

  σ runs from sigma_max (default: the schedule's) down to the schedule's
  sigma_min; with `start` [N, ...] the samples are those examples noised to
  sigma_max and denoised (SDEdit, `jaxmm.diffusion.sample`). Jitted once per
  (num, sampler, num_steps, guidance, sigma_max, whether there is a start).
  """
  schedule = make_schedule(config)
  shape = example_shape(config.data)

  def sample(params,
             rng,
             labels,
             num,
             *,
             sampler="heun",
             num_steps=18,
             guidance=1.0,
             start=None,
             sigma_max=None):
    denoise = guided_denoiser(model, schedule, params, labels, guidance)
    return diffusion.sample(denoise,
                            rng, (num,) + shape,
                            sampler=sampler,
                            num_steps=num_steps,
                            sigma_min=schedule.sigma_min,
                            sigma_max=schedule.sigma_max if sigma_max is None else sigma_max,
                            start=start)

  return jax.jit(sample,
                 static_argnames=("num", "sampler", "num_steps", "guidance", "sigma_max"))


def eval_params(state, config: ml_collections.ConfigDict):
  """The parameters evaluation samples with: the first average of config.ema, else the params."""
  names = ema_lib.names(config.ema)
  return state.ema[names[0]] if names else state.params


def make_sample_grid_evaluator(model, config, mesh, workdir):
  """evaluator(state, step): a PNG grid of samples, one row per class of the first label."""
  del mesh
  sample = make_sampler(model, config)
  grid = config.eval.sample_grid
  labels, columns = sample_grid.grid_labels(tuple(config.model.num_classes), grid.per_row)
  num = grid.rows * columns if labels is None else len(labels)

  def evaluate(state, step):
    images = sample(eval_params(state, config),
                    jax.random.key(config.seed),
                    None if labels is None else jnp.asarray(labels),
                    num,
                    sampler=grid.sampler,
                    num_steps=grid.num_steps,
                    guidance=grid.guidance)
    sample_grid.write_png(sample_grid.grid_path(workdir, step), parallel.to_host(images), columns)
    return {}

  return evaluate


def choose_params(run, ema: str | None):
  """The parameters of `run` named by `ema`: an average's name, 'none' for the raw parameters,
  None for the run's first average (the raw parameters if it keeps none)."""
  if ema == "none":
    return run.params
  if ema is None:
    return run.ema[ema_lib.names(run.config.ema)[0]] if run.ema else run.params
  if ema not in run.ema:
    raise errors.UserError(f"--ema {ema}: the run keeps {sorted(run.ema) or 'no averages'}; "
                           "name one of them, or 'none' for the raw parameters")
  return run.ema[ema]


def _label_rows(labels, config) -> np.ndarray:
  """`labels` (K-tuples, a list or an array [N, K]) as int64 [N, K]; a `UserError` for any other
  shape or for values that are not integers."""
  keys = tuple(config.data.label_keys)
  try:
    rows = np.asarray(labels)
  except ValueError:  # rows of different lengths
    rows = None
  if rows is None or rows.ndim != 2 or rows.shape[1] != len(keys) or not len(rows):
    got = "rows of different lengths" if rows is None else f"shape {rows.shape}"
    raise errors.UserError(f"--labels: give {len(keys)} labels per sample ({', '.join(keys)}), "
                           f"e.g. --labels 2,5 or labels=[(2, 5)], an [N, {len(keys)}] array; got "
                           f"{got}")
  if not np.issubdtype(rows.dtype, np.integer):
    raise errors.UserError(f"--labels: give integer class indices, not {rows.dtype} values")
  return rows.astype(np.int64)


def _sample_labels(config, labels, num: int) -> np.ndarray | None:
  """int32 [num, K]: `labels` (K-tuples or an array [N, K]) or the class grid, cycled to `num`;
  None if the model is unconditional."""
  num_classes = tuple(config.model.num_classes)
  if not num_classes:
    if labels is not None:
      raise errors.UserError("--labels: the run's model is unconditional (model.num_classes=()); "
                             "give no labels")
    return None
  if labels is None:
    labels, _ = sample_grid.grid_labels(num_classes, 8)
  labels = _label_rows(labels, config)
  bad = (labels < 0) | (labels >= np.asarray(num_classes))
  if bad.any():
    row = labels[bad.any(axis=1)][0]
    ranges = ", ".join(f"{k} < {n}" for k, n in zip(config.data.label_keys, num_classes))
    raise errors.UserError(f"--labels {','.join(map(str, row))}: out of range; {ranges}")
  return np.resize(labels, (num, len(num_classes))).astype(np.int32)


def sample_run(run,
               *,
               ema: str | None = None,
               num: int = 64,
               sampler: str = "heun",
               num_steps: int = 18,
               guidance: float = 1.0,
               labels=None,
               seed: int = 0,
               compiled=None) -> tuple[np.ndarray, np.ndarray | None]:
  """(samples [num, ...], labels int32 [num, K] or None) of a run loaded by `load_run`.

  Every argument is checked before anything compiles. `ema` names the
  parameter average (default: the run's first; 'none': the raw parameters);
  `labels` are K-tuples (a list, or an int array [N, K]), cycled to `num`
  (default: one row per class).
  `compiled` is a `make_sampler(model, run.config)` to reuse across calls
  (default: a new one).
  """
  config = run.config
  if config.experiment != "diffusion":
    raise errors.UserError(f"--run {run.workdir} is an {config.experiment!r} run; jaxmm sample "
                           "needs a diffusion run")
  errors.integer_at_least("--num", num, 1)
  diffusion.nfe(sampler, num_steps)  # an unknown sampler or num_steps < 1 fails here
  if guidance != 1.0 and not config.diffusion.label_dropout:
    raise errors.UserError(f"--guidance {guidance}: the run was trained without label dropout "
                           "(diffusion.label_dropout=0), so it has no unconditional denoiser to "
                           "guide with; use --guidance 1")
  params = choose_params(run, ema)
  labels = _sample_labels(config, labels, num)
  sample = compiled or make_sampler(models.get_model(config.model), config)
  images = sample(params,
                  jax.random.key(seed),
                  None if labels is None else jnp.asarray(labels),
                  num,
                  sampler=sampler,
                  num_steps=num_steps,
                  guidance=guidance)
  return parallel.to_host(images), labels


def check_samples_path(path: str, config) -> None:
  """Raises `UserError` if `write_samples` cannot write samples of `config`'s data to `path`: a
  .png grid needs images, and the 2-D toy's points go to an .npz."""
  shape = example_shape(config.data)
  if path.endswith(".png") and len(shape) != 3:
    raise errors.UserError(f"--out {path}: the run's examples are points of shape {shape} "
                           f"(data.name={config.data.name!r}), not images, so there is no PNG "
                           "grid of them; end it in .npz")


def write_samples(path: str, images: np.ndarray, labels: np.ndarray | None, config) -> None:
  """A grid PNG (one row per class of the first label) or an .npz with 'images' and 'labels'."""
  if path.endswith(".npz"):
    arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
    npz = io.BytesIO()
    np.savez(npz, **arrays)
    storage.write_bytes(storage.absolute(path), npz.getvalue())
    return
  num_classes = tuple(config.model.num_classes)
  sample_grid.write_png(path, images, num_classes[1] if len(num_classes) > 1 else 8)


def make_judge_evaluator(model, config, mesh, workdir):
  """evaluator(state, step): samples of every (shape, colour) pair judged by a trained
  image-text run (`eval.judge.run`): conditional accuracy overall and on the held-out
  pairs, and the FD to the real test images in the judge's image features. Results go
  to TensorBoard and workdir/judge.json.

  With `eval.judge.from_sigmas` (e.g. (0.3, 1.0, 4.0)), the same number of test
  images are also noised to each σ and denoised with their own labels, and judged
  (`judge/from_sigma_<σ>/conditional_accuracy/*`). Accuracy already low from a
  small σ means the model loses the labels in drawing the image, at low noise;
  accuracy that falls only from larger σ, in deciding them, at high noise.
  """
  settings = config.eval.judge
  from_sigmas = tuple(settings.get("from_sigmas", ()))
  sigma_min = make_schedule(config).sigma_min
  if any(
      isinstance(s, bool) or not isinstance(s, (int, float)) or s < sigma_min for s in from_sigmas):
    raise errors.UserError(f"eval.judge.from_sigmas={from_sigmas!r} must hold noise levels σ of "
                           f"at least the schedule's sigma_min={sigma_min:g}, e.g. (0.3, 1.0, 4.0)")
  if settings.run is None:
    log.warning("eval.judge.run is None: no judge; set --config.eval.judge.run to a "
                "trained image-text run, e.g. runs/siglip_shapes from `make train`")
    return lambda state, step: {}
  judge = evaluators.make_judge(settings.run, mesh=mesh, config_key="eval.judge")
  reference = evaluators.real_image_features(judge, config.data, split=config.data.eval_split)
  pairs = np.array([(s, c) for s in range(config.model.num_classes[0])
                    for c in range(config.model.num_classes[1])], np.int32)
  labels = np.repeat(pairs, settings.per_pair, axis=0)
  sample = make_sampler(model, config)
  if from_sigmas:  # the first len(labels) test images
    batch = next(iter(data.eval_batches(config.data, batch_size=len(labels))))
    real_images = jnp.asarray(batch["image"][batch["mask"]])
    real_labels = np.asarray(labels_of(batch, config.data.label_keys))[batch["mask"]]

  def judged_samples(state, labels, **start_kw):
    """Samples [N, ...] of labels [N, K] with the judge's sampler settings, on the host;
    start_kw: `start` and `sigma_max` to denoise given images from that σ."""
    return parallel.to_host(
        sample(eval_params(state, config),
               jax.random.key(config.seed + 1),
               jnp.asarray(labels),
               len(labels),
               sampler=settings.sampler,
               num_steps=settings.num_steps,
               guidance=settings.guidance,
               **start_kw))

  def evaluate(state, step):
    images = judged_samples(state, labels)
    results = evaluators.judge_samples(judge, images, labels[:, 0], labels[:, 1], reference)
    results.update(evaluators.judge_held_out(judge, images, labels[:, 0], labels[:, 1]))
    for sigma in from_sigmas:
      denoised = judged_samples(state,
                                real_labels,
                                start=real_images,
                                sigma_max=float(sigma))
      scores = evaluators.judge_samples(judge, denoised, real_labels[:, 0], real_labels[:, 1])
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
  sample = make_sampler(model, config)

  def evaluate(state, step):
    samples = parallel.to_host(
        sample(eval_params(state, config),
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


def make_init_variables(model, config):
  """rng -> the network's variables, from inputs of the configured shapes."""
  x = jnp.zeros((1,) + example_shape(config.data), jnp.float32)
  labels = (jnp.zeros(
      (1, len(config.model.num_classes)), jnp.int32) if config.model.num_classes else None)
  return lambda rng: model.init(rng, x, jnp.zeros((1,), jnp.float32), labels)


def build(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh) -> dict:
  """The experiment's parts for `jaxmm.train.run`: init, loss, data and the evaluators
  named under `config.eval` (none when eval_every=0)."""
  check_config(config)
  model = models.get_model(config.model)
  if config.data.name == MIXTURE_2D:
    train_data = data.MixtureStream(diffusion.mixture_2d(),
                                    global_batch_size=config.batch_size,
                                    seed=inputs.shuffle_seed(config),
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
  else:
    train_data = inputs.train_data(config, need_text=False)
  return dict(init_variables=make_init_variables(model, config),
              loss_fn=make_loss_fn(model, config),
              train_data=train_data,
              evaluators=[EVALUATORS[name](model, config, mesh, workdir) for name in config.eval]
              if config.eval_every else [])
