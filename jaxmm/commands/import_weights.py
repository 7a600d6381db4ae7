"""`jaxmm import`: a checkpoint trained elsewhere as a jaxmm run directory.

  jaxmm import open_clip --arch ARCH --weights FILE.safetensors --out DIR
  jaxmm import big_vision --arch ARCH --weights FILE.npz --vocab FILE.model --out DIR

ARCH is one of the format's named architectures (`jaxmm.weights.open_clip.ARCHS`,
`jaxmm.weights.big_vision.ARCHS`) or the path of a .json describing one. DIR
gets the config `configs/FORMAT_CONFIG.py:ARCH` (FORMATS) and one checkpoint,
step 0, holding the weights (`jaxmm.weights.run_dir`): `load_run`,
`init_from`, the evaluators and `jaxmm filter` read it as any run, and
`jaxmm train --config configs/FORMAT_CONFIG.py:ARCH --workdir DIR` fine-tunes
it. big_vision's SigLIPs tokenize with a SentencePiece vocabulary that jaxmm
does not ship: --vocab is its path, written into the run's data.tokenizer.
Every argument is checked before the weights are read.
"""
import argparse
import os

from jaxmm import errors
from jaxmm.commands import flag_checks

# format -> (its config file under configs/, the weights file's extension)
FORMATS = {
    "open_clip": ("open_clip.py", ".safetensors"),
    "big_vision": ("siglip_big_vision.py", ".npz"),
}
USAGE = ("{open_clip,big_vision} --arch ARCH --weights FILE [--vocab FILE.model] --out DIR")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The arguments of `jaxmm import`."""
  parser.add_argument("format", choices=FORMATS, metavar="FORMAT",
                      help=f"the checkpoint's format: {', '.join(FORMATS)}")
  parser.add_argument("--arch",
                      required=True,
                      metavar="ARCH",
                      help="the architecture: for open_clip a name (ViT-B-32, ViT-B-16, "
                      "ViT-L-14, each also -quickgelu, for OpenAI's weights) or a model config "
                      ".json; for big_vision a SigLIP (B/16, B/16-256, ..., L/16-384, So400m/14, "
                      "So400m/14-384, B/16-i18n-256) or a .json of its model config and "
                      "init_shapes")
  parser.add_argument("--weights",
                      required=True,
                      metavar="FILE",
                      help="the checkpoint: open_clip's .safetensors, big_vision's .npz")
  parser.add_argument("--vocab",
                      metavar="FILE.model",
                      help="big_vision: the SentencePiece vocabulary the model was trained with "
                      "(T5's c4_en for the English SigLIPs, mc4 for the multilingual)")
  parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder: the run")


def _config(args: argparse.Namespace):
  """The run's config (`FORMATS`' config of --arch, with --vocab for big_vision)."""
  # Imported here so that a mistake in the flags needs no JAX start-up.
  # pylint: disable=import-outside-toplevel
  from jaxmm.configs import open_clip, siglip_big_vision
  from jaxmm.data import tokenizers
  if args.format == "open_clip":
    return open_clip.get_config(args.arch)
  config = siglip_big_vision.get_config(args.arch)
  spec = tokenizers.BIG_VISION_PREFIX + os.path.abspath(args.vocab)
  tokenizer = tokenizers.get_tokenizer(spec)
  if tokenizer.vocab_size > config.model.text.vocab_size:
    raise errors.UserError(f"--vocab {args.vocab} holds {tokenizer.vocab_size} ids, more than the "
                           f"{config.model.text.vocab_size} of --arch {args.arch}'s text tower; "
                           "pass the vocabulary the model was trained with")
  config.data.tokenizer = spec
  return config


def run(args: argparse.Namespace) -> None:
  """Checks the arguments, reads the weights and writes the run (module docstring)."""
  if args.format == "big_vision" and args.vocab is None:
    raise errors.UserError("big_vision's SigLIPs tokenize with a SentencePiece vocabulary that "
                           "jaxmm does not ship: pass its path as --vocab FILE.model (T5's c4_en, "
                           "gs://t5-data/vocabs/cc_en.32000/sentencepiece.model, for the English "
                           "ones; mc4 for the multilingual)")
  if args.format == "open_clip" and args.vocab is not None:
    raise errors.UserError("--vocab goes with big_vision: open_clip's run uses CLIP's BPE, which "
                           "jaxmm ships")
  flag_checks.check_empty_output_dir("--out", args.out, "the run")
  # pylint: disable=import-outside-toplevel
  from jaxmm.weights import big_vision, open_clip, run_dir
  config = _config(args)
  reader = {"open_clip": open_clip, "big_vision": big_vision}[args.format]
  params = reader.read_params(args.weights, config,
                              f"--weights {args.weights} (read as --arch {args.arch})")
  run_dir.write_run(args.out, config, params)
  config_file = FORMATS[args.format][0]
  print(f"wrote {args.out}: {args.arch} from {args.weights} as step 0; fine-tune it with "
        f"jaxmm train --config configs/{config_file}:{args.arch} --workdir {args.out}" +
        (f" --config.data.tokenizer={config.data.tokenizer}" if args.vocab else ""))
