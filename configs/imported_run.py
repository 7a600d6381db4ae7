"""The config of a run whose weights were imported (`jaxmm import`), from its format's settings.

`config_from(settings)` takes what a format's `run_settings` says about an
architecture (`jaxmm.weights.open_clip`, `jaxmm.weights.big_vision`): the
model, the data keys it needs and the loss. The rest is the CLIP shapes config
with fine-tuning settings, so `jaxmm train` with this config resumes an
imported run's step 0 checkpoint on the shapes data, or on any other
(--config.data.name=...). The model computes in float32, as the weights' own
model does; --config.model.dtype=bfloat16 fine-tunes faster on accelerators.
"""
from jaxmm.configs import clip_shapes


def config_from(settings: dict):
  config = clip_shapes.get_config("small")
  config.model = settings["model"]
  config.data.update(settings["data"])
  # One length for tokenizer and position embeddings, as in the other configs.
  config.model.text.max_len = config.data.get_ref("max_len")
  # The brightness augmentation clips to [-1, 1], the range of jaxmm's own normalisation.
  config.data.augment = False
  config.loss.name = settings["loss"]
  config.loss.variant = "ring" if settings["loss"] == "siglip" else "gather"
  # Fine-tuning, not pretraining: a small learning rate after a short warmup, and
  # the AdamW settings CLIP trained its ViTs with (Radford et al. 2021).
  config.total_steps = 1000
  config.optim.update(lr=1e-5, warmup_steps=100, weight_decay=0.1, b2=0.98, eps=1e-6)
  return config
