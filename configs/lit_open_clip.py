"""LiT (Zhai et al. 2022) from an imported run (open_clip or big_vision): its image tower and
projection, locked, meet a new text tower trained on shapes.

  jaxmm import open_clip --arch ViT-B-32 --weights open_clip_model.safetensors --out runs/b32
  jaxmm train --config configs/lit_open_clip.py:runs/b32 --workdir runs/lit_b32

The ARG is the imported run's workdir: its config gives the image tower, the
joint embedding size, the projections' bias, whether the image tower is
projected at all (big_vision's SigLIPs are not) and the image normalisation;
the text tower, tokenizer and training are lit_shapes.py's.
"""
from jaxmm.configs import lit_shapes
from jaxmm.runs import run_files


def get_config(run_dir: str):
  imported = run_files.run_config(run_dir)
  config = lit_shapes.get_config("small")
  config.init_from.workdir = run_dir
  image_projection = imported.model.get("image_projection", True)
  config.model.update(image=imported.model.image,
                      embed_dim=imported.model.embed_dim,
                      proj_bias=imported.model.proj_bias,
                      image_projection=image_projection)
  if not image_projection:
    locked = ("image_tower",)
    config.init_from.subtrees = {name: name for name in locked}
    config.optim.partition = tuple((f"{name}/.*", "frozen") for name in locked)
  config.data.update(image_size=imported.data.image_size,
                     image_mean=imported.data.image_mean,
                     image_std=imported.data.image_std,
                     augment=False)
  return config
