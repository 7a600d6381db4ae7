"""Image-text contrastive pretraining: CLIP (softmax) or SigLIP (sigmoid) loss.

Composes jaxmm: a two-tower model, a contrastive loss run under `shard_map`
over the batch axes, the input pipeline, zero-shot evaluation, and the
generic loop.
"""
import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections

from jaxmm import data
from jaxmm import errors
from jaxmm import evaluators
from jaxmm import losses
from jaxmm import models
from jaxmm import parallel
from jaxmm.models import vit

LOSSES = ("siglip", "clip")

log = logging.getLogger("jaxmm")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `UserError` for an image-text value that cannot work, before anything is built."""
  if errors.one_of("loss.name", config.loss.name, LOSSES) == "siglip":
    errors.one_of("loss.variant", config.loss.variant, losses.SIGLIP_VARIANTS)
    if config.model.init_bias is None:
      raise errors.UserError("loss.name='siglip' needs a bias: set --config.model.init_bias=-10")
  image = config.model.image
  errors.one_of("model.image.pool", image.pool, vit.POOLS)
  errors.one_of("model.image.stem", image.stem, vit.STEMS)
  for tower in ("image", "text"):
    width, heads = config.model[tower].width, config.model[tower].num_heads
    if heads > 0 and width % heads:
      raise errors.UserError(f"model.{tower}.num_heads={heads} must divide "
                             f"model.{tower}.width={width}")
  if image.patch_size > 0 and config.data.image_size % image.patch_size:
    raise errors.UserError(f"model.image.patch_size={image.patch_size} must divide "
                           f"data.image_size={config.data.image_size}")
  for name in config.eval:
    errors.one_of("evaluator name under eval", name, EVALUATORS)
  errors.integer_at_least("eval.zero_shot.batch_size", config.eval.zero_shot.batch_size, 1)


def make_contrastive_loss(loss_config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """(zimg [B, E], ztxt [B, E], aux) -> scalar, computed shard-wise over the batch axes."""
  if errors.one_of("loss.name", loss_config.name, LOSSES) == "siglip":
    loss = functools.partial(losses.siglip_loss, variant=loss_config.variant)
    scalars = ("log_scale", "bias")
  else:
    loss = losses.clip_loss
    scalars = ("log_scale",)
  sharded = parallel.over_batch_axes(loss, mesh, num_batched=2, num_replicated=len(scalars))

  def contrastive_loss(zimg, ztxt, aux):
    missing = [name for name in scalars if name not in aux]
    if missing:
      raise errors.UserError(f"loss {loss_config.name!r} needs model parameters {missing}; "
                             "set --config.model.init_bias=-10 for SigLIP")
    return sharded(zimg, ztxt, *(aux[name] for name in scalars))

  return contrastive_loss


def make_loss_fn(model, loss_config, mesh):
  """loss_fn(params, model_state, batch, rng) -> (loss, metrics, model_state) for the train step."""
  contrastive_loss = make_contrastive_loss(loss_config, mesh)

  def loss_fn(params, model_state, batch, rng):
    del rng  # the model is deterministic
    zimg, ztxt, aux = model.apply({"params": params}, batch["image"], batch["tokens"])
    metrics = {"scale": jnp.exp(aux["log_scale"])}
    if "bias" in aux:
      metrics["bias"] = aux["bias"]
    return contrastive_loss(zimg, ztxt, aux), metrics, model_state

  return loss_fn


def make_init_variables(model, config):
  """rng -> the model's variables (with logical axis names), from inputs of the config's shapes."""
  images = jnp.zeros((1, config.data.image_size, config.data.image_size, 3), jnp.float32)
  tokens = jnp.zeros((1, config.data.max_len), jnp.int32)
  return lambda rng: model.init(rng, images, tokens)


def check_tokenizer(tokenizer, config):
  """The text tower must embed every id the tokenizer produces (JAX would clamp the rest)
  and mask the id it pads with."""
  text = config.model.text
  if tokenizer.vocab_size > text.vocab_size:
    raise errors.UserError(f"data.tokenizer={config.data.tokenizer!r} produces "
                           f"{tokenizer.vocab_size} token ids but model.text.vocab_size="
                           f"{text.vocab_size}; set "
                           f"--config.model.text.vocab_size={tokenizer.vocab_size}")
  if tokenizer.pad_id != text.pad_id:
    raise errors.UserError(f"data.tokenizer={config.data.tokenizer!r} pads with id "
                           f"{tokenizer.pad_id} but model.text.pad_id={text.pad_id}; set "
                           f"--config.model.text.pad_id={tokenizer.pad_id}")


def make_zero_shot_evaluator(model, config, mesh, workdir, tokenizer):
  """evaluator(state, step): zero-shot classification with the trained parameters."""
  evaluate = evaluators.make_evaluator(
      tasks=evaluators.zero_shot_tasks(config.data.name),
      encode_images=lambda p, x: model.apply({"params": p}, x, method=model.encode_image),
      encode_tokens=lambda p, t: model.apply({"params": p}, t, method=model.encode_text),
      tokenize=lambda texts: tokenizer.encode_batch(texts, config.data.max_len),
      eval_batches=lambda: data.eval_batches(config.data,
                                             split=config.data.eval_split,
                                             batch_size=config.eval.zero_shot.batch_size,
                                             process_index=jax.process_index(),
                                             process_count=jax.process_count()),
      mesh=mesh,
      text_batch_size=config.eval.zero_shot.batch_size,
      workdir=workdir)
  return lambda state, step: evaluate(state.params, step)


# The evaluators a config may name under `eval` (their settings beside).
EVALUATORS = {"zero_shot": make_zero_shot_evaluator}


def build(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh) -> dict:
  """The experiment's parts for `jaxmm.train.run`: init, loss, data and the evaluators
  named under `config.eval` (none when eval_every=0)."""
  check_config(config)
  parallel.check_batch_size(config.eval.zero_shot.batch_size, mesh, "eval.zero_shot.batch_size")
  tokenizer = data.get_tokenizer(config.data.tokenizer)
  check_tokenizer(tokenizer, config)
  model = models.get_model(config.model)
  seed = config.seed if config.data.shuffle_seed is None else config.data.shuffle_seed
  train_data = data.train_iterator(config.data,
                                   global_batch_size=config.batch_size,
                                   seed=seed,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
  truncation = data.truncation_warning(config.data)
  if truncation:
    log.warning(truncation)
  return dict(init_variables=make_init_variables(model, config),
              loss_fn=make_loss_fn(model, config.loss, mesh),
              train_data=train_data,
              evaluators=[
                  EVALUATORS[name](model, config, mesh, workdir, tokenizer) for name in config.eval
              ] if config.eval_every else [])
