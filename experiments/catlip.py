"""CatLIP (Mehta et al. 2024): image-text pretraining as multi-label classification.

Each caption becomes the multi-hot vector of the label-vocabulary words it
contains (`jaxmm.data.caption_labels`; caption words stand in for the
paper's WordNet synsets), and the image tower alone learns to predict them
with a binary cross-entropy per label (`jaxmm.losses.binary_cross_entropy_loss`),
through one linear layer (`jaxmm.models.CatLIP`). There is no text tower and
no loss across the batch, which is where the paper's savings per step come from.

The vocabulary is built once from data.train_split's captions (the words with
at least data.label_min_count occurrences) and written to the workdir
(`VOCABULARY_FILE`), so a resumed run, and anyone reading the run, uses the
same label indices; its size is config.model.num_labels. Evaluation
(`config.evals`: linear probe and k-NN) reads the tower's unit-norm pooled
features; zero-shot and retrieval need a text tower and are errors here.
"""
import functools
import json
import logging
import os

import jax
import ml_collections
import numpy as np

from jaxmm import data
from jaxmm import errors
from jaxmm import evaluators
from jaxmm import losses
from jaxmm import models
from jaxmm.data import caption_labels
from jaxmm.experiments import image_text
from jaxmm.experiments import inputs
from jaxmm import storage
from jaxmm.train import model_init

# The label vocabulary in the workdir: {"min_count": int, "words": [V], "counts": [V]}.
VOCABULARY_FILE = "caption_vocabulary.json"

log = logging.getLogger("jaxmm")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `UserError` for a value that cannot work, before anything is built."""
  errors.integer_at_least("data.label_min_count", config.data.label_min_count, 1)
  image_text.check_towers(config, ("image",))
  try:
    data.check_features(config.data, need_text=True)
  except errors.UserError as error:
    raise errors.UserError(f"CatLIP's labels are words of the captions: {error}") from None


def build_vocabulary(config: ml_collections.ConfigDict) -> dict:
  """{'min_count', 'words', 'counts'} of data.train_split's captions; a `UserError` when no word
  occurs data.label_min_count times."""
  min_count, split = config.data.label_min_count, config.data.train_split
  reader = data.split_reader(config.data, split)
  captions = reader.read(np.arange(reader.num_examples))[config.data.text_key]
  counts = caption_labels.word_counts(captions)
  words = caption_labels.vocabulary(counts, min_count)
  if not words:
    if not counts:
      raise errors.UserError(f"the {len(captions)} {split} captions of data.text_key="
                             f"{config.data.text_key!r} hold no words; set --config.data.text_key "
                             "to the feature that holds the captions")
    top, top_count = min(counts.items(), key=lambda item: (-item[1], item[0]))
    raise errors.UserError(f"data.label_min_count={min_count} leaves no label: the most frequent "
                           f"word of the {split} captions, {top!r}, occurs {top_count} times; set "
                           f"--config.data.label_min_count={top_count} or less")
  return {"min_count": min_count, "words": list(words), "counts": [counts[w] for w in words]}


def label_vocabulary(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """The workdir's label words, built and written there by process 0 on a new run."""
  path = os.path.join(workdir, VOCABULARY_FILE)
  if storage.exists(path):
    vocabulary = json.loads(storage.read_text(path))
    if vocabulary["min_count"] != config.data.label_min_count:
      raise errors.UserError(f"{path} was built with data.label_min_count="
                             f"{vocabulary['min_count']}; set --config.data.label_min_count="
                             f"{vocabulary['min_count']} to resume, or use a new --workdir")
  else:
    vocabulary = build_vocabulary(config)
    if jax.process_index() == 0:
      storage.make_dirs(workdir)
      storage.write_text(path, json.dumps(vocabulary, indent=1))
  log.info("label vocabulary: %d words with at least %d occurrences (%s)",
           len(vocabulary["words"]), vocabulary["min_count"], ", ".join(vocabulary["words"][:20]))
  return vocabulary["words"]


def set_num_labels(config: ml_collections.ConfigDict, words: list[str]) -> None:
  """config.model.num_labels := V, the vocabulary's size, so that the saved config rebuilds the
  model; a `UserError` for another value given on the command line."""
  wanted = config.model.num_labels
  if wanted is not None and wanted != len(words):
    raise errors.UserError(f"model.num_labels={wanted}, but the label vocabulary has "
                           f"{len(words)} words; leave model.num_labels=None (it is set from "
                           "the vocabulary)")
  config.model.num_labels = len(words)


def make_loss_fn(model):
  """loss_fn(params, model_state, batch, rng) -> (loss, metrics, model_state) for the train step.

  The loss is the mean binary cross-entropy of the label logits [B, V] against
  batch['caption_labels'] [B, V]; the step's jit reduces the sharded batch.
  """

  def loss_fn(params, model_state, batch, rng):
    logits = model.apply({"params": params}, batch["image"], train=True,
                         rngs={"patch_dropout": rng})
    return losses.binary_cross_entropy_loss(logits, batch["caption_labels"]), {}, model_state

  return loss_fn


def evaluator_parts(model, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                    workdir: str | None) -> evaluators.Parts:
  """What the evaluators embed with: the image tower's features of the params."""
  embeddings = evaluators.SplitEmbeddings(
      {"image": ("image", image_text.encode_image(model))},
      functools.partial(inputs.eval_batches, config), mesh)
  return evaluators.Parts(config=config,
                          mesh=mesh,
                          workdir=workdir,
                          variables=lambda state: state.params,
                          embeddings=embeddings)


def build(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh) -> dict:
  """The experiment's parts for `jaxmm.train.run`: init, loss, data and the evaluators of
  `config.evals`."""
  check_config(config)
  tokenizer = data.get_tokenizer(config.data.tokenizer)
  words = label_vocabulary(config, workdir)
  set_num_labels(config, words)
  model = models.get_model(config.model)
  truncation = data.truncation_warning(config.data)
  if truncation:
    log.warning("%s (the words past the cut are no labels)", truncation)
  train_data = caption_labels.CaptionLabelBatches(inputs.train_data(config), tokenizer, words)
  return dict(init_variables=model_init.make_init_variables(model, config),
              loss_fn=make_loss_fn(model),
              train_data=train_data,
              evaluators=evaluators.build_evaluators(
                  evaluator_parts(model, config, mesh, workdir)))
