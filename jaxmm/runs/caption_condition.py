"""A text-to-image diffusion run's condition: captions through a contrastive run's text tower.

A diffusion run is text-conditioned when its `config.model.text` holds the
architecture of a text tower (`jaxmm.models.caption_conditioning`); the
tower's weights come from an image-text run through `config.init_from`, and
its captions are tokenized with that run's tokenizer (`data.tokenizer`,
`data.max_len`). Classifier-free guidance's null condition is then the
empty caption, every token the pad id.
"""
import logging

import ml_collections
import numpy as np

from jaxmm import data
from jaxmm import diffusion
from jaxmm import errors
from jaxmm.runs import run_files

log = logging.getLogger("jaxmm")


def is_text_conditioned(config: ml_collections.ConfigDict) -> bool:
  """Whether the diffusion run of `config` is conditioned on captions (model.text is set)."""
  return config.model.get("text") is not None


def null_condition(config: ml_collections.ConfigDict) -> int:
  """The value of every entry of the null condition ∅: the text tower's pad id (the empty
  caption) for a text-conditioned run, else `diffusion.NULL_LABEL`."""
  if is_text_conditioned(config):
    return int(config.model.text.get("pad_id", 0))
  return diffusion.NULL_LABEL


def check_text_source(config: ml_collections.ConfigDict) -> None:
  """Raises `UserError` unless `config.init_from` names an image-text run whose text tower and
  tokenizer are the ones `config.model.text` and `config.data` use."""
  source = config.init_from.workdir
  if source is None:
    log.warning("init_from.workdir is None: the text tower starts from random weights")
    return
  try:
    saved = run_files.run_config(source)
  except run_files.NoRun as e:
    raise errors.UserError(f"init_from.workdir={source!r}: {e}; train an image-text run first "
                           "(`make train` writes runs/siglip_shapes)") from e
  if saved.experiment != "image_text" or saved.model.get("text") is None:
    raise errors.UserError(f"init_from.workdir={source!r} is an experiment={saved.experiment!r} "
                           "run without a text tower; condition on an image-text run's text "
                           "tower, e.g. runs/siglip_shapes (`make train`)")
  for key in ("tokenizer", "max_len"):
    if saved.data.get(key) != config.data.get(key):
      raise errors.UserError(f"init_from.workdir={source!r} reads text with data.{key}="
                             f"{saved.data.get(key)!r}, this run with {config.data.get(key)!r}; "
                             f"set --config.data.{key}={saved.data.get(key)!r}")
  ours = {k: v for k, v in config.model.text.items() if k != "max_len"}
  theirs = {k: saved.model.text.get(k) for k in ours}
  if ours != theirs:
    raise errors.UserError(f"model.text={ours} differs from the text tower of "
                           f"init_from.workdir={source!r} ({theirs}); set model.text to it")


def tokenize_prompts(config: ml_collections.ConfigDict, prompts) -> np.ndarray:
  """int32 [N, max_len]: the prompts (str) as the run's pipeline tokenizes captions.

  A `UserError` for no prompts or a prompt that is not a string; a prompt longer
  than data.max_len tokens is cut, with a warning that says what was cut.
  """
  if isinstance(prompts, str) or not len(prompts):
    raise errors.UserError("--prompt: give a list of one or more prompts, e.g. "
                           "prompts=['a large red star in the top left']")
  if not all(isinstance(p, str) for p in prompts):
    raise errors.UserError("--prompt: every prompt must be a string")
  tokenizer = data.get_tokenizer(config.data.tokenizer)
  max_len = config.data.max_len
  tokens = data.tokenize(config.data, list(prompts))
  for prompt, row in zip(prompts, tokens):
    if tokenizer.token_count(prompt) > max_len:
      kept = tokenizer.decode(row)
      log.warning("prompt %r is longer than data.max_len=%d tokens; cut to %r (dropped %r)",
                  prompt, max_len, kept, prompt[len(kept):])
  return tokens
