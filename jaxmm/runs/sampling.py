"""Samples of a diffusion run: its parameters, its labels and one compiled sampler per setting.

`jaxmm.analysis.Run.sample`, `jaxmm sample` and the diffusion evaluators
(`jaxmm.evaluators.generative`) all sample through `make_sampler`, so the same
seed and settings give the same samples everywhere. The network F of a run
(`config.model`) becomes the denoiser D(x; σ, c) = c_skip·x + c_out·F(c_in·x;
c_noise, c) of the run's schedule (`jaxmm.diffusion.schedule_from_config`), and
with guidance w ≠ 1 the classifier-free guided D_w
(`jaxmm.diffusion.guided_denoiser`).
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


def denoiser(model,
             schedule,
             params,
             labels: jax.Array | None,
             guidance=None,
             null: int = diffusion.NULL_LABEL):
  """D(x [B, ...], sigma [B]) -> x0_hat [B, ...] of the network `model` with `params`.

  guidance None: the denoiser conditioned on `labels` (int [B, K], or None
  for an unconditional model), one network call; a float or traced scalar w:
  the guided D_w = D_∅ + w·(D_c − D_∅), two calls. `guidance_argument`
  picks between them for a concrete w. For a text-conditioned model `labels`
  are caption tokens [B, L] and `null` the pad id
  (`caption_condition.null_condition`).
  """

  def conditional(x, sigma, labels_):
    net = lambda x_in, c_noise: model.apply({"params": params}, x_in, c_noise, labels_)
    return diffusion.denoiser(net, schedule)(x, sigma)

  if guidance is None:
    return lambda x, sigma: conditional(x, sigma, labels)
  return diffusion.guided_denoiser(conditional, labels, guidance, null)


def guidance_argument(labels, guidance: float) -> float | None:
  """What to pass `denoiser` for guidance w: None where D_w is the conditional denoiser (w = 1,
  or no labels), so that no unconditional pass is compiled; else w, which a jitted caller
  traces, so that every w shares one compilation."""
  return None if labels is None or guidance == 1.0 else float(guidance)


def make_sampler(model, config: ml_collections.ConfigDict):
  """sample(params, rng, labels [N, K] or None, num, *, sampler, num_steps, guidance,
  start=None, sigma_max=None) -> [N, ...].

  σ runs from sigma_max (default: the schedule's) down to the schedule's
  sigma_min; with `start` [N, ...] the samples are those examples noised to
  sigma_max and denoised (SDEdit, `jaxmm.diffusion.sample`). Compiled once
  per (num, sampler, num_steps), whether it is guided (`guidance_argument`),
  whether a start and a sigma_max are given; guidance and sigma_max are
  traced, so their values share it.
  """
  schedule = diffusion.schedule_from_config(config.diffusion)
  shape = data.example_shape(config.data)
  null = caption_condition.null_condition(config)

  def run(params, rng, labels, guidance, start, sigma_max, *, num, sampler, num_steps):
    return diffusion.sample(denoiser(model, schedule, params, labels, guidance, null),
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
             start=None,
             sigma_max=None):
    return compiled(params,
                    rng,
                    labels,
                    guidance_argument(labels, guidance),
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
               prompts=None) -> tuple[np.ndarray, np.ndarray | None]:
  """(samples [num, ...], what they show: labels int32 [num, K], prompts str [num] of a
  text-conditioned run, or None) of a run loaded by `load_run`.

  Every argument is checked before anything compiles. `ema` names the
  parameter average (default: the run's first; 'none': the raw parameters);
  `labels` are K-tuples (a list, or an int array [N, K]), cycled to `num`
  (default: one row per class); a text-conditioned run takes `prompts`
  instead, a list of captions cycled to `num`.
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
  if caption_condition.is_text_conditioned(config):
    condition, labels = sample_prompts(config, labels, prompts, num)
  elif prompts is not None:
    raise errors.UserError("--prompt: the run is not conditioned on captions (it has no "
                           "model.text); give --labels, or sample a text-to-image run")
  else:
    labels = condition = sample_labels(config, labels, num)
  params = choose_params(run, ema)
  sample = compiled or make_sampler(models.get_model(config.model), config)
  images = sample(params,
                  jax.random.key(seed),
                  None if condition is None else jnp.asarray(condition),
                  num,
                  sampler=sampler,
                  num_steps=num_steps,
                  guidance=guidance)
  return parallel.to_host(images), labels
