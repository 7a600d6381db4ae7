"""CapPa (Tschannen et al. 2023) on the shapes dataset: a ViT whose tokens a text decoder reads
to write the caption, trained with the captioning loss alone (experiments/captioning.py).

  jaxmm train --config configs/cappa_shapes.py --workdir runs/cappa_shapes
  jaxmm caption --run runs/cappa_shapes --split test --num 8

Data, image tower and optimizer are configs/siglip_shapes.py's, so the image
representations (linear probe, k-NN) compare like for like; the text tower
becomes a decoder of the same width with cross-attention to the 16 image tokens.
"""
from jaxmm.configs import siglip_shapes


def get_config(arg: str = "small"):
  config = siglip_shapes.get_config(arg)
  config.experiment = "cappa"
  text = config.model.text
  config.model = dict(
      name="captioner",
      image=dict(config.model.image.to_dict(), pool="none"),
      decoder=dict(vocab_size=text.vocab_size,
                   pad_id=text.pad_id,
                   width=text.width,
                   depth=text.depth,
                   unimodal_depth=0,
                   num_heads=text.num_heads,
                   mlp_dim=text.mlp_dim,
                   max_len=config.data.max_len),
      embed_dim=None,  # no contrastive head
      dtype=config.model.dtype,
      activation_dtype=config.model.activation_dtype,
      remat=config.model.remat,
      attention=config.model.attention)
  # One length for tokenizer and decoder: overriding data.max_len sets both.
  config.model.decoder.max_len = config.data.get_ref("max_len")
  # The share of examples whose decoder inputs are all mask tokens (parallel prediction); the
  # paper's 0.75.
  config.loss = dict(parallel_fraction=0.75)
  # Greedy captions of the first 500 test images: every token is a pass of the decoder over the
  # whole caption buffer, so the full split costs minutes on 2 CPU cores (`jaxmm caption`
  # scores all of it).
  config.evals.caption = dict(type="caption", every=None, batch_size=500, beam=1,
                              num_examples=500)
  # Zero-shot classification and retrieval compare images with caption embeddings: no text tower.
  del config.evals["zero_shot"]
  del config.evals["retrieval"]
  return config
