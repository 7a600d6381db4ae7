"""A big_vision two-tower SigLIP as a jaxmm run: the config that `jaxmm import big_vision` writes.

  jaxmm import big_vision --arch So400m/14 --weights webli_en_so400m_224_57633886.npz \
      --vocab cc_en.32000.model --out runs/so400m
  jaxmm train --config configs/siglip_big_vision.py:So400m/14 --workdir runs/so400m_ft \
      --config.init_from.workdir=runs/so400m --config.data.tokenizer=big_vision:cc_en.32000.model

ARCH is a name of `jaxmm.weights.big_vision.ARCHS` (B/16, B/16-256, ..., L/16-256,
So400m/14, So400m/14-384, B/16-i18n-256: the released SigLIPs) or the path of a
.json with big_vision's model config and init_shapes. The model and input
sizes are the architecture's (`jaxmm.weights.big_vision.run_settings`); the
rest is `imported_run.config_from`'s. The tokenizer is big_vision's sticky-EOS
SentencePiece ('big_vision:PATH'), whose vocabulary jaxmm does not ship: the
import writes the path it was given, and this config, with no path, needs
--config.data.tokenizer=big_vision:PATH to read text (the memory planner and
the benchmarks need none).
"""
from jaxmm.configs import imported_run
from jaxmm.weights import big_vision


def get_config(arch: str = "B/16"):
  config = imported_run.config_from(big_vision.run_settings(big_vision.read_arch(arch), arch))
  # With --config.init_from.workdir=DIR, a new run starts from every parameter of the imported
  # run DIR: fine-tuning into a workdir of its own.
  model = config.model
  copied = ["image_tower", "text_tower", "text_proj", "log_scale"]
  copied += ["image_proj"] if model.image_projection else []
  copied += ["bias"] if model.init_bias is not None else []
  config.init_from.subtrees = {name: name for name in copied}
  return config
