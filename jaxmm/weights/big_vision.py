"""big_vision's two-tower SigLIPs as jaxmm two-tower runs, and back (Zhai et al. 2023).

An architecture is what big_vision builds a two-tower model from: its
`config.model` (the keyword arguments of `two_towers.Model`: `image` and
`text` tower settings, `out_dim`, `temperature_init`, `bias_init`) and its
`config.init_shapes` (the image and text input shapes, which fix the position
embeddings). It is one of ARCHS, the released SigLIP checkpoints (named as
big_vision names them, '-RES' where the resolution is not 224), or the path
of a .json holding {"model": ..., "init_shapes": ...}. `run_settings` says
what it is in jaxmm's config keys:

  big_vision                                   jaxmm
  vit variant 'B/16', 'So400m/14', ...         model.image patch_size, width, depth, ...
  pool_type 'map' / 'gap' / 'tok'              model.image.pool='map' / 'gap' / 'cls'
  out_dim (None, E): no image head             model.image_projection=False, embed_dim=E
  text pool_type 'last', all positions attend  model.text.pool='last', model.text.mask_pad=False
  temperature_init, bias_init (t, b)           model.init_log_scale=log(...), model.init_bias
  tokenize(eos='sticky', pad_value=1)          data.tokenizer='big_vision:VOCAB.model'
  value_range(-1, 1)                           data.image_mean=None (jaxmm's [-1, 1])

flax's LayerNorm epsilon (1e-6) and tanh GELU are jaxmm's defaults. The
vocabulary is T5's SentencePiece model (c4_en; mc4 for the multilingual
SigLIP), which jaxmm does not ship: the import takes its path.

`read_params` reads a checkpoint (.npz, '/'-joined keys, with or without the
'params/' prefix, blocks as big_vision's python loop or its `scan` stacks
them) into the parameters of such a run's model, by `big_vision_links`'s
table; `write_checkpoint` writes a run's parameters back as the python-loop
layout that `big_vision.utils.load_params` and `two_towers.load` read.
"""
import json
import math
import os
import zipfile

import ml_collections
import ml_dtypes
import numpy as np

from jaxmm import errors
from jaxmm.errors import UserError
from jaxmm.weights import archs
from jaxmm.weights import big_vision_links
from jaxmm.weights import links
from jaxmm.weights import run_dir

# big_vision's ViT variants (Zhai et al. 2022, "Scaling vision transformers", Table 2; So400m:
# Alabdulmohsin et al. 2023): name -> (width, depth, mlp_dim, num_heads).
VARIANTS = {
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
}
# T5's SentencePiece vocabularies end every text with id 1, '</s>', and SigLIP pads with it.
EOS_ID = 1


def _siglip(image_variant, text_variant, embed_dim, resolution, text_len, vocab_size=32_000):
  """A released SigLIP (big_vision's SigLIP_demo): a MAP-pooled ViT without head, a text
  transformer with one, the logit scale 10 and bias -10 it trained from."""
  return dict(model=dict(image=dict(variant=image_variant, pool_type="map"),
                         text=dict(variant=text_variant, vocab_size=vocab_size),
                         out_dim=[None, embed_dim],
                         bias_init=-10.0,
                         temperature_init=10.0),
              init_shapes=[[1, resolution, resolution, 3], [1, text_len]])


ARCHS = {
    "B/16": _siglip("B/16", "B", 768, 224, 64),
    "B/16-256": _siglip("B/16", "B", 768, 256, 64),
    "B/16-384": _siglip("B/16", "B", 768, 384, 64),
    "B/16-512": _siglip("B/16", "B", 768, 512, 64),
    "L/16-256": _siglip("L/16", "L", 1024, 256, 64),
    "L/16-384": _siglip("L/16", "L", 1024, 384, 64),
    "So400m/14": _siglip("So400m/14", "So400m", 1152, 224, 16),
    "So400m/14-384": _siglip("So400m/14", "So400m", 1152, 384, 64),
    "B/16-i18n-256": _siglip("B/16", "B", 768, 256, 64, vocab_size=250_000),
}

# The tower options jaxmm reads, and those it holds at the listed values only (the first is
# big_vision's default); the rest (dropout, scan, remat_policy, dtype_mm, head_zeroinit) do
# not change what a trained model computes.
_IGNORED = ("dropout", "scan", "remat_policy", "dtype_mm", "head_zeroinit")
_READ = {
    "image": ("variant", "patch_size", "width", "depth", "mlp_dim", "num_heads", "pool_type"),
    "text": ("variant", "width", "depth", "mlp_dim", "num_heads", "vocab_size"),
}
_DEFAULTS_ONLY = {
    "image": dict(posemb=("learn",), rep_size=(False,)),
    "text": dict(pool_type=("last",)),
}
_MODEL_KEYS = ("image", "text", "out_dim", "temperature_init", "bias_init", "image_model",
               "text_model")
_TOWER_MODELS = dict(image_model="vit", text_model="proj.image_text.text_transformer")
# big_vision's pool_type -> jaxmm's model.image.pool.
_POOLS = {"map": "map", "gap": "gap", "tok": "cls"}
# Each tower's defaults, those of big_vision's vit._Model and text_transformer._Model.
_TOWER_DEFAULTS = {
    "image": dict(patch_size=16, width=768, depth=12, mlp_dim=None, num_heads=12),
    "text": dict(width=512, depth=12, mlp_dim=2048, num_heads=8, vocab_size=32_000),
}


def read_arch(arch: str) -> dict:
  """{'model': big_vision's config.model, 'init_shapes': ...} of `arch`: a name in ARCHS or the
  path of a .json holding them."""
  saved = archs.named_or_json(arch, ARCHS, "big_vision",
                              "a .json with big_vision's model config and init_shapes")
  if not isinstance(saved, dict) or not {"model", "init_shapes"} <= set(saved):
    raise UserError(f"{arch} is not a big_vision architecture: it needs 'model' (the two-tower "
                    "config.model) and 'init_shapes' ([[1, S, S, 3], [1, L]])")
  return saved


def _tower(settings: dict, part: str, arch: str) -> dict:
  """big_vision's settings of tower `part` ('image' or 'text'), variant decoded, checked."""
  archs.check_options(settings, _READ[part] + _IGNORED, _DEFAULTS_ONLY[part],
                      f"{arch}: big_vision option {part}.", "big_vision's two-tower ViT SigLIPs")
  tower = dict(_TOWER_DEFAULTS[part])
  variant = settings.get("variant")
  if variant is not None:
    name, _, patch = variant.partition("/")
    if name not in VARIANTS:
      raise UserError(f"{arch}: big_vision {part} variant {variant!r} is not one jaxmm knows; "
                      f"the known are {', '.join(VARIANTS)} (or give width, depth, mlp_dim and "
                      "num_heads)")
    tower.update(zip(("width", "depth", "mlp_dim", "num_heads"), VARIANTS[name]))
    if patch:
      tower["patch_size"] = int(patch)
  tower.update({key: value for key, value in settings.items() if key in _READ[part]})
  tower.pop("variant", None)
  if tower["mlp_dim"] is None:
    tower["mlp_dim"] = 4 * tower["width"]
  patch = tower.get("patch_size")
  if isinstance(patch, (list, tuple)):
    if len(patch) != 2 or patch[0] != patch[1]:
      raise UserError(f"{arch}: patch_size {patch} is not square; jaxmm's ViT takes square "
                      "patches")
    tower["patch_size"] = patch[0]
  return tower


def _check_model_keys(model: dict, arch: str) -> None:
  for key, value in model.items():
    if key not in _MODEL_KEYS:
      raise UserError(f"{arch}: big_vision option model.{key} is not one jaxmm's two-tower knows")
    if key in _TOWER_MODELS and value != _TOWER_MODELS[key]:
      raise UserError(f"{arch}: model.{key}={value!r}; jaxmm imports big_vision's "
                      f"{_TOWER_MODELS[key]!r} towers only")


def _input_sizes(init_shapes, arch: str) -> tuple[int, int]:
  """(image size, text length) of big_vision's init_shapes [[1, S, S, 3], [1, L]]."""
  try:
    (_, height, width, channels), (_, length) = init_shapes
  except (TypeError, ValueError):
    raise UserError(f"{arch}: init_shapes {init_shapes!r} is not [[1, S, S, 3], [1, L]]") from None
  if height != width or channels != 3:
    raise UserError(f"{arch}: init_shapes {init_shapes!r}: jaxmm's ViT takes square RGB images")
  return height, length


def run_settings(arch_cfg: dict, arch: str) -> dict:
  """{'model': config.model, 'data': the data keys it needs, 'loss': loss.name} of big_vision's
  architecture `arch_cfg` (`read_arch`); `arch` names it in errors (module docstring). The
  tokenizer's vocabulary is left out: data.tokenizer is 'big_vision:' without a path."""
  model_cfg = arch_cfg["model"]
  _check_model_keys(model_cfg, arch)
  image = _tower(model_cfg.get("image") or {}, "image", arch)
  text = _tower(model_cfg.get("text") or {}, "text", arch)
  image_pool = errors.one_of(f"{arch}: big_vision's image pool_type",
                             image.pop("pool_type", "gap"), _POOLS)
  out_dim = model_cfg.get("out_dim", 128)
  image_out, text_out = (out_dim, out_dim) if isinstance(out_dim, int) else out_dim
  if text_out is None:
    raise UserError(f"{arch}: out_dim {out_dim!r} gives the text tower no head; jaxmm's text "
                    "tower is always projected")
  if (image_out or image["width"]) != text_out:
    raise UserError(f"{arch}: out_dim {out_dim!r} embeds images in {image_out or image['width']} "
                    f"and texts in {text_out} dimensions; a two-tower model needs one")
  image_size, text_len = _input_sizes(arch_cfg["init_shapes"], arch)
  bias_init = model_cfg.get("bias_init")
  model = dict(name="two_tower",
               embed_dim=text_out,
               dtype="float32",
               activation_dtype="float32",
               remat=False,
               attention="xla",
               image=dict(image, pool=_POOLS[image_pool], stem="patch", patch_dropout=0.0),
               text=dict(text, max_len=text_len, pad_id=EOS_ID, pool="last", mask_pad=False),
               init_log_scale=math.log(model_cfg.get("temperature_init", 1.0)),
               init_bias=None if bias_init is None else float(bias_init),
               proj_bias=True,
               image_projection=image_out is not None)
  data = dict(image_size=image_size,
              max_len=text_len,
              tokenizer="big_vision:",
              image_mean=None,
              image_std=None)
  return dict(model=model, data=data, loss="clip" if bias_init is None else "siglip")


def model_config(config) -> dict:
  """big_vision's architecture {'model': ..., 'init_shapes': ...} of a jaxmm run's `config`; a
  `UserError` listing every setting that big_vision's two-tower model cannot hold."""
  model = config.model
  if model.name != "two_tower":
    raise UserError(f"big_vision's two-tower model cannot hold this run: model.name="
                    f"{model.name!r} (it is a two-tower model: 'two_tower')")
  image, text = model.image, model.text
  pools = {ours: theirs for theirs, ours in _POOLS.items()}
  problems = []
  for key, value, wanted, why in [
      ("image.pool", image.pool, tuple(pools), "big_vision's ViT pools with these"),
      ("image.stem", image.get("stem", "patch"), ("patch",), "big_vision's ViT embeds patches"),
      ("image.ln_pre", image.get("ln_pre", False), (False,), "big_vision's ViT has none"),
      ("text.pool", text.get("pool", "mean"), ("last",), "SigLIP reads the last position"),
      ("text.mask_pad", text.get("mask_pad", True), (False,), "its text attends to all"),
      ("text.causal", text.get("causal", False), (False,), "its text attention is not causal"),
      ("proj_bias", model.get("proj_bias", True), (True,), "its heads have biases"),
  ] + [(f"{name}.{key}", tower.get(key, default), (default,), "flax's, big_vision's")
       for name, tower in (("image", image), ("text", text))
       for key, default in (("activation", "gelu_tanh"), ("norm_eps", 1e-6))]:
    if value not in wanted:
      problems.append(f"model.{key}={value!r} ({why}: {' or '.join(map(repr, wanted))})")
  if config.data.get("image_mean") is not None or config.data.get("image_std") is not None:
    problems.append("data.image_mean and data.image_std set (big_vision's SigLIP reads images "
                    "in [-1, 1]: None)")
  if problems:
    raise UserError("big_vision's two-tower model cannot hold this run: " + "; ".join(problems))
  image_projection = model.get("image_projection", True)
  size = config.data.image_size
  arch_cfg = dict(
      model=dict(image=dict(patch_size=[image.patch_size] * 2,
                            width=image.width,
                            depth=image.depth,
                            mlp_dim=image.mlp_dim,
                            num_heads=image.num_heads,
                            pool_type=pools[image.pool]),
                 text=dict(width=text.width,
                           depth=text.depth,
                           mlp_dim=text.mlp_dim,
                           num_heads=text.num_heads,
                           vocab_size=text.vocab_size),
                 out_dim=[model.embed_dim if image_projection else None, model.embed_dim],
                 temperature_init=math.exp(model.init_log_scale)),
      init_shapes=[[1, size, size, 3], [1, text.max_len]])
  if model.init_bias is not None:
    arch_cfg["model"]["bias_init"] = model.init_bias
  return arch_cfg


def _unstack_scanned(tensors: dict) -> dict:
  """big_vision's `scan` layout ('.../encoderblock/...' with a leading depth axis) as its python
  loop's ('.../encoderblock_0/...', ...), which `big_vision_links` names."""
  flat = {}
  for key, value in tensors.items():
    parent, sep, rest = key.partition("/encoderblock/")
    if not sep:
      flat[key] = value
      continue
    for i, block in enumerate(value):
      flat[f"{parent}/encoderblock_{i}/{rest}"] = block
  return flat


def read_npz(path: str) -> dict[str, np.ndarray]:
  """big_vision's checkpoint at `path` as key -> array, keys without 'params/', blocks unstacked.
  A missing, truncated or malformed file is a `UserError` that names it."""
  if not os.path.isfile(path):
    raise UserError(f"{path} is not a file; pass the path of big_vision's .npz checkpoint")
  try:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise UserError(f"{path} holds one array, not a checkpoint's named arrays; pass "
                      "big_vision's .npz checkpoint")
    with loaded:
      tensors = {key: loaded[key] for key in loaded.files}
  except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
    raise UserError(f"{path} is not a readable .npz checkpoint ({type(e).__name__}: {e}); it "
                    "may be truncated: download or write it again") from None
  if not tensors:
    raise UserError(f"{path} holds no arrays; pass big_vision's .npz checkpoint")
  # numpy stores bfloat16 as 2-byte void, as big_vision.utils.recover_dtype undoes.
  tensors = {
      key.removeprefix("params/"): value.view(ml_dtypes.bfloat16) if value.dtype.kind == "V" and
      value.dtype.itemsize == 2 else value for key, value in tensors.items()
  }
  return _unstack_scanned(tensors)


def read_params(path: str, config: ml_collections.ConfigDict, what: str) -> dict:
  """The parameters of `config`'s model (float32 NumPy) from big_vision's checkpoint at `path`
  (.npz). A file of another architecture is a `UserError` naming its first tensor that does
  not fit, `what` (e.g. the flag and the architecture) naming the file."""
  tensors = read_npz(path)
  table = big_vision_links.links(config.model)
  abstract = run_dir.abstract_params(config)
  links.check_checkpoint(table, abstract, {key: t.shape for key, t in tensors.items()}, what)
  return links.params_from_peer(table, abstract, tensors)


def write_checkpoint(path: str, config: ml_collections.ConfigDict, params) -> str:
  """Writes the `params` of a run of `config` to `path` (.npz) as big_vision's checkpoint
  (keys 'params/img/...', float32), and its architecture (`model_config`) beside it as .json;
  returns the .json's path."""
  arch_cfg = model_config(config)
  tensors = links.peer_from_params(big_vision_links.links(config.model), params)
  with open(path, "wb") as f:
    np.savez(f, **{f"params/{key}": value for key, value in tensors.items()})
  config_path = os.path.splitext(path)[0] + ".json"
  with open(config_path, "w", encoding="utf-8") as f:
    f.write(json.dumps(arch_cfg, indent=2) + "\n")
  return config_path
