"""An open_clip ViT CLIP as a jaxmm run: the config that `jaxmm import open_clip` writes.

  jaxmm import open_clip --arch ViT-B-32 --weights open_clip_model.safetensors --out runs/b32
  jaxmm train --config configs/open_clip.py:ViT-B-32 --workdir runs/b32 --config.total_steps=2000

ARCH is a name of `jaxmm.weights.open_clip.ARCHS` (ViT-B-32, ViT-B-16, ViT-L-14,
and their -quickgelu variants for OpenAI's weights) or the path of an open_clip
model config .json. The model, tokenizer and image normalisation are the
architecture's (`jaxmm.weights.open_clip.run_settings`); the rest is
`imported_run.config_from`'s: the CLIP shapes config with fine-tuning settings.
"""
from jaxmm.configs import imported_run
from jaxmm.weights import open_clip


def get_config(arch: str = "ViT-B-32"):
  return imported_run.config_from(open_clip.run_settings(*open_clip.read_arch(arch), arch))
