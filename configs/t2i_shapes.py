"""Text-to-image on shapes: EDM diffusion conditioned on captions through SigLIP's text tower.

The denoiser (configs/diffusion_shapes.py's U-Net, or its DiT) reads each
caption ("a small green cross in the bottom right") through the text tower
of the image-text run that `make train` writes (runs/siglip_shapes): its
pooled vector joins the noise embedding, and cross-attention reads its
tokens where the denoiser has self-attention (jaxmm.models.caption_conditioning).
The tower is copied with `init_from` and frozen with `optim.partition`; 10 %
of the captions are dropped to the empty one, classifier-free guidance's
null condition. The 8 held-out (shape, colour) pairs never occur in training.

  jaxmm train --config configs/t2i_shapes.py --workdir runs/t2i_shapes
  jaxmm sample --run runs/t2i_shapes --prompt "a large red star in the top left" --out x.png

Variants (the `ARG` of `--config configs/t2i_shapes.py:ARG`, joined by ','):
  unet:     the U-Net (the default).
  dit:      the DiT, cross-attention in every block.
  finetune: the text tower trains too, at a tenth of the learning rate.
"""
import ml_collections

from jaxmm.configs import diffusion_shapes
from jaxmm.configs import siglip_shapes

# Where the text tower is, in this model and in the image-text run.
TEXT_TOWER = "caption/text_tower"
SOURCE_TOWER = "text_tower"


def get_config(arg: str = "unet") -> ml_collections.ConfigDict:
  """The EDM config of the model variant in `arg` with its caption read by a text tower."""
  options = set(arg.split(","))
  unknown = options - {"unet", "dit", "finetune"}
  if unknown or {"unet", "dit"} <= options:
    raise ValueError(f"unknown config variant {arg!r}; valid: unet or dit, optionally "
                     "with ',finetune'")
  config = diffusion_shapes.get_config("dit" if "dit" in options else "unet", schedule="edm")
  source = siglip_shapes.get_config("small")

  # Captions, tokenized as the image-text run tokenizes them; no labels.
  config.data.text_key = "caption"
  config.data.label_keys = ()
  config.data.tokenizer = source.data.tokenizer
  config.data.max_len = source.data.max_len
  config.model.num_classes = ()
  config.model.text = source.model.text.to_dict()
  # One length for tokenizer and position embeddings: overriding either sets both.
  config.model.text.max_len = config.data.get_ref("max_len")

  config.init_from = dict(workdir="runs/siglip_shapes",
                          step=None,
                          subtrees={TEXT_TOWER: SOURCE_TOWER})
  tower = f"{TEXT_TOWER}/.*"
  config.optim.partition = ((tower, 0.1),) if "finetune" in options else ((tower, "frozen"),)

  # The judge (jaxmm.evaluators.prompt_judge): samples of prompts drawn from the test captions
  # and of the 8 held-out (shape, colour) pairs, read back by the image-text run `run`.
  config.evals = dict(
      prompt_judge=dict(type="prompt_judge",
                        every=None,
                        run="runs/siglip_shapes",
                        num_prompts=48,
                        per_held_out_pair=4,
                        probe_examples=5000,
                        sampler="heun",
                        num_steps=10,
                        guidance=2.0))
  return config
