"""`jaxmm export`: a jaxmm run's parameters in a peer's checkpoint format.

  jaxmm export open_clip --run DIR [--step N] --out FILE.safetensors

Writes FILE.safetensors, the state dict of open_clip's CLIP, and FILE.json,
its open_clip model config, which open_clip loads as architecture FILE:
  open_clip.add_model_config("FILE.json")
  model = open_clip.create_model("FILE", pretrained="FILE.safetensors")
The run's model must be one open_clip's CLIP can hold (a run imported with
`jaxmm import open_clip`, or one trained with its options); otherwise the
error lists each setting that differs, before any array is read.
"""
import argparse
import os

from jaxmm import errors
from jaxmm.commands import flag_checks

USAGE = "open_clip --run DIR [--step N] --out FILE.safetensors"
FORMATS = ("open_clip",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The arguments of `jaxmm export`."""
  parser.add_argument("format", choices=FORMATS, metavar="FORMAT",
                      help=f"the checkpoint's format: {', '.join(FORMATS)}")
  parser.add_argument("--run", required=True, metavar="DIR", help="the run (its workdir)")
  parser.add_argument("--step",
                      type=int,
                      metavar="N",
                      help="the run's checkpoint step (default: the latest)")
  parser.add_argument("--out",
                      required=True,
                      metavar="FILE",
                      help="the checkpoint to write, a .safetensors file (its model config goes "
                      "beside it, as .json)")


def run(args: argparse.Namespace) -> None:
  """Checks the arguments and the run's config, then writes (module docstring)."""
  if not args.out.endswith(".safetensors"):
    raise errors.UserError(f"--out {args.out}: give a file name ending in .safetensors")
  flag_checks.check_output_file("--out", args.out)
  # Imported here so that a mistake in the flags needs no JAX start-up.
  from jaxmm import analysis  # pylint: disable=import-outside-toplevel
  from jaxmm.runs import run_files  # pylint: disable=import-outside-toplevel
  from jaxmm.weights import open_clip  # pylint: disable=import-outside-toplevel
  try:
    config = run_files.run_config(args.run, args.step)
  except run_files.NoRun as e:
    raise errors.UserError(f"--run {args.run}: {e}") from e
  try:
    open_clip.model_config(config)
  except errors.UserError as e:
    raise errors.UserError(f"--run {args.run}: {e}") from None
  trained = analysis.load_run(args.run, args.step)
  config_path = open_clip.write_checkpoint(args.out, trained.config, trained.params)
  name = os.path.splitext(os.path.basename(args.out))[0]
  print(f"wrote {args.out} and {config_path} from {args.run} at step {trained.step}; load them "
        f"with open_clip.add_model_config({config_path!r}) and "
        f"open_clip.create_model({name!r}, pretrained={args.out!r})")
