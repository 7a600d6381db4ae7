"""CoCa (Yu et al. 2022) on the shapes dataset: CapPa's captioner with unimodal text layers
before the decoder's cross-attention ones, and a SigLIP loss between the mean image token and
the unimodal layers' feature at the end of the caption, added to λ times the captioning loss
(experiments/captioning.py).

  jaxmm train --config configs/coca_shapes.py --workdir runs/coca_shapes
  jaxmm caption --run runs/coca_shapes --split test --num 8

Everything else is configs/cappa_shapes.py's (and so configs/siglip_shapes.py's).
"""
from jaxmm import losses
from jaxmm.configs import cappa_shapes
from jaxmm.configs import siglip_shapes


def get_config(arg: str = "small"):
  config = cappa_shapes.get_config(arg)
  config.experiment = "coca"
  siglip = siglip_shapes.get_config(arg)
  # One unimodal layer, as many multimodal ones as the text tower has layers.
  config.model.decoder.unimodal_depth = 1
  config.model.embed_dim = siglip.model.embed_dim
  config.model.init_log_scale = losses.SIGLIP_INIT_LOG_SCALE
  config.model.init_bias = losses.SIGLIP_INIT_BIAS
  # λ_Cap = 2 against λ_Con = 1, the paper's weights (Sec. 4.1).
  config.loss = dict(siglip.loss.to_dict(), caption_weight=2.0)
  config.evals.zero_shot = siglip.evals.zero_shot
  config.evals.retrieval = siglip.evals.retrieval
  return config
