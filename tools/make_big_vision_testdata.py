"""Makes tests/data/big_vision/ with big_vision's own model code, then checks jaxmm's export.

big_vision is not a package: put a copy of its source on PYTHONPATH and run,
in the peer environment (`make peers`), from the repository root:

  git clone https://github.com/google-research/big_vision /tmp/bv_src
  PYTHONPATH=/tmp/bv_src .venv-peers/bin/python tools/make_big_vision_testdata.py \
      [--jaxmm .venv/bin/jaxmm]

Its model modules (`models/proj/image_text/two_towers.py`, `models/vit.py`,
`models/proj/image_text/text_transformer.py`) and `big_vision.utils`, whose
checkpoint loading the export check uses, import TensorFlow only for
`tf.io.gfile` on remote paths; without TensorFlow installed, this script
gives them a stand-in module that opens local files (nothing numeric).

1. vocab.model: a SentencePiece model trained on every caption of the bundled
   shapes dataset, with T5's special ids (pad 0, end-of-text 1, unknown 2), as
   big_vision's SigLIP vocabularies have (no Unicode normalisation, which keeps
   the file small); and tokenizer.npz: captions and
   their ids as big_vision's `tokenize(eos='sticky', pad_value=1)` makes them
   (SentencePiece's ids with the end-of-text id appended, lowercased, cut
   keeping that id last, padded with it) at lengths 16 and 8.
2. Two tiny two-tower models built by big_vision's `two_towers.Model`, every
   parameter drawn at random (LayerNorm scales and all biases too, the
   attentions' key biases included), saved as NAME.json ({"model": its
   config.model, "init_shapes": ...}) and NAME.npz (big_vision's checkpoint:
   '/'-joined keys under 'params/'):
     map   a MAP-pooled ViT without head (out_dim (None, 64)), SigLIP's t and b,
           blocks as big_vision's python loop, float32
     scan  a class-token ViT with a head, no bias, both towers' blocks stacked as
           big_vision's `scan=True` stores them, weights as bfloat16
   and NAME_outputs.npz: fixed inputs (uint8 images, the same as big_vision's
   value_range(-1, 1) makes them, token ids of captions) and big_vision's
   unit-norm image and text embeddings and logits z·t·exp(t) + b of them.
3. archs.json: the shape of every parameter of each SigLIP jaxmm names, from
   `jax.eval_shape` of big_vision's model init.
4. The export check: `jaxmm import big_vision` then `jaxmm export big_vision`
   of each model (with the --jaxmm executable), then big_vision's
   `two_towers.load` of the export into the model of the exported .json,
   whose embeddings must equal those of step 2 to float32 rounding.
"""
import argparse
import itertools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import types

import flax.io  # pylint: disable=unused-import  # before the stand-in: flax looks for TensorFlow
import flax.training.checkpoints  # pylint: disable=unused-import
import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
import sentencepiece

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "big_vision"
SEED = 0
IMAGE_SIZE = 32
TEXT_LEN = 16
EOS = 1
# The bundled shapes dataset's vocabulary (jaxmm/data/shapes/shapes_dataset_builder.py).
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta", "orange", "white")
SIZES = ("small", "medium", "large")
PLACES = ("in the top left", "at the top", "in the top right", "on the left", "in the center",
          "on the right", "in the bottom left", "at the bottom", "in the bottom right")
CAPTIONS = [
    "a small red circle in the top left",
    "A Large BLUE Star at the bottom",
    "a medium cyan cross on the right and a white square in the center",
    "a zebra",
    "",
    "a large orange diamond in the bottom right " * 4,
]


def _gfile_stand_in() -> None:
  """`tensorflow.io.gfile` as big_vision.utils imports it, for local files only."""
  if "tensorflow" in sys.modules:
    return
  tf, io, gfile = (types.ModuleType(name) for name in ("tensorflow", "tensorflow.io",
                                                       "tensorflow.io.gfile"))
  gfile.GFile, gfile.exists = open, os.path.exists
  tf.io, io.gfile = io, gfile
  sys.modules.update({"tensorflow": tf, "tensorflow.io": io, "tensorflow.io.gfile": gfile})


_gfile_stand_in()
# pylint: disable=wrong-import-position
import export_check  # tools/export_check.py, beside this script
from big_vision import utils as bv_utils
from big_vision.models.proj.image_text import two_towers

# pylint: enable=wrong-import-position

MODELS = {
    "map":
        dict(model=dict(image=dict(patch_size=[8, 8], width=64, depth=2, mlp_dim=128, num_heads=2,
                                   pool_type="map"),
                        text=dict(width=32, depth=2, mlp_dim=64, num_heads=2),
                        out_dim=[None, 64],
                        bias_init=-10.0,
                        temperature_init=10.0),
             init_shapes=[[1, IMAGE_SIZE, IMAGE_SIZE, 3], [1, TEXT_LEN]]),
    "scan":
        dict(model=dict(image=dict(patch_size=[8, 8], width=32, depth=2, num_heads=2,
                                   pool_type="tok", scan=True),
                        text=dict(width=32, depth=2, mlp_dim=64, num_heads=4, scan=True),
                        out_dim=24,
                        temperature_init=1 / 0.07),
             init_shapes=[[1, IMAGE_SIZE, IMAGE_SIZE, 3], [1, TEXT_LEN]]),
}
DTYPES = {"map": np.float32, "scan": ml_dtypes.bfloat16}
# big_vision's English SigLIPs: (image variant, text variant, out_dim, resolution, text length).
ARCHS = {
    "B/16": ("B/16", "B", 768, 224, 64),
    "L/16-256": ("L/16", "L", 1024, 256, 64),
    "So400m/14": ("So400m/14", "So400m", 1152, 224, 16),
}


def make_vocab() -> sentencepiece.SentencePieceProcessor:
  captions = [f"a {size} {colour} {shape} {place}"
              for shape, colour, size, place in itertools.product(SHAPES, COLOURS, SIZES, PLACES)]
  sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(captions),
                                           model_prefix=str(OUT / "vocab"),
                                           vocab_size=64,
                                           model_type="unigram",
                                           pad_id=0,
                                           eos_id=EOS,
                                           unk_id=2,
                                           bos_id=-1,
                                           hard_vocab_limit=False,
                                           normalization_rule_name="identity",
                                           minloglevel=2)
  (OUT / "vocab.vocab").unlink()
  return sentencepiece.SentencePieceProcessor(model_file=str(OUT / "vocab.model"))


def tokenize(vocab, texts, max_len) -> np.ndarray:
  """big_vision's tokenize(eos='sticky', pad_value=1) (pp/ops_text.py), with SentencePiece's
  Python ids in place of tensorflow_text's (the same model, the same ids)."""
  rows = []
  for text in texts:
    ids = vocab.encode(text.lower(), add_eos=True)
    ids = ids[:max_len - 1] + ids[-1:] if len(ids) >= max_len else ids
    rows.append(ids + [EOS] * (max_len - len(ids)))
  return np.asarray(rows, np.int32)


def randomize(params, rng: np.random.Generator):
  """Every parameter at random: LayerNorm scales near 1, biases near 0.2·N(0, 1), the rest at
  its initial scale, so that no parameter sits at a value (0, 1) that would hide a wrong map."""

  def draw(path, value):
    name = "/".join(str(getattr(key, "key", key)) for key in path)
    noise = rng.standard_normal(value.shape).astype(np.float32)
    if name in ("t", "b"):
      return np.asarray(value) + 0.3 * noise
    if "LayerNorm" in name or "encoder_norm" in name:
      return (1 + 0.2 * noise) if name.endswith("scale") else 0.2 * noise
    if name.endswith("bias"):
      return 0.2 * noise
    return noise * max(float(np.std(value)), 0.02)

  return jax.tree_util.tree_map_with_path(draw, params)


def _flat(tree, prefix="") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{key}/"))
    else:
      flat[prefix + key] = value
  return flat


def outputs(model, params, pixels, tokens) -> dict:
  """big_vision's unit-norm embeddings and logits z_img·z_txtᵀ·exp(t) (+ b), float32."""
  zimg, ztxt, out = model.apply({"params": params}, pixels, tokens)
  logits = zimg @ ztxt.T * out["t"]
  if "b" in out:
    logits = logits + out["b"]
  return dict(image_embeddings=np.asarray(zimg), text_embeddings=np.asarray(ztxt),
              logits=np.asarray(logits))


def make_models(vocab) -> None:
  rng = np.random.default_rng(SEED)
  images = rng.integers(0, 256, (6, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
  # big_vision's value_range(-1, 1): x / 255 · 2 − 1 in float32.
  pixels = (images.astype(np.float32) / np.float32(255) * np.float32(2) - np.float32(1))
  tokens = tokenize(vocab, CAPTIONS, TEXT_LEN)
  for name, arch in MODELS.items():
    model_cfg = dict(arch["model"], text=dict(arch["model"]["text"], vocab_size=len(vocab)))
    arch = dict(arch, model=model_cfg)
    (OUT / f"{name}.json").write_text(json.dumps(arch, indent=2) + "\n")
    model = two_towers.Model(**model_cfg)
    params = model.init(jax.random.key(SEED), jnp.zeros(arch["init_shapes"][0]),
                        jnp.zeros(arch["init_shapes"][1], jnp.int32))["params"]
    params = randomize(jax.device_get(params), rng)
    # Stored in the file's dtype, and the reference computed from what the file holds.
    stored = {
        f"params/{key}": np.asarray(value).astype(DTYPES[name])
        for key, value in _flat(params).items()
    }
    with open(OUT / f"{name}.npz", "wb") as f:
      np.savez(f, **stored)
    held = jax.tree.map(lambda a: np.asarray(a, np.float32),
                        bv_utils.load_params(str(OUT / f"{name}.npz")))
    np.savez(OUT / f"{name}_outputs.npz", images=images, pixels=pixels, tokens=tokens,
             **outputs(model, held, pixels, tokens))
    print(f"{name}: {os.path.getsize(OUT / f'{name}.npz')} bytes of weights")


def make_tokenizer_ids(vocab) -> None:
  np.savez(OUT / "tokenizer.npz", captions=np.array(CAPTIONS),
           ids_16=tokenize(vocab, CAPTIONS, 16), ids_8=tokenize(vocab, CAPTIONS, 8))


def make_arch_shapes() -> None:
  """archs.json: {name: {'/'-joined parameter key: shape}} of big_vision's SigLIPs."""
  shapes = {}
  for name, (image, text, embed_dim, resolution, length) in ARCHS.items():
    model = two_towers.Model(image=dict(variant=image, pool_type="map"),
                             text=dict(variant=text, vocab_size=32_000),
                             out_dim=(None, embed_dim),
                             bias_init=-10.0,
                             temperature_init=10.0)
    abstract = jax.eval_shape(model.init, jax.random.key(0),
                              jnp.zeros((1, resolution, resolution, 3)),
                              jnp.zeros((1, length), jnp.int32))["params"]
    shapes[name] = {key: list(value.shape) for key, value in _flat(abstract).items()}
  (OUT / "archs.json").write_text(json.dumps(shapes, separators=(",", ":")) + "\n")


def check_export(jaxmm: str) -> None:
  """jaxmm's export of each imported model, loaded by big_vision, gives step 2's embeddings."""
  with tempfile.TemporaryDirectory() as tmp:
    for name in MODELS:
      run, exported = os.path.join(tmp, name), os.path.join(tmp, f"exported_{name}.npz")
      subprocess.run([jaxmm, "import", "big_vision", "--arch", str(OUT / f"{name}.json"),
                      "--weights", str(OUT / f"{name}.npz"), "--vocab", str(OUT / "vocab.model"),
                      "--out", run], check=True)
      subprocess.run([jaxmm, "export", "big_vision", "--run", run, "--out", exported], check=True)
      model_cfg = json.loads(pathlib.Path(exported.replace(".npz", ".json")).read_text())["model"]
      params = two_towers.load(None, exported, ml_collections.ConfigDict(model_cfg))
      saved = np.load(OUT / f"{name}_outputs.npz")
      got = outputs(two_towers.Model(**model_cfg), params, saved["pixels"], saved["tokens"])
      export_check.assert_outputs_equal(name, got, saved, float(np.exp(params["t"][0])))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--jaxmm", default="jaxmm", help="the jaxmm executable of the check")
  parser.add_argument("--skip-export-check", action="store_true")
  args = parser.parse_args()
  OUT.mkdir(parents=True, exist_ok=True)
  vocab = make_vocab()
  make_tokenizer_ids(vocab)
  make_models(vocab)
  make_arch_shapes()
  if not args.skip_export_check:
    check_export(args.jaxmm)


if __name__ == "__main__":
  main()
