"""CatLIP (Mehta et al. 2024) on the shapes dataset: SigLIP's run with the captions turned into
multi-label targets and the text tower and contrastive loss replaced by a linear layer of label
logits and a binary cross-entropy (experiments/catlip.py).

  jaxmm train --config configs/catlip_shapes.py --workdir runs/catlip_shapes

Everything else (data, image tower, optimizer, steps, the linear probe and k-NN)
is configs/siglip_shapes.py's, so the two runs compare like for like.
"""
from jaxmm.configs import siglip_shapes


def get_config(arg: str = "small"):
  config = siglip_shapes.get_config(arg)
  config.experiment = "catlip"
  # The label vocabulary: the caption words of data.train_split that occur at least this often
  # (the paper keeps WordNet synsets seen at least 500 times in its 1.3B captions). shapes has
  # 22 words besides stop words, each occurring over 2,000 times in its 20,000 training captions.
  config.data.label_min_count = 100
  image = config.model.image
  config.model = dict(name="catlip",
                      image=image.to_dict(),
                      num_labels=None,  # set from the vocabulary's size by the experiment
                      dtype=config.model.dtype,
                      activation_dtype=config.model.activation_dtype,
                      remat=config.model.remat,
                      attention=config.model.attention)
  del config.loss  # the binary cross-entropy has no settings
  # Zero-shot classification and retrieval compare images with caption embeddings: no text tower.
  del config.evals["zero_shot"]
  del config.evals["retrieval"]
  return config
