"""Image-text contrastive pretraining: CLIP (softmax) or SigLIP (sigmoid) loss.

Composes jaxmm: a two-tower model, a contrastive loss run under `shard_map`
over the batch axes, the input pipeline, evaluation (`config.evals`:
zero-shot, retrieval, linear probe and k-NN of the two towers), and the
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
from jaxmm.experiments import inputs
from jaxmm.models import patch_dropout
from jaxmm.models import vit
from jaxmm.train import model_init

LOSSES = ("siglip", "clip")
# The values of loss.variant each loss takes: how a sharded batch is reduced.
VARIANTS = {"siglip": losses.SIGLIP_VARIANTS, "clip": losses.CLIP_VARIANTS}

log = logging.getLogger("jaxmm")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `UserError` for an image-text value that cannot work, before anything is built."""
  loss_name = errors.one_of("loss.name", config.loss.name, LOSSES)
  errors.one_of("loss.variant", config.loss.variant, VARIANTS[loss_name])
  if loss_name == "siglip" and config.model.init_bias is None:
    raise errors.UserError("loss.name='siglip' needs a bias: set --config.model.init_bias=-10")
  check_towers(config, ("image", "text"))


def check_towers(config: ml_collections.ConfigDict, towers: tuple[str, ...]) -> None:
  """Raises `UserError` for settings of config.model.image and of the other `towers` that
  cannot work."""
  image = config.model.image
  errors.one_of("model.image.pool", image.pool, vit.POOLS)
  errors.one_of("model.image.stem", image.stem, vit.STEMS)
  for tower in towers:
    width, heads = config.model[tower].width, config.model[tower].num_heads
    if heads > 0 and width % heads:
      raise errors.UserError(f"model.{tower}.num_heads={heads} must divide "
                             f"model.{tower}.width={width}")
  if image.patch_size > 0 and config.data.image_size % image.patch_size:
    raise errors.UserError(f"model.image.patch_size={image.patch_size} must divide "
                           f"data.image_size={config.data.image_size}")
  if image.patch_size > 0:
    patch_dropout.kept_count((config.data.image_size // image.patch_size)**2, image.patch_dropout)


def make_contrastive_loss(loss_config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """(zimg [B, E], ztxt [B, E], aux) -> scalar, computed shard-wise over the batch axes."""
  if errors.one_of("loss.name", loss_config.name, LOSSES) == "siglip":
    loss = functools.partial(losses.siglip_loss, variant=loss_config.variant)
    scalars = ("log_scale", "bias")
  else:
    loss = functools.partial(losses.clip_loss, variant=loss_config.variant)
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
    # The step's rng drives FLIP's patch dropout; evaluators call the model with train=False.
    zimg, ztxt, aux = model.apply({"params": params},
                                  batch["image"],
                                  batch["tokens"],
                                  train=True,
                                  rngs={"patch_dropout": rng})
    metrics = {"scale": jnp.exp(aux["log_scale"])}
    if "bias" in aux:
      metrics["bias"] = aux["bias"]
    return contrastive_loss(zimg, ztxt, aux), metrics, model_state

  return loss_fn


def check_tokenizer(tokenizer, config, tower: str = "text"):
  """The text tower (or the model's other text `tower`, e.g. a caption decoder) must embed every
  id the tokenizer produces (JAX would clamp the rest) and know the id it pads with."""
  text = config.model[tower]
  if tokenizer.vocab_size > text.vocab_size:
    raise errors.UserError(f"data.tokenizer={config.data.tokenizer!r} produces "
                           f"{tokenizer.vocab_size} token ids but model.{tower}.vocab_size="
                           f"{text.vocab_size}; set "
                           f"--config.model.{tower}.vocab_size={tokenizer.vocab_size}")
  if tokenizer.pad_id != text.pad_id:
    raise errors.UserError(f"data.tokenizer={config.data.tokenizer!r} pads with id "
                           f"{tokenizer.pad_id} but model.{tower}.pad_id={text.pad_id}; set "
                           f"--config.model.{tower}.pad_id={tokenizer.pad_id}")


def encode_image(model):
  """(params, images [b, S, S, 3]) -> unit-norm image embeddings [b, E]."""
  return lambda p, x: model.apply({"params": p}, x, method=model.encode_image)


def encode_text(model):
  """(params, tokens [b, L]) -> unit-norm caption embeddings [b, E]."""
  return lambda p, t: model.apply({"params": p}, t, method=model.encode_text)


def make_split_embeddings(model, config, mesh) -> evaluators.SplitEmbeddings:
  """Image and caption embeddings of the dataset's splits, shared by the evaluators of a step."""
  return evaluators.SplitEmbeddings(
      {"image": ("image", encode_image(model)), "text": ("tokens", encode_text(model))},
      functools.partial(inputs.eval_batches, config), mesh)


def evaluator_parts(model, tokenizer, config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh, workdir: str | None) -> evaluators.Parts:
  """What the evaluators embed with: both towers of the trained params, and the tokenizer."""
  return evaluators.Parts(
      config=config,
      mesh=mesh,
      workdir=workdir,
      variables=lambda state: state.params,
      embeddings=make_split_embeddings(model, config, mesh),
      encode_text=encode_text(model),
      tokenize=lambda texts: tokenizer.encode_batch(texts, config.data.max_len))


def build(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh) -> dict:
  """The experiment's parts for `jaxmm.train.run`: init, loss, data and the evaluators of
  `config.evals`."""
  check_config(config)
  tokenizer = data.get_tokenizer(config.data.tokenizer)
  check_tokenizer(tokenizer, config)
  model = models.get_model(config.model)
  train_data = inputs.train_data(config)
  truncation = data.truncation_warning(config.data)
  if truncation:
    log.warning(truncation)
  return dict(init_variables=model_init.make_init_variables(model, config),
              loss_fn=make_loss_fn(model, config.loss, mesh),
              train_data=train_data,
              evaluators=evaluators.build_evaluators(
                  evaluator_parts(model, tokenizer, config, mesh, workdir)))
