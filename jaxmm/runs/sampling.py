"""Samples of a diffusion run: its parameters, its labels and one compiled sampler per setting.

`jaxmm.analysis.Run.sample`, `jaxmm sample` and the diffusion evaluators
(`jaxmm.evaluators.generative`) all sample through `make_sampler`, so the same
seed and settings give the same samples everywhere. The network F of a run
(`config.model`) becomes the denoiser D(x; σ, c) = c_skip·x + c_out·F(c_in·x;
c_noise, c) of the run's schedule (`jaxmm.diffusion.schedule_from_config`), and
with guidance w ≠ 1 the classifier-free guided D_w
(`jaxmm.diffusion.guided_denoiser`), or with a guide run the autoguided one
(`jaxmm.diffusion.extrapolate`), optionally on a σ interval.
"""
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm import data
from jaxmm import diffusion
from jaxmm import errors
from jaxmm import models
from jaxmm import parallel
from jaxmm.runs import caption_condition
from jaxmm.train import ema as ema_lib

# Columns of the default class grid of a run whose model has a single label.
GRID_COLUMNS = 8


def grid_labels(num_classes: tuple[int, ...], per_row: int) -> tuple[np.ndarray | None, int]:
  """(labels int32 [rows·columns, K] or None, columns) of a class grid.

  Rows are the classes of the first label. With two or more labels the
  columns are the classes of the second (others 0), e.g. 6 shapes × 8
  colours; with one label each row repeats its class `per_row` times; an
  unconditional model (no labels) gets None and `per_row` columns.
  """
  if not num_classes:
    return None, per_row
  if len(num_classes) == 1:
    rows = np.repeat(np.arange(num_classes[0]), per_row)[:, None]
    return rows.astype(np.int32), per_row
  pairs = np.array(list(itertools.product(range(num_classes[0]), range(num_classes[1]))))
  rest = np.zeros((len(pairs), len(num_classes) - 2), np.int64)
  return np.concatenate([pairs, rest], axis=1).astype(np.int32), num_classes[1]


def _conditional(model, schedule, params):
  """D(x [B, ...], sigma [B], labels int [B, K] or None) -> x0_hat [B, ...] of `model`."""

  def conditional(x, sigma, labels):
    net = lambda x_in, c_noise: model.apply({"params": params}, x_in, c_noise, labels)
    return diffusion.denoiser(net, schedule)(x, sigma)

  return conditional


def denoiser(model,
             schedule,
             params,
             labels: jax.Array | None,
             guidance=None,
             *,
             interval=None,
             guide=None,
             null: int = diffusion.NULL_LABEL):
  """D(x [B, ...], sigma [B]) -> x0_hat [B, ...] of the network `model` with `params`.

  guidance None: the denoiser conditioned on `labels` (int [B, K], or None
  for an unconditional model), one network call; a float or traced scalar w:
  the guided D_w, two calls where σ is in `interval` ((lo, hi), None:
  everywhere), one elsewhere: D_∅ + w·(D_c − D_∅), or with `guide` (the guide
  run's (model, params), same schedule) D_guide + w·(D_main − D_guide).
  `guidance_argument` picks between them for a concrete w. For a
  text-conditioned model `labels` are caption tokens [B, L] and `null` the pad
  id (`caption_condition.null_condition`).
  """
  conditional = _conditional(model, schedule, params)
  if guidance is None:
    return lambda x, sigma: conditional(x, sigma, labels)
  if guide is None:
    return diffusion.guided_denoiser(conditional, labels, guidance, interval, null)
  guide_model, guide_params = guide
  guide_conditional = _conditional(guide_model, schedule, guide_params)
  return diffusion.extrapolate(lambda x, sigma: conditional(x, sigma, labels),
                               lambda x, sigma: guide_conditional(x, sigma, labels), guidance,
                               interval)


def guidance_argument(labels, guidance: float, autoguided: bool = False) -> float | None:
  """What to pass `denoiser` for guidance w: None where D_w is the conditional denoiser (w = 1,
  or no labels and no guide run), so that no second pass is compiled; else w, which a jitted
  caller traces, so that every w shares one compilation."""
  if guidance == 1.0 or (labels is None and not autoguided):
    return None
  return float(guidance)


def check_guide(config, guide_config, flag: str = "--guide-run") -> None:
  """Raises `UserError` unless the run of `guide_config` can guide the run of `config`:
  a diffusion run on examples of the same shape, with the same labels and schedule."""
  if guide_config.experiment != "diffusion":
    raise errors.UserError(f"{flag}: the guide is an experiment={guide_config.experiment!r} "
                           "run; give a diffusion run of the same data, e.g. one trained with "
                           "configs/edm_shapes.py:guide")
  checks = (
      ("examples of shape", lambda c: data.example_shape(c.data),
       "train the guide on the same data"),
      ("labels", lambda c: (tuple(c.data.label_keys), tuple(c.model.num_classes)),
       "train the guide with the same data.label_keys and model.num_classes"),
      ("schedule", lambda c: diffusion.schedule_from_config(c.diffusion),
       "train the guide with the same diffusion.schedule and schedule_args"),
  )
  for what, of, fix in checks:
    main_value, guide_value = of(config), of(guide_config)
    if main_value != guide_value:
      raise errors.UserError(f"{flag}: the guide has {what} {guide_value}, the run {main_value}; "
                             f"{fix}")


def make_sampler(model, config: ml_collections.ConfigDict, guide_model=None):
  """sample(params, rng, labels [N, K] or None, num, *, sampler, num_steps, guidance,
  interval=None, guide_params=None, start=None, sigma_max=None) -> [N, ...].

  With `guide_model` (the guide run's network, `check_guide`) and `guide_params`,
  guidance is autoguidance; `interval` (lo, hi) limits guidance to σ in (lo, hi].

  σ runs from sigma_max (default: the schedule's) down to the schedule's
  sigma_min; with `start` [N, ...] the samples are those examples noised to
  sigma_max and denoised (SDEdit, `jaxmm.diffusion.sample`). Compiled once
  per (num, sampler, num_steps), whether it is guided (`guidance_argument`),
  whether a start, a sigma_max and an interval are given; guidance, the
  interval and sigma_max are traced, so their values share it.
  """
  schedule = diffusion.schedule_from_config(config.diffusion)
  shape = data.example_shape(config.data)
  null = caption_condition.null_condition(config)

  def run(params, rng, labels, guidance, interval, guide_params, start, sigma_max, *, num,
          sampler, num_steps):
    guide = None if guide_params is None else (guide_model, guide_params)
    return diffusion.sample(denoiser(model, schedule, params, labels, guidance,
                                     interval=interval, guide=guide, null=null),
                            rng, (num,) + shape,
                            sampler=sampler,
                            num_steps=num_steps,
                            sigma_min=schedule.sigma_min,
                            sigma_max=schedule.sigma_max if sigma_max is None else sigma_max,
                            start=start)

  compiled = jax.jit(run, static_argnames=("num", "sampler", "num_steps"))

  def sample(params,
             rng,
             labels,
             num,
             *,
             sampler="heun",
             num_steps=18,
             guidance=1.0,
             interval=None,
             guide_params=None,
             start=None,
             sigma_max=None):
    return compiled(params,
                    rng,
                    labels,
                    guidance_argument(labels, guidance, guide_params is not None),
                    interval,
                    guide_params,
                    start,
                    sigma_max,
                    num=num,
                    sampler=sampler,
                    num_steps=num_steps)

  return sample


def eval_params(state, config: ml_collections.ConfigDict):
  """The parameters evaluation samples with: the first average of config.ema, else the params."""
  names = ema_lib.names(config.ema)
  return state.ema[names[0]] if names else state.params


def choose_params(run, ema: str | None, flag: str = "--ema"):
  """The parameters of `run` named by `ema` (the option `flag`): an average's name, 'none' for
  the raw parameters, None for the run's first average (the raw parameters if it keeps none)."""
  if ema == "none":
    return run.params
  if ema is None:
    return run.ema[ema_lib.names(run.config.ema)[0]] if run.ema else run.params
  if ema not in run.ema:
    raise errors.UserError(f"{flag} {ema}: the run keeps {sorted(run.ema) or 'no averages'}; "
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


def sample_labels(config, labels, num: int) -> np.ndarray | None:
  """int32 [num, K]: `labels` (K-tuples or an array [N, K]) or the class grid, cycled to `num`;
  None if the model is unconditional."""
  num_classes = tuple(config.model.num_classes)
  if not num_classes:
    if labels is not None:
      raise errors.UserError("--labels: the run's model is unconditional (model.num_classes=()); "
                             "give no labels")
    return None
  if labels is None:
    labels, _ = grid_labels(num_classes, GRID_COLUMNS)
  labels = _label_rows(labels, config)
  bad = (labels < 0) | (labels >= np.asarray(num_classes))
  if bad.any():
    row = labels[bad.any(axis=1)][0]
    ranges = ", ".join(f"{k} < {n}" for k, n in zip(config.data.label_keys, num_classes))
    raise errors.UserError(f"--labels {','.join(map(str, row))}: out of range; {ranges}")
  return np.resize(labels, (num, len(num_classes))).astype(np.int32)


def sample_prompts(config, labels, prompts, num: int) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int32 [num, L], prompts str [num]) of a text-conditioned run: `prompts` cycled to
  `num`; a `UserError` for none or for `labels`."""
  if labels is not None:
    raise errors.UserError("--labels: the run is conditioned on captions (model.text), not "
                           "labels; give --prompt TEXT instead")
  if prompts is None:
    raise errors.UserError("the run is conditioned on captions (model.text); give --prompt "
                           "TEXT (prompts=[...]), e.g. --prompt 'a large red star in the top left'")
  tokens = caption_condition.tokenize_prompts(config, prompts)
  rows = np.resize(np.arange(len(tokens)), num)
  return tokens[rows], np.asarray(prompts)[rows]


def sample_run(run,
               *,
               ema: str | None = None,
               num: int = 64,
               sampler: str = "heun",
               num_steps: int = 18,
               guidance: float = 1.0,
               labels=None,
               seed: int = 0,
               compiled=None,
               guide=None,
               guide_ema: str | None = None,
               guidance_interval=None,
               prompts=None) -> tuple[np.ndarray, np.ndarray | None]:
  """(samples [num, ...], what they show: labels int32 [num, K], prompts str [num] of a
  text-conditioned run, or None) of a run loaded by `load_run`.

  Every argument is checked before anything compiles. `ema` names the
  parameter average (default: the run's first; 'none': the raw parameters);
  `labels` are K-tuples (a list, or an int array [N, K]), cycled to `num`
  (default: one row per class); a text-conditioned run takes `prompts`
  instead, a list of captions cycled to `num`. `guide` is a run loaded by
  `load_run` that guides this one (autoguidance) with its average `guide_ema`;
  `guidance_interval` (lo, hi) limits guidance to lo < σ <= hi.
  `compiled` is a `make_sampler(model, run.config, guide model)` to reuse
  across calls (default: a new one).
  """
  config = run.config
  if config.experiment != "diffusion":
    raise errors.UserError(f"--run {run.workdir} is an {config.experiment!r} run; jaxmm sample "
                           "needs a diffusion run")
  errors.integer_at_least("--num", num, 1)
  diffusion.nfe(sampler, num_steps)  # an unknown sampler or num_steps < 1 fails here
  interval = diffusion.check_interval(guidance_interval, "--guidance-interval")
  guide_params = None
  if guide is not None:
    check_guide(config, guide.config)
    guide_params = choose_params(guide, guide_ema, "--guide-ema")
  elif guidance != 1.0 and not config.diffusion.label_dropout:
    raise errors.UserError(f"--guidance {guidance}: the run was trained without label dropout "
                           "(diffusion.label_dropout=0), so it has no unconditional denoiser to "
                           "guide with; use --guidance 1, or autoguidance with --guide-run DIR")
  if caption_condition.is_text_conditioned(config):
    condition, labels = sample_prompts(config, labels, prompts, num)
  elif prompts is not None:
    raise errors.UserError("--prompt: the run is not conditioned on captions (it has no "
                           "model.text); give --labels, or sample a text-to-image run")
  else:
    labels = condition = sample_labels(config, labels, num)
  params = choose_params(run, ema)
  sample = compiled or make_sampler(models.get_model(config.model), config,
                                    None if guide is None else guide.model)
  images = sample(params,
                  jax.random.key(seed),
                  None if condition is None else jnp.asarray(condition),
                  num,
                  sampler=sampler,
                  num_steps=num_steps,
                  guidance=guidance,
                  interval=interval,
                  guide_params=guide_params)
  return parallel.to_host(images), labels
