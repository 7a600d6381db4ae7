"""Image-text contrastive pretraining: CLIP (softmax) or SigLIP (sigmoid) loss.

Composes jaxmm: a two-tower model, a contrastive loss run under `shard_map`
over the batch axes, the input pipeline, zero-shot evaluation, and the
generic loop.
"""
import functools

import jax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import ml_collections

from jaxmm import data
from jaxmm import evaluators
from jaxmm import losses
from jaxmm import models
from jaxmm import parallel
from jaxmm import train as train_lib


def make_contrastive_loss(loss_config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """(zimg [B, E], ztxt [B, E], aux) -> scalar, computed shard-wise over the batch axes."""
  if loss_config.name == "siglip":
    loss = functools.partial(losses.siglip_loss, variant=loss_config.variant)
    scalars = ("log_scale", "bias")
  elif loss_config.name == "clip":
    loss = losses.clip_loss
    scalars = ("log_scale",)
  else:
    raise ValueError(f"loss.name={loss_config.name!r}; choose 'siglip' or 'clip'")
  batch = P(parallel.BATCH_AXES)
  sharded = jax.shard_map(functools.partial(loss, axis_name=parallel.BATCH_AXES),
                          mesh=mesh,
                          in_specs=(batch, batch) + (P(),) * len(scalars),
                          out_specs=P())

  def contrastive_loss(zimg, ztxt, aux):
    missing = [name for name in scalars if name not in aux]
    if missing:
      raise ValueError(f"loss {loss_config.name!r} needs model parameters {missing}; "
                       f"set model.init_bias for SigLIP")
    return sharded(zimg, ztxt, *(aux[name] for name in scalars))

  return contrastive_loss


def make_loss_fn(model, loss_config, mesh):
  """loss_fn(params, batch, rng) -> (loss, metrics) for the generic train step."""
  contrastive_loss = make_contrastive_loss(loss_config, mesh)

  def loss_fn(params, batch, rng):
    del rng  # the model is deterministic
    zimg, ztxt, aux = model.apply({"params": params}, batch["image"], batch["tokens"])
    metrics = {"scale": jnp.exp(aux["log_scale"])}
    if "bias" in aux:
      metrics["bias"] = aux["bias"]
    return contrastive_loss(zimg, ztxt, aux), metrics

  return loss_fn


def make_init_params(model, config):
  """rng -> parameters (with logical axis names), from dummy inputs of the configured shapes."""
  images = jnp.zeros((1, config.data.image_size, config.data.image_size, 3), jnp.float32)
  tokens = jnp.zeros((1, config.data.max_len), jnp.int32)
  return lambda rng: model.init(rng, images, tokens)["params"]


def check_tokenizer(tokenizer, config):
  """The text tower must embed every id the tokenizer produces (JAX would clamp the rest)
  and mask the id it pads with."""
  text = config.model.text
  if tokenizer.vocab_size > text.vocab_size:
    raise ValueError(f"data.tokenizer={config.data.tokenizer!r} produces {tokenizer.vocab_size} "
                     f"token ids but model.text.vocab_size={text.vocab_size}; set "
                     f"--config.model.text.vocab_size={tokenizer.vocab_size}")
  if tokenizer.pad_id != text.pad_id:
    raise ValueError(f"data.tokenizer={config.data.tokenizer!r} pads with id {tokenizer.pad_id} "
                     f"but model.text.pad_id={text.pad_id}; set "
                     f"--config.model.text.pad_id={tokenizer.pad_id}")


def make_zero_shot_evaluator(model, config, mesh, workdir, tokenizer):
  return evaluators.make_evaluator(
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


def build(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh) -> dict:
  """The experiment's parts for `jaxmm.train.run`: init, loss, data and evaluators
  (zero-shot classification, none when eval_every=0)."""
  parallel.check_batch_size(config.eval.zero_shot.batch_size, mesh)
  tokenizer = data.get_tokenizer(config.data.tokenizer)
  check_tokenizer(tokenizer, config)
  model = models.get_model(config.model)
  seed = config.seed if config.data.shuffle_seed is None else config.data.shuffle_seed
  train_data = data.train_iterator(config.data,
                                   global_batch_size=config.batch_size,
                                   seed=seed,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
  return dict(init_params=make_init_params(model, config),
              loss_fn=make_loss_fn(model, config.loss, mesh),
              train_data=train_data,
              evaluators=[make_zero_shot_evaluator(model, config, mesh, workdir, tokenizer)]
              if config.eval_every else [])


def train(config: ml_collections.ConfigDict, workdir: str) -> train_lib.TrainState:
  mesh = parallel.make_mesh(config.mesh)
  return train_lib.run(config, workdir, mesh=mesh, **build(config, workdir, mesh))
