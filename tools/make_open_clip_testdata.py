"""Makes tests/data/open_clip/ with open_clip itself, then checks jaxmm's export with it.

Run in the peer environment (`make peers`), from the repository root:

  .venv-peers/bin/python tools/make_open_clip_testdata.py [--jaxmm .venv/bin/jaxmm]

1. Two small open_clip CLIPs (a few hundred kB each) built by open_clip from
   model configs, every parameter drawn at random (LayerNorm scales and all
   biases too, the attention's key bias included), saved as
   NAME.json (the model config) and NAME.safetensors:
     gelu       nn.GELU, ln_pre, heads of 32, mlp_ratio 2, weights as float16
     quickgelu  QuickGELU, no ln_pre, LayerNorm eps 1e-6, a logit bias, float32
   and NAME.npz: fixed inputs (uint8 images, the same normalised as open_clip
   normalises them, token ids with the end-of-text id at several places and
   id 0 inside a text) and open_clip's unit-norm image and text embeddings
   and logits of them, in float32.
2. tokenizer.npz: captions (punctuation, HTML entities, unicode, over-long)
   and open_clip's token ids of them at context lengths 77 and 16; and
   archs.json: open_clip's own model config of each architecture jaxmm names,
   and the shape of every tensor of its state dict (ViT-L-14 is built for it).
3. The export check: `jaxmm import open_clip` then `jaxmm export open_clip` of
   each model (with the --jaxmm executable), then
   `open_clip.create_model(NAME, pretrained=EXPORTED)` on the exported model
   config, whose embeddings must equal those of step 1 to float32 rounding.
"""
import argparse
import json
import os
import pathlib
import subprocess
import tempfile

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file
from torchvision.transforms import functional as F

import export_check  # tools/export_check.py, beside this script

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "open_clip"
SEED = 0
IMAGE_SIZE = 32
CONTEXT = 16
VOCAB = 256  # small: the tests feed token ids, not text
MODELS = {
    "gelu":
        dict(embed_dim=32,
             vision_cfg=dict(image_size=IMAGE_SIZE,
                             layers=2,
                             width=64,
                             head_width=32,
                             mlp_ratio=2.0,
                             patch_size=8),
             text_cfg=dict(context_length=CONTEXT, vocab_size=VOCAB, width=32, heads=2, layers=2)),
    "quickgelu":
        dict(embed_dim=24,
             quick_gelu=True,
             init_logit_bias=-3.0,
             vision_cfg=dict(image_size=IMAGE_SIZE,
                             layers=2,
                             width=32,
                             head_width=16,
                             patch_size=8,
                             no_ln_pre=True,
                             norm_kwargs=dict(eps=1e-6)),
             text_cfg=dict(context_length=CONTEXT,
                           vocab_size=VOCAB,
                           width=32,
                           heads=2,
                           layers=2,
                           norm_kwargs=dict(eps=1e-6))),
}
DTYPES = {"gelu": torch.float16, "quickgelu": torch.float32}
CAPTIONS = [
    "a photo of a cat.",
    "Hello, World!!! It's a dog's life; isn't it?",
    "A caf\u00e9 &amp; a na\u00efve r\u00e9sum\u00e9 \u2014 \u201cquoted\u201d",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 and "
    "\u0440\u0443\u0441\u0441\u043a\u0438\u0439",
    "emoji \U0001F408 and 3.14159 and 2024-01-01",
    "\uff26\uff35\uff2c\uff2c\uff37\uff29\uff24\uff34\uff28 and \ufb01sh",
    "   spaces\tand\nnewlines   ",
    "",
    "a very long caption " * 30,
]


def randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
  """Every parameter at random: LayerNorm scales near 1, biases and the rest near open_clip's
  initial scale, so that no parameter is at a value (0, 1) that would hide a wrong mapping."""
  with torch.no_grad():
    for name, param in model.named_parameters():
      noise = torch.randn(param.shape, generator=generator)
      if name.endswith("logit_scale") or name.endswith("logit_bias"):
        continue
      if param.ndim == 1 and ("ln_" in name or "ln_final" in name) and name.endswith("weight"):
        param.copy_(1 + 0.2 * noise)
      elif param.ndim == 1 and name.endswith("bias"):
        param.copy_(0.2 * noise)
      else:
        param.copy_(noise * param.std().clamp(min=0.02))


def inputs(generator: torch.Generator):
  """(uint8 images [N, S, S, 3], token ids [M, CONTEXT]) shared by both models."""
  images = torch.randint(0, 256, (6, IMAGE_SIZE, IMAGE_SIZE, 3), generator=generator,
                         dtype=torch.uint8)
  eot = VOCAB - 1  # the largest id, as CLIP's <end_of_text>
  tokens = torch.zeros(6, CONTEXT, dtype=torch.long)
  for row, length in enumerate((3, 7, CONTEXT, 1, 10, 5)):
    tokens[row, :length - 1] = torch.randint(0, eot, (length - 1,), generator=generator)
    tokens[row, length - 1] = eot
  tokens[4, 2] = 0  # id 0 inside a text: '!' in CLIP's vocabulary, not padding
  return images, tokens


def normalize(images: torch.Tensor) -> torch.Tensor:
  """uint8 NHWC -> float NCHW as open_clip's image transform ends: ToTensor, then Normalize."""
  x = images.permute(0, 3, 1, 2).float().div(255)
  return F.normalize(x, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)


def outputs(model, pixels, tokens) -> dict:
  """open_clip's unit-norm embeddings and logits, float32 NumPy."""
  with torch.no_grad():
    image = model.encode_image(pixels, normalize=True)
    text = model.encode_text(tokens, normalize=True)
    logits = model.logit_scale.exp() * image @ text.T
    if model.logit_bias is not None:
      logits = logits + model.logit_bias
  return dict(image_embeddings=image.numpy(), text_embeddings=text.numpy(), logits=logits.numpy())


def make_models() -> None:
  torch.manual_seed(SEED)  # open_clip's own initialisation, whose scales `randomize` keeps
  generator = torch.Generator().manual_seed(SEED)
  images, tokens = inputs(generator)
  pixels = normalize(images)
  for name, model_cfg in MODELS.items():
    (OUT / f"{name}.json").write_text(json.dumps(model_cfg, indent=2) + "\n")
    model = open_clip.CLIP(**model_cfg).eval()
    randomize(model, generator)
    # Stored in the file's dtype, and the reference computed from what the file holds.
    state = {k: v.to(DTYPES[name]).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(OUT / f"{name}.safetensors"))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    np.savez(OUT / f"{name}.npz",
             images=images.numpy(),
             pixels=pixels.permute(0, 2, 3, 1).numpy(),
             tokens=tokens.numpy().astype(np.int32),
             **outputs(model, pixels, tokens))
    print(f"{name}: {os.path.getsize(OUT / f'{name}.safetensors')} bytes of weights")


def make_tokenizer_ids() -> None:
  tokenizer = open_clip.get_tokenizer("ViT-B-32")
  np.savez(OUT / "tokenizer.npz",
           captions=np.array(CAPTIONS),
           ids_77=tokenizer(CAPTIONS, context_length=77).numpy().astype(np.int32),
           ids_16=tokenizer(CAPTIONS, context_length=16).numpy().astype(np.int32))


def make_arch_shapes() -> None:
  """archs.json: {'configs': {name: model config}, 'shapes': {name: {key: shape}}}, the shapes
  once per family (the -quickgelu variants have the same)."""
  configs, shapes = {}, {}
  for name in ("ViT-B-32", "ViT-B-16", "ViT-L-14"):
    model = open_clip.create_model(name, pretrained=None)
    shapes[name] = {key: list(value.shape) for key, value in model.state_dict().items()}
    for variant in (name, f"{name}-quickgelu"):
      configs[variant] = open_clip.get_model_config(variant)
  text = json.dumps(dict(configs=configs, shapes=shapes), separators=(",", ":"))
  (OUT / "archs.json").write_text(text + "\n")


def check_export(jaxmm: str) -> None:
  """jaxmm's export of each imported model, loaded by open_clip, gives step 1's embeddings."""
  with tempfile.TemporaryDirectory() as tmp:
    for name in MODELS:
      run, exported = os.path.join(tmp, name), os.path.join(tmp, f"exported_{name}.safetensors")
      subprocess.run([jaxmm, "import", "open_clip", "--arch", str(OUT / f"{name}.json"),
                      "--weights", str(OUT / f"{name}.safetensors"), "--out", run], check=True)
      subprocess.run([jaxmm, "export", "open_clip", "--run", run, "--out", exported], check=True)
      open_clip.add_model_config(exported.replace(".safetensors", ".json"))
      model = open_clip.create_model(f"exported_{name}", pretrained=exported).eval()
      saved = np.load(OUT / f"{name}.npz")
      got = outputs(model, torch.from_numpy(saved["pixels"]).permute(0, 3, 1, 2),
                    torch.from_numpy(saved["tokens"]).long())
      export_check.assert_outputs_equal(name, got, saved, float(model.logit_scale.exp()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--jaxmm", default="jaxmm", help="the jaxmm executable of the check")
  parser.add_argument("--skip-export-check", action="store_true")
  args = parser.parse_args()
  OUT.mkdir(parents=True, exist_ok=True)
  make_models()
  make_tokenizer_ids()
  make_arch_shapes()
  if not args.skip_export_check:
    check_export(args.jaxmm)


if __name__ == "__main__":
  main()
