"""Image captioning pretraining: CapPa (captioning only) and CoCa (contrastive + captioning).

Composes jaxmm: a `Captioner` (ViT tokens read by a text decoder through
cross-attention), the token-level caption loss (`jaxmm.losses.caption_loss`)
run under `shard_map` over the batch axes, the input pipeline and the generic
loop.

CapPa (Tschannen et al. 2023, Sec. 3): for a fraction loss.parallel_fraction
of the examples, drawn anew each step, the decoder sees only mask tokens
under full attention and predicts every token at once from the image alone;
the rest are teacher-forced as usual. The paper finds that forcing the
decoder to rely on the image makes the encoder better (its 0.75).

CoCa (Yu et al. 2022, eq. 4): L = L_con + λ·L_cap, λ = loss.caption_weight,
L_con the CLIP or SigLIP loss of the pooled image embedding against the
decoder's unimodal text feature (`image_text.make_contrastive_loss`).

Evaluation (`config.evals`): captions decoded greedily or by beam search and
scored per attribute and by exact match (type 'caption'); the linear probe and
k-NN on the image tower's mean token; for CoCa also zero-shot and retrieval
through its contrastive head.
"""
import functools
import logging

import jax
import ml_collections

from jaxmm import data
from jaxmm import errors
from jaxmm import evaluators
from jaxmm import losses
from jaxmm import models
from jaxmm import parallel
from jaxmm.experiments import image_text
from jaxmm.experiments import inputs
from jaxmm.models import decoding
from jaxmm.train import model_init

log = logging.getLogger("jaxmm")


def check_config(config: ml_collections.ConfigDict, contrastive: bool) -> None:
  """Raises `UserError` for a captioning value that cannot work, before anything is built."""
  if contrastive:
    loss_name = errors.one_of("loss.name", config.loss.name, image_text.LOSSES)
    errors.one_of("loss.variant", config.loss.variant, image_text.VARIANTS[loss_name])
    if config.model.embed_dim is None:
      raise errors.UserError("CoCa's contrastive loss needs an embedding: set "
                             "--config.model.embed_dim, e.g. 128")
  else:
    fraction = config.loss.parallel_fraction
    if not 0 <= fraction <= 1:
      raise errors.UserError(f"loss.parallel_fraction={fraction} is the share of examples "
                             "predicted in parallel: set it between 0 and 1")
  check_towers(config)


def check_towers(config: ml_collections.ConfigDict) -> None:
  """The image tower's settings and the decoder's widths, as `image_text.check_towers` checks a
  two-tower's."""
  image_text.check_towers(config, ("image", "decoder"))
  if config.model.decoder.max_len != config.data.max_len:
    raise errors.UserError(f"model.decoder.max_len={config.model.decoder.max_len} must be "
                           f"data.max_len={config.data.max_len}, the length captions have")


def make_loss_fn(model, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                 contrastive: bool):
  """loss_fn(params, model_state, batch, rng) -> (loss, metrics, model_state) for the train step."""
  caption_loss = parallel.over_batch_axes(losses.caption_loss, mesh, num_batched=3)
  contrastive_loss = image_text.make_contrastive_loss(config.loss, mesh) if contrastive else None
  fraction = 0.0 if contrastive else config.loss.parallel_fraction
  pad_id = config.model.decoder.pad_id

  def loss_fn(params, model_state, batch, rng):
    tokens = batch["tokens"]
    parallel_rng, dropout_rng = jax.random.split(rng)
    in_parallel = None
    if fraction:
      in_parallel = jax.random.bernoulli(parallel_rng, fraction, tokens.shape[:1])
    out = model.apply({"params": params},
                      batch["image"],
                      tokens,
                      in_parallel,
                      train=True,
                      rngs={"patch_dropout": dropout_rng})
    loss = caption_loss(out["logits"], tokens, losses.target_weights(tokens, pad_id))
    metrics = {"caption_loss": loss}
    if contrastive:
      metrics["contrastive_loss"] = contrastive_loss(out["zimg"], out["ztxt"], out)
      loss = metrics["contrastive_loss"] + config.loss.caption_weight * loss
    return loss, metrics, model_state

  return loss_fn


def caption_fn(model):
  """(params, images [b, S, S, 3], beam) -> caption tokens int32 [b, L]."""
  return lambda p, x, beam: decoding.caption_images(model, p, x, beam=beam)


def evaluator_parts(model, tokenizer, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                    workdir: str | None, contrastive: bool) -> evaluators.Parts:
  """What the evaluators use: the captioner, the image tower's features and, for CoCa, the
  contrastive text feature."""
  encoders = {"image": ("image", image_text.encode_image(model))}
  if contrastive:
    encoders["text"] = ("tokens", image_text.encode_text(model))
  batches = functools.partial(inputs.eval_batches, config)
  text = dict(encode_text=image_text.encode_text(model),
              tokenize=lambda texts: tokenizer.encode_batch(texts, config.data.max_len))
  return evaluators.Parts(config=config,
                          mesh=mesh,
                          workdir=workdir,
                          variables=lambda state: state.params,
                          embeddings=evaluators.SplitEmbeddings(encoders, batches, mesh),
                          eval_batches=batches,
                          caption=caption_fn(model),
                          detokenize=lambda rows: [tokenizer.decode(row) for row in rows],
                          **(text if contrastive else {}))


def build(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh, *,
          contrastive: bool) -> dict:
  """The experiment's parts for `jaxmm.train.run`: init, loss, data and the evaluators of
  `config.evals`; `contrastive` adds CoCa's contrastive loss."""
  check_config(config, contrastive)
  tokenizer = data.get_tokenizer(config.data.tokenizer)
  image_text.check_tokenizer(tokenizer, config, "decoder")
  model = models.get_model(config.model)
  truncation = data.truncation_warning(config.data)
  if truncation:
    log.warning("%s (a cut caption has no end of text to learn)", truncation)
  return dict(init_variables=model_init.make_init_variables(model, config),
              loss_fn=make_loss_fn(model, config, mesh, contrastive),
              train_data=inputs.train_data(config),
              evaluators=evaluators.build_evaluators(
                  evaluator_parts(model, tokenizer, config, mesh, workdir, contrastive)))
