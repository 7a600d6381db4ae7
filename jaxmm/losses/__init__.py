"""Losses as pure functions: contrastive (contrastive.py), multi-label (multilabel.py),
captioning (caption.py)."""
from jaxmm.losses.caption import caption_loss
from jaxmm.losses.caption import target_weights
from jaxmm.losses.contrastive import CLIP_INIT_LOG_SCALE
from jaxmm.losses.contrastive import CLIP_VARIANTS
from jaxmm.losses.contrastive import SIGLIP_INIT_BIAS
from jaxmm.losses.contrastive import SIGLIP_INIT_LOG_SCALE
from jaxmm.losses.contrastive import SIGLIP_VARIANTS
from jaxmm.losses.contrastive import SUPCON_CONTRAST_MODES
from jaxmm.losses.contrastive import SUPCON_TEMPERATURE
from jaxmm.losses.contrastive import clip_loss
from jaxmm.losses.contrastive import siglip_loss
from jaxmm.losses.contrastive import supcon_loss
from jaxmm.losses.multilabel import binary_cross_entropy_loss
