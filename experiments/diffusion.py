"""Diffusion and flow-matching pretraining in the EDM form (Karras et al. 2022).

One trainer for the VP, VE, EDM and flow-matching objectives, chosen by
`diffusion.schedule`: a denoiser network (U-Net, DiT, or an MLP for 2-D data,
`config.model`) wrapped in the schedule's preconditioning and trained with
its noise distribution and loss weight (`jaxmm.diffusion.denoising_loss`).
Conditioning on integer labels (`data.label_keys`, e.g. shape and colour)
with classifier-free guidance: during training each example's labels are all
dropped (`jaxmm.diffusion.drop_labels`) with probability
`diffusion.label_dropout` (Ho & Salimans 2022), so one network learns the
conditional and the unconditional denoiser. A text-to-image run
(`model.text` set, `jaxmm.runs.caption_condition`) is conditioned on the
tokens of `data.text_key` instead, and a dropped caption is the empty one. Parameter averages
(`config.ema`) are what evaluation and `jaxmm sample` use by default.

Its evaluators (`config.evals`: sample_grid, judge, two_sample) sample with
the first average through `jaxmm.runs.sampling.make_sampler`.
"""
import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections

from jaxmm import diffusion
from jaxmm import errors
from jaxmm import evaluators
from jaxmm import models
from jaxmm.data import source_mixture
from jaxmm.experiments import inputs
from jaxmm.runs import caption_condition
from jaxmm.runs import sampling
from jaxmm.train import ema as ema_lib
from jaxmm.train import model_init
from jaxmm.train import per_source

log = logging.getLogger("jaxmm")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `UserError` for a diffusion value that cannot work, before anything is built."""
  diffusion.schedule_from_config(config.diffusion)
  rate = config.diffusion.label_dropout
  if not 0 <= rate < 1:
    raise errors.UserError(f"diffusion.label_dropout={rate!r} must lie in [0, 1), e.g. 0.1")
  if len(config.data.label_keys) != len(config.model.num_classes):
    raise errors.UserError(f"data.label_keys={tuple(config.data.label_keys)!r} and "
                           f"model.num_classes={tuple(config.model.num_classes)!r} must have one "
                           "entry per label")
  if caption_condition.is_text_conditioned(config):
    if config.data.label_keys or config.model.num_classes:
      raise errors.UserError("model.text conditions the model on captions; set "
                             "data.label_keys=() and model.num_classes=()")
    caption_condition.check_text_source(config)
  if config.eval_every and not ema_lib.names(config.ema):
    log.warning("no parameter average (config.ema); evaluation samples with the raw params")


def examples(batch: dict) -> jax.Array:
  """The batch's examples x0: 'image' from the TFDS pipeline, 'x' from the mixture stream."""
  return batch["image"] if "image" in batch else batch["x"]


def labels_of(batch: dict, label_keys) -> jax.Array | None:
  """int32 [B, K]: the batch's labels named by `label_keys`, or None if there are none."""
  if not label_keys:
    return None
  return jnp.stack([batch[key] for key in label_keys], axis=-1).astype(jnp.int32)


def condition_of(batch: dict, config: ml_collections.ConfigDict) -> jax.Array | None:
  """What the model is conditioned on: the caption's tokens int [B, L] of a text-conditioned
  run, else the labels of `labels_of`."""
  if caption_condition.is_text_conditioned(config):
    return batch["tokens"]
  return labels_of(batch, config.data.label_keys)


def make_loss_fn(model, config: ml_collections.ConfigDict):
  """loss_fn(params, model_state, batch, rng) -> (loss, metrics, model_state): the mean of
  λ(σ)·‖D(x0 + σn, σ) − x0‖² over the batch (jaxmm.diffusion.denoising_loss); with
  data.mixture, metrics 'loss/NAME' the mean over each source's examples."""
  schedule = diffusion.schedule_from_config(config.diffusion)
  rate, null = config.diffusion.label_dropout, caption_condition.null_condition(config)
  sources = source_mixture.names(config.data)

  def loss_fn(params, model_state, batch, rng):
    drop_rng, noise_rng = jax.random.split(rng)
    labels = condition_of(batch, config)
    if labels is not None and rate > 0:
      labels = diffusion.drop_labels(labels, drop_rng, rate, null)
    net = lambda x, c_noise: model.apply({"params": params}, x, c_noise, labels)
    per_example = diffusion.denoising_loss(net, schedule, examples(batch), noise_rng)
    metrics = {}
    if sources:  # the mean over each data.mixture source's examples
      metrics = per_source.loss_per_source(per_example, batch[source_mixture.SOURCE], sources)
    return jnp.mean(per_example), metrics, model_state

  return loss_fn


def evaluator_parts(model, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                    workdir: str | None) -> evaluators.Parts:
  """What the evaluators sample with: the run's sampler and the params of its first average;
  and the eval split's batches, for the judge's real images."""
  return evaluators.Parts(config=config,
                          mesh=mesh,
                          workdir=workdir,
                          variables=lambda state: sampling.eval_params(state, config),
                          sample=sampling.make_sampler(model, config),
                          eval_batches=functools.partial(inputs.eval_batches, config))


def build(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh) -> dict:
  """The experiment's parts for `jaxmm.train.run`: init, loss, data and the evaluators of
  `config.evals`."""
  check_config(config)
  model = models.get_model(config.model)
  return dict(init_variables=model_init.make_init_variables(model, config),
              loss_fn=make_loss_fn(model, config),
              train_data=inputs.train_data(
                  config, need_text=caption_condition.is_text_conditioned(config)),
              evaluators=evaluators.build_evaluators(evaluator_parts(model, config, mesh,
                                                                     workdir)))
