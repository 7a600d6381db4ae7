"""`jaxmm export`: a jaxmm run's parameters in a peer's checkpoint format.

  jaxmm export open_clip --run DIR [--step N] --out FILE.safetensors
  jaxmm export big_vision --run DIR [--step N] --out FILE.npz

open_clip: writes FILE.safetensors, the state dict of open_clip's CLIP, and
FILE.json, its open_clip model config, which open_clip loads as architecture FILE:
  open_clip.add_model_config("FILE.json")
  model = open_clip.create_model("FILE", pretrained="FILE.safetensors")
big_vision: writes FILE.npz, big_vision's two-tower checkpoint (keys
'params/img/...', 'params/txt/...', 'params/t', 'params/b'), which
`two_towers.load(None, "FILE.npz", model_cfg)` reads, and FILE.json, its
architecture: {"model": the config.model to build `two_towers.Model` from,
"init_shapes": ...}.
The run's model must be one the peer's model can hold (a run imported from
it, or one trained with its options); otherwise the error lists each setting
that differs, before any array is read.
"""
import argparse
import os

from jaxmm import errors
from jaxmm.commands import flag_checks
from jaxmm.commands import import_weights

USAGE = "{open_clip,big_vision} --run DIR [--step N] --out FILE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The arguments of `jaxmm export`."""
  formats = import_weights.FORMATS
  parser.add_argument("format", choices=formats, metavar="FORMAT",
                      help=f"the checkpoint's format: {', '.join(formats)}")
  parser.add_argument("--run", required=True, metavar="DIR", help="the run (its workdir)")
  parser.add_argument("--step",
                      type=int,
                      metavar="N",
                      help="the run's checkpoint step (default: the latest)")
  parser.add_argument("--out",
                      required=True,
                      metavar="FILE",
                      help="the checkpoint to write: a .safetensors file for open_clip, a .npz "
                      "for big_vision (its model config goes beside it, as .json)")


def _hint(fmt: str, out: str, config_path: str) -> str:
  """How the peer loads what was written."""
  if fmt == "open_clip":
    name = os.path.splitext(os.path.basename(out))[0]
    return (f"open_clip.add_model_config({config_path!r}) and "
            f"open_clip.create_model({name!r}, pretrained={out!r})")
  return (f"big_vision's two_towers.load(None, {out!r}, model_cfg), model_cfg the 'model' of "
          f"{config_path}")


def run(args: argparse.Namespace) -> None:
  """Checks the arguments and the run's config, then writes (module docstring)."""
  extension = import_weights.FORMATS[args.format][1]
  if not args.out.endswith(extension):
    raise errors.UserError(f"--out {args.out}: give a file name ending in {extension}")
  flag_checks.check_output_file("--out", args.out)
  # Imported here so that a mistake in the flags needs no JAX start-up.
  # pylint: disable=import-outside-toplevel
  from jaxmm import analysis
  from jaxmm.runs import run_files
  from jaxmm.weights import big_vision, open_clip
  writer = {"open_clip": open_clip, "big_vision": big_vision}[args.format]
  try:
    config = run_files.run_config(args.run, args.step)
  except run_files.NoRun as e:
    raise errors.UserError(f"--run {args.run}: {e}") from e
  try:
    writer.model_config(config)
  except errors.UserError as e:
    raise errors.UserError(f"--run {args.run}: {e}") from None
  trained = analysis.load_run(args.run, args.step)
  config_path = writer.write_checkpoint(args.out, trained.config, trained.params)
  print(f"wrote {args.out} and {config_path} from {args.run} at step {trained.step}; load them "
        f"with {_hint(args.format, args.out, config_path)}")
