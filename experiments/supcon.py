"""Supervised contrastive learning (SupCon), SimCLR and the cross-entropy baseline.

Khosla et al. (2020), "Supervised contrastive learning": a ResNet encoder
with BatchNorm and an MLP head is trained on `data.num_views` random views of
each image (`jaxmm.data.view_ops`, named by `data.views`) with `loss.name`:

  supcon  L_out of eq. 2 on the unit-norm head outputs: the positives of a
          view are the other views of its image and every view of an image
          with the same label (`data.label_key`);
  simclr  the same loss without labels, positives only the other views of
          the image (NT-Xent, Chen et al. 2020);
  ce      cross-entropy of the head's logits (model.head[-1] = the number of
          classes) on every view, the baseline of the paper.

The contrastive losses run under `shard_map` over the batch axes
(`jaxmm.parallel.over_batch_axes`); the network runs under the train step's
jit, where BatchNorm's batch statistics are those of the global batch of
views (`jaxmm.models.resnet`). The BatchNorm running averages live in the
train state's `model_state` ('batch_stats'). Evaluation (`config.evals`:
linear probe and k-NN) reads the frozen encoder's representation h [B, F]
with those running averages.
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxmm import data
from jaxmm import errors
from jaxmm import evaluators
from jaxmm import losses
from jaxmm import models
from jaxmm import parallel
from jaxmm.data import source_mixture
from jaxmm.data import view_ops
from jaxmm.experiments import inputs
from jaxmm.models.two_tower import l2_normalize
from jaxmm.train import model_init
from jaxmm.train import per_source

LOSSES = ("supcon", "simclr", "ce")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `UserError` for a value that cannot work, before anything is built."""
  loss_name = errors.one_of("loss.name", config.loss.name, LOSSES)
  errors.one_of("loss.contrast_mode", config.loss.contrast_mode, losses.SUPCON_CONTRAST_MODES)
  errors.positive("loss.temperature", config.loss.temperature)
  errors.positive("loss.base_temperature", config.loss.base_temperature)
  if config.data.views is None:
    raise errors.UserError("data.views=None makes no views; name the ops that make them, e.g. "
                           f"--config.data.views='{view_ops.EXAMPLE}'")
  data.view_ops_of(config.data)
  if loss_name == "simclr" and config.data.num_views < 2:
    raise errors.UserError(f"loss.name='simclr' needs two views of each image (its only "
                           f"positives), but data.num_views={config.data.num_views}; set "
                           "--config.data.num_views=2")
  model = config.model
  if len(model.stage_sizes) != len(model.widths):
    raise errors.UserError(f"model.stage_sizes={tuple(model.stage_sizes)} and model.widths="
                           f"{tuple(model.widths)} need one entry per stage")
  if not model.head:
    raise errors.UserError("model.head=() has no layer; give the head's output sizes, e.g. "
                           "(512, 128) for a projection or (10,) for 10 classes")
  classes = data.class_labels(config.data)
  label_key = errors.one_of("data.label_key", config.data.label_key, classes)
  if loss_name == "ce" and model.head[-1] != classes[label_key]:
    raise errors.UserError(f"loss.name='ce' needs one logit per class: model.head[-1]="
                           f"{model.head[-1]}, but data.label_key={label_key!r} has "
                           f"{classes[label_key]} classes; set --config.model.head="
                           f"'({classes[label_key]},)'")


def make_objective(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """(head outputs [B, V, H], labels int [B], source int [B] or None) -> (scalar loss, metrics)
  of `config.loss`; with data.mixture, 'ce' adds 'loss/NAME' per source (`per_source`)."""
  settings = config.loss
  if settings.name == "ce":
    sources = source_mixture.names(config.data)

    def cross_entropy(logits, labels, source):
      labels = jnp.broadcast_to(labels[:, None], logits.shape[:2])
      per_view = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [B, V]
      metrics = {"accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == labels)}
      if sources:  # the mean over each data.mixture source's examples
        metrics.update(per_source.loss_per_source(per_view.mean(axis=1), source, sources))
      return per_view.mean(), metrics

    return cross_entropy

  supcon = functools.partial(losses.supcon_loss,
                             temperature=settings.temperature,
                             base_temperature=settings.base_temperature,
                             contrast_mode=settings.contrast_mode)
  if settings.name == "simclr":
    sharded = parallel.over_batch_axes(lambda z, axis_name: supcon(z, axis_name=axis_name), mesh,
                                       num_batched=1)
    return lambda outputs, labels, source: (sharded(l2_normalize(outputs)), {})
  sharded = parallel.over_batch_axes(supcon, mesh, num_batched=2)
  return lambda outputs, labels, source: (sharded(l2_normalize(outputs), labels), {})


def make_loss_fn(model, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """loss_fn(params, model_state, batch, rng) -> (loss, metrics, model_state) for the train step.

  The B·V views of batch['views'] [B, V, S, S, C] go through the network as
  one batch, so BatchNorm normalises them together; the returned
  model_state holds the updated running averages.
  """
  objective = make_objective(config, mesh)
  label_key = config.data.label_key

  def loss_fn(params, model_state, batch, rng):
    del rng  # the views carry all the randomness
    views = batch["views"]
    b, v = views.shape[:2]
    (_, outputs), model_state = model.apply({"params": params, **model_state},
                                            views.reshape((b * v,) + views.shape[2:]),
                                            train=True,
                                            mutable=list(model_state))
    loss, metrics = objective(outputs.reshape(b, v, -1), batch[label_key],
                              batch.get(source_mixture.SOURCE))
    return loss, metrics, model_state

  return loss_fn


def encode(model):
  """(variables, images [b, S, S, 3]) -> the frozen encoder's representation h [b, F], with
  BatchNorm's running averages."""
  return lambda variables, x: model.apply(variables, x, method=model.encode)


def make_split_embeddings(model, config, mesh) -> evaluators.SplitEmbeddings:
  """The encoder's representation of the dataset's splits, shared by the evaluators of a step."""

  return evaluators.SplitEmbeddings({"image": ("image", encode(model))},
                                    functools.partial(inputs.eval_batches, config), mesh)


def evaluator_parts(model, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                    workdir: str | None) -> evaluators.Parts:
  """What the evaluators embed with: the encoder of the params with BatchNorm's averages."""
  return evaluators.Parts(config=config,
                          mesh=mesh,
                          workdir=workdir,
                          variables=lambda state: {"params": state.params, **state.model_state},
                          embeddings=make_split_embeddings(model, config, mesh))


def build(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh) -> dict:
  """The experiment's parts for `jaxmm.train.run`: init, loss, data and the evaluators of
  `config.evals`."""
  check_config(config)
  model = models.get_model(config.model)
  return dict(init_variables=model_init.make_init_variables(model, config),
              loss_fn=make_loss_fn(model, config, mesh),
              train_data=inputs.train_data(config, need_text=False),
              evaluators=evaluators.build_evaluators(evaluator_parts(model, config, mesh,
                                                                     workdir)))
