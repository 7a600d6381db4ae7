"""open_clip's ViT CLIPs as jaxmm two-tower runs, and back (Ilharco et al. 2021).

An architecture is an open_clip model config: one of ARCHS (open_clip's names),
or the path of a model config .json, as in open_clip's model_configs/ (or an
open_clip_config.json, whose preprocess_cfg gives the image mean and std).
`run_settings` says what it is in jaxmm's config keys:

  open_clip                                  jaxmm
  vision pool_type 'tok' (the class token)   model.image.pool='cls'
  ln_pre (unless no_ln_pre)                  model.image.ln_pre=True
  nn.GELU (erf) / quick_gelu: QuickGELU      model.{image,text}.activation='gelu' / 'quick_gelu'
  torch's LayerNorm epsilon 1e-5             model.{image,text}.norm_eps=1e-5
  causal text attention, pool_type 'argmax'  model.text.causal=True, model.text.pool='eot'
  projections without bias                   model.proj_bias=False
  CLIP's BPE tokenizer, context_length       data.tokenizer='clip_bpe', data.max_len
  the image mean and std                     data.image_mean, data.image_std
  init_logit_bias (a SigLIP loss)            model.init_bias, loss.name='siglip'

`read_params` reads a checkpoint's tensors into the parameters of such a
run's model, by the table of `open_clip_links`; `write_checkpoint` writes a
run's parameters back, with `model_config`, the open_clip model config of the
run, beside them.
"""
import json
import math
import os

import ml_collections

from jaxmm.errors import UserError
from jaxmm.weights import archs
from jaxmm.weights import links
from jaxmm.weights import open_clip_links
from jaxmm.weights import run_dir
from jaxmm.weights import safetensors

# open_clip's OPENAI_DATASET_MEAN and _STD, its default image normalisation.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TORCH_NORM_EPS = 1e-5  # nn.LayerNorm's default, open_clip's unless norm_kwargs say otherwise


def _vit_clip(embed_dim, width, layers, patch_size, text_width, text_heads, quick_gelu=False):
  """open_clip's model config of a ViT CLIP at 224 px with a 12-layer text tower of 77 tokens."""
  return dict(embed_dim=embed_dim,
              quick_gelu=quick_gelu,
              vision_cfg=dict(image_size=224, layers=layers, width=width, patch_size=patch_size),
              text_cfg=dict(context_length=77,
                            vocab_size=49408,
                            width=text_width,
                            heads=text_heads,
                            layers=12))


_VIT_CLIPS = {
    "ViT-B-32": (512, 768, 12, 32, 512, 8),
    "ViT-B-16": (512, 768, 12, 16, 512, 8),
    "ViT-L-14": (768, 1024, 24, 14, 768, 12),
}
# The '-quickgelu' configs are for OpenAI's weights (and others trained with QuickGELU).
ARCHS = {name: _vit_clip(*dims) for name, dims in _VIT_CLIPS.items()}
ARCHS.update({f"{name}-quickgelu": _vit_clip(*dims, True) for name, dims in _VIT_CLIPS.items()})

# The options jaxmm reads from each part of a model config ('' is the top level) ...
_READ = {
    "": ("embed_dim", "quick_gelu", "init_logit_scale", "init_logit_bias", "vision_cfg",
         "text_cfg"),
    "vision_cfg": ("image_size", "layers", "width", "head_width", "mlp_ratio", "patch_size",
                   "patch_dropout", "no_ln_pre", "norm_kwargs", "act_kwargs", "output_tokens"),
    "text_cfg": ("context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio",
                 "norm_kwargs", "act_kwargs", "pad_id", "eos_id", "output_tokens"),
}
# ... and those that jaxmm's towers have only at the values listed (open_clip's defaults).
_BLOCK_DEFAULTS = dict(ls_init_value=(None,),
                       block_type=(None, "default"),
                       qk_norm=(False,),
                       scaled_cosine_attn=(False,),
                       scale_heads=(False,),
                       scale_attn_inner=(False,),
                       scale_attn=(False,),
                       scale_fc=(False,),
                       final_ln_after_pool=(False,))
_DEFAULTS_ONLY = {
    "": dict(custom_text=(False,), nonscalar_logit_scale=(False,)),
    "vision_cfg":
        dict(_BLOCK_DEFAULTS,
             attentional_pool=(False,),
             pos_embed_type=("learnable",),
             pool_type=("tok",),
             timm_model_name=(None,)),
    "text_cfg":
        dict(_BLOCK_DEFAULTS,
             embed_cls=(False,),
             no_causal_mask=(False,),
             pool_type=("argmax",),
             proj_bias=(False,),
             proj_type=("linear",),
             hf_model_name=(None,),
             hf_tokenizer_name=(None,),
             tokenizer_mode=(None,),
             tokenizer_kwargs=(None,)),
}


def read_arch(arch: str) -> tuple[dict, dict]:
  """(model config, preprocess config) of `arch`: a name in ARCHS or a .json file's path."""
  saved = archs.named_or_json(arch, {name: (cfg, {}) for name, cfg in ARCHS.items()}, "open_clip",
                              "an open_clip model config .json")
  if isinstance(saved, tuple):
    return saved
  model_cfg = saved.get("model_cfg", saved) if isinstance(saved, dict) else None
  needed = {"embed_dim", "vision_cfg", "text_cfg"}
  if not isinstance(model_cfg, dict) or not needed <= set(model_cfg):
    raise UserError(f"{arch} is not an open_clip model config: it needs embed_dim, vision_cfg "
                    "and text_cfg (as open_clip's model_configs/*.json have)")
  return model_cfg, saved.get("preprocess_cfg", {})


def _check_options(model_cfg: dict, arch: str) -> None:
  """Raises `UserError` for an option of `model_cfg` that jaxmm's towers cannot hold."""
  for part in ("", "vision_cfg", "text_cfg"):
    options = model_cfg[part] if part else model_cfg
    prefix = f"{part}." if part else ""
    archs.check_options(options, _READ[part], _DEFAULTS_ONLY[part],
                        f"{arch}: open_clip option {prefix}", "open_clip's ViT CLIPs")


def _activation(model_cfg: dict, tower: dict, arch: str) -> str:
  if model_cfg.get("quick_gelu", False):
    return "quick_gelu"
  act_kwargs = tower.get("act_kwargs") or {}
  if act_kwargs in ({}, {"approximate": "none"}):
    return "gelu"
  if act_kwargs == {"approximate": "tanh"}:
    return "gelu_tanh"
  raise UserError(f"{arch}: open_clip option act_kwargs={act_kwargs!r} has no counterpart in "
                  "jaxmm's activations")


def _norm_eps(tower: dict, arch: str) -> float:
  norm_kwargs = dict(tower.get("norm_kwargs") or {})
  eps = norm_kwargs.pop("eps", TORCH_NORM_EPS)
  if norm_kwargs:
    raise UserError(f"{arch}: open_clip option norm_kwargs {sorted(norm_kwargs)} has no "
                    "counterpart in jaxmm's LayerNorms (only eps does)")
  return eps


def _image_size(vision: dict, arch: str) -> int:
  size = vision.get("image_size", 224)
  if isinstance(size, (list, tuple)):
    if len(size) != 2 or size[0] != size[1]:
      raise UserError(f"{arch}: image_size {size} is not square; jaxmm's ViT takes square images")
    size = size[0]
  return size


def run_settings(model_cfg: dict, preprocess_cfg: dict, arch: str) -> dict:
  """{'model': config.model, 'data': the data keys it needs, 'loss': loss.name} of the open_clip
  model config `model_cfg` (`read_arch`); `arch` names it in errors (module docstring)."""
  _check_options(model_cfg, arch)
  vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
  if isinstance(vision.get("layers", 12), (list, tuple)):
    raise UserError(f"{arch}: a ResNet image tower (vision_cfg.layers {vision['layers']}); "
                    "jaxmm imports open_clip's ViT CLIPs")
  width, text_width = vision.get("width", 768), text.get("width", 512)
  activation = _activation(model_cfg, vision, arch)
  if _activation(model_cfg, text, arch) != activation or _norm_eps(vision, arch) != _norm_eps(
      text, arch):
    raise UserError(f"{arch}: the image and text towers differ in act_kwargs or norm_kwargs; "
                    "jaxmm's import takes one of each for both")
  eps = _norm_eps(vision, arch)
  image = dict(patch_size=vision.get("patch_size", 16),
               width=width,
               depth=vision.get("layers", 12),
               num_heads=width // vision.get("head_width", 64),
               mlp_dim=int(width * vision.get("mlp_ratio", 4.0)),
               pool="cls",
               stem="patch",
               patch_dropout=float(vision.get("patch_dropout", 0.0)),
               ln_pre=not vision.get("no_ln_pre", False),
               activation=activation,
               norm_eps=eps)
  text_tower = dict(vocab_size=text.get("vocab_size", 49408),
                    width=text_width,
                    depth=text.get("layers", 12),
                    num_heads=text.get("heads", 8),
                    mlp_dim=int(text_width * text.get("mlp_ratio", 4.0)),
                    max_len=text.get("context_length", 77),
                    pad_id=0,
                    pool="eot",
                    causal=True,
                    activation=activation,
                    norm_eps=eps)
  init_bias = model_cfg.get("init_logit_bias")
  model = dict(name="two_tower",
               embed_dim=model_cfg["embed_dim"],
               dtype="float32",
               activation_dtype="float32",
               remat=False,
               attention="xla",
               image=image,
               text=text_tower,
               init_log_scale=float(model_cfg.get("init_logit_scale", math.log(1 / 0.07))),
               init_bias=None if init_bias is None else float(init_bias),
               proj_bias=False)
  data = dict(image_size=_image_size(vision, arch),
              max_len=text_tower["max_len"],
              tokenizer="clip_bpe",
              image_mean=tuple(preprocess_cfg.get("mean", OPENAI_MEAN)),
              image_std=tuple(preprocess_cfg.get("std", OPENAI_STD)))
  return dict(model=model, data=data, loss="clip" if init_bias is None else "siglip")


def model_config(config) -> dict:
  """The open_clip model config of a jaxmm run's `config`; a `UserError` listing every setting
  that open_clip's CLIP cannot hold."""
  model = config.model
  if model.name != "two_tower":
    raise UserError(f"open_clip's CLIP cannot hold this run: model.name={model.name!r} "
                    "(open_clip's CLIP is a two-tower model: 'two_tower')")
  image, text = model.image, model.text
  activation, eps = image.get("activation", "gelu_tanh"), image.get("norm_eps", 1e-6)
  problems = []
  for key, value, wanted, why in [
      ("image.pool", image.pool, "cls", "open_clip's ViTs read the class token"),
      ("image.stem", image.stem, "patch", "open_clip's ViTs embed patches"),
      ("text.pool", text.get("pool", "mean"), "eot", "open_clip's text tower reads the EOT token"),
      ("text.causal", text.get("causal", False), True, "open_clip's text attention is causal"),
      ("proj_bias", model.get("proj_bias", True), False, "open_clip's projections have no bias"),
      ("text.activation", text.get("activation", "gelu_tanh"), activation,
       "open_clip's towers share model.image.activation"),
      ("text.norm_eps", text.get("norm_eps", 1e-6), eps,
       "open_clip's towers share model.image.norm_eps"),
  ] + [(f"{name}.mlp_dim", tower.mlp_dim, int(tower.width * (tower.mlp_dim / tower.width)),
        "open_clip's mlp_ratio gives it") for name, tower in (("image", image), ("text", text))]:
    if value != wanted:
      problems.append(f"model.{key}={value!r} ({why}: {wanted!r})")
  if problems:
    raise UserError("open_clip's CLIP cannot hold this run: " + "; ".join(problems))
  norm = {} if eps == TORCH_NORM_EPS else dict(norm_kwargs=dict(eps=eps))
  act = dict(act_kwargs=dict(approximate="tanh")) if activation == "gelu_tanh" else {}
  model_cfg = dict(embed_dim=model.embed_dim,
                   quick_gelu=activation == "quick_gelu",
                   init_logit_scale=model.init_log_scale,
                   vision_cfg=dict(image_size=config.data.image_size,
                                   layers=image.depth,
                                   width=image.width,
                                   head_width=image.width // image.num_heads,
                                   mlp_ratio=image.mlp_dim / image.width,
                                   patch_size=image.patch_size,
                                   patch_dropout=image.patch_dropout,
                                   no_ln_pre=not image.get("ln_pre", False),
                                   **norm,
                                   **act),
                   text_cfg=dict(context_length=text.max_len,
                                 vocab_size=text.vocab_size,
                                 width=text.width,
                                 heads=text.num_heads,
                                 layers=text.depth,
                                 mlp_ratio=text.mlp_dim / text.width,
                                 **norm,
                                 **act))
  if model.init_bias is not None:
    model_cfg["init_logit_bias"] = model.init_bias
  return model_cfg


def read_params(path: str, config: ml_collections.ConfigDict, what: str) -> dict:
  """The parameters of `config`'s model (float32 NumPy) from open_clip's checkpoint at `path`
  (.safetensors). A file of another architecture is a `UserError` naming its first tensor that
  does not fit, `what` (e.g. the flag and the architecture) naming the file."""
  tensors = safetensors.read(path)
  table = open_clip_links.links(config.model)
  abstract = run_dir.abstract_params(config)
  links.check_checkpoint(table, abstract, {key: t.shape for key, t in tensors.items()}, what)
  return links.params_from_peer(table, abstract, tensors)


def write_checkpoint(path: str, config: ml_collections.ConfigDict, params) -> str:
  """Writes the `params` of a run of `config` to `path` (.safetensors) as open_clip's
  checkpoint, and the open_clip model config beside it; returns the config's path, whose
  stem `open_clip.add_model_config` makes the architecture's name."""
  model_cfg = model_config(config)
  safetensors.write(path, links.peer_from_params(open_clip_links.links(config.model), params),
                    metadata={"format": "pt"})
  config_path = os.path.splitext(path)[0] + ".json"
  with open(config_path, "w", encoding="utf-8") as f:
    f.write(json.dumps(model_cfg, indent=2) + "\n")
  return config_path
