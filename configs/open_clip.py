"""An open_clip ViT CLIP as a jaxmm run: the config that `jaxmm import open_clip` writes.

  jaxmm import open_clip --arch ViT-B-32 --weights open_clip_model.safetensors --out runs/b32
  jaxmm train --config configs/open_clip.py:ViT-B-32 --workdir runs/b32 --config.total_steps=2000

ARCH is a name of `jaxmm.weights.open_clip.ARCHS` (ViT-B-32, ViT-B-16, ViT-L-14,
and their -quickgelu variants for OpenAI's weights) or the path of an open_clip
model config .json. The model, tokenizer and image normalisation are the
architecture's (`jaxmm.weights.open_clip.run_settings`); the rest is the CLIP
shapes config with fine-tuning settings, so `jaxmm train` with this config
resumes an imported run's step 0 checkpoint on the shapes data, or on any
other (--config.data.name=...). The model computes in float32, as the
weights' own model does; --config.model.dtype=bfloat16 fine-tunes faster on
accelerators.
"""
from jaxmm.configs import clip_shapes
from jaxmm.weights import open_clip


def get_config(arch: str = "ViT-B-32"):
  settings = open_clip.run_settings(*open_clip.read_arch(arch), arch)
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
