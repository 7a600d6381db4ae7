"""`jaxmm import`: a checkpoint trained elsewhere as a jaxmm run directory.

  jaxmm import open_clip --arch ARCH --weights FILE.safetensors --out DIR

ARCH is one of open_clip's ViT CLIP names (`jaxmm.weights.open_clip.ARCHS`) or
the path of an open_clip model config .json. DIR gets the config
`configs/open_clip.py:ARCH` and one checkpoint, step 0, holding the weights
(`jaxmm.weights.run_dir`): `load_run`, `init_from`, the evaluators and
`jaxmm filter` read it as any run, and
`jaxmm train --config configs/open_clip.py:ARCH --workdir DIR` fine-tunes it.
Every argument is checked before the weights are read.
"""
import argparse

from jaxmm.commands import flag_checks

USAGE = "open_clip --arch ARCH --weights FILE.safetensors --out DIR"
FORMATS = ("open_clip",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The arguments of `jaxmm import`."""
  parser.add_argument("format", choices=FORMATS, metavar="FORMAT",
                      help=f"the checkpoint's format: {', '.join(FORMATS)}")
  parser.add_argument("--arch",
                      required=True,
                      metavar="ARCH",
                      help="the architecture: an open_clip name (ViT-B-32, ViT-B-16, ViT-L-14, "
                      "each also -quickgelu, for OpenAI's weights) or an open_clip model config "
                      ".json")
  parser.add_argument("--weights",
                      required=True,
                      metavar="FILE",
                      help="the checkpoint, a .safetensors file")
  parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder: the run")


def run(args: argparse.Namespace) -> None:
  """Checks the arguments, reads the weights and writes the run (module docstring)."""
  flag_checks.check_empty_output_dir("--out", args.out, "the run")
  # Imported here so that a mistake in the flags needs no JAX start-up.
  from jaxmm.configs import open_clip as open_clip_config  # pylint: disable=import-outside-toplevel
  from jaxmm.weights import open_clip, run_dir  # pylint: disable=import-outside-toplevel
  config = open_clip_config.get_config(args.arch)
  params = open_clip.read_params(args.weights, config,
                                 f"--weights {args.weights} (read as --arch {args.arch})")
  run_dir.write_run(args.out, config, params)
  print(f"wrote {args.out}: {args.arch} from {args.weights} as step 0; fine-tune it with "
        f"jaxmm train --config configs/open_clip.py:{args.arch} --workdir {args.out}")
