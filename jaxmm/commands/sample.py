"""`jaxmm sample`: samples of a trained diffusion run, as a PNG grid or an .npz of the arrays.

  jaxmm sample --run DIR [--step N] [--ema NAME] [--num N] [--sampler NAME] [--steps N]
               [--guidance W] [--guide-run DIR [--guide-step N] [--guide-ema NAME]]
               [--guidance-interval LO HI] [--labels I,J ...] [--seed S] --out FILE.png|FILE.npz
  jaxmm sample --run DIR --prompt TEXT [--prompt TEXT ...] [--prompts-file F] ... --out FILE

Without --guide-run, --guidance is classifier-free guidance D_∅ + w·(D_c − D_∅);
with it, autoguidance D_guide + w·(D_main − D_guide) by that run (a smaller or
shorter-trained one of the same data, labels and schedule). --guidance-interval
applies either only where LO < σ <= HI (`jaxmm.diffusion.guidance`).
A text-to-image run (configs/t2i_shapes.py) takes prompts, from --prompt and
from --prompts-file (one per line), cycled to --num; a label-conditioned run
takes --labels.

The samples are those of `Run.sample` with the same arguments
(`jaxmm.runs.sampling.sample_run`). Every flag and --out are checked before the
run's parameters are read or anything is compiled.
"""
import argparse
import io

import numpy as np

from jaxmm import errors
from jaxmm.commands import flag_checks
from jaxmm import storage

USAGE = ("--run DIR [--step N] [--ema NAME] [--num N] [--sampler NAME] [--steps N] "
         "[--guidance W] [--guide-run DIR [--guide-step N] [--guide-ema NAME]] "
         "[--guidance-interval LO HI] [--labels I,J ... | --prompt TEXT ... [--prompts-file F]] "
         "[--seed S] --out FILE.png|FILE.npz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of `jaxmm sample`."""
  parser.add_argument("--run", required=True, metavar="DIR", help="the run's workdir")
  parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  parser.add_argument("--ema",
                      metavar="NAME",
                      help="parameter average to sample with, or 'none' for the raw "
                      "parameters (default: the run's first average)")
  parser.add_argument("--num", type=int, default=64, help="number of samples (default 64)")
  parser.add_argument("--sampler", default="heun", help="jaxmm.diffusion sampler (default heun)")
  parser.add_argument("--steps", type=int, default=18, help="sampler steps (default 18)")
  parser.add_argument("--guidance",
                      type=flag_checks.finite_float,
                      default=1.0,
                      help="guidance scale w (1: conditional, default): classifier-free, or "
                      "autoguidance with --guide-run")
  parser.add_argument("--guide-run",
                      metavar="DIR",
                      help="autoguidance: the workdir of a weaker run of the same data, labels "
                      "and schedule (e.g. configs/edm_shapes.py:guide)")
  parser.add_argument("--guide-step", type=int, help="the guide's checkpoint (default: latest)")
  parser.add_argument("--guide-ema",
                      metavar="NAME",
                      help="the guide's parameter average, or 'none' (default: its first)")
  parser.add_argument("--guidance-interval",
                      nargs=2,
                      type=float,
                      metavar=("LO", "HI"),
                      help="guide only where LO < σ <= HI (Kynkäänniemi et al. 2024), the "
                      "conditional denoiser elsewhere (default: every σ)")
  parser.add_argument("--labels",
                      nargs="+",
                      metavar="I,J",
                      help="one label per label key for each sample, cycled to --num "
                      "(default: a grid over the classes, one row per class)")
  parser.add_argument("--prompt",
                      action="append",
                      metavar="TEXT",
                      help="a caption to sample, for a text-to-image run; repeat for more, "
                      "cycled to --num")
  parser.add_argument("--prompts-file",
                      metavar="F",
                      help="a text file of prompts, one per line (after any --prompt)")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
  parser.add_argument("--out",
                      required=True,
                      metavar="FILE",
                      help="a .png grid (runs on images) or an .npz of the arrays")


def _parse_labels(value: str) -> tuple[int, ...]:
  """'2,5' -> (2, 5)."""
  try:
    return tuple(int(part) for part in value.split(","))
  except ValueError:
    raise errors.UserError(f"--labels {value}: give one integer per label key, comma-separated, "
                           "e.g. --labels 2,5") from None


def read_prompts(prompt: list[str] | None, prompts_file: str | None) -> list[str] | None:
  """The --prompt values, then the non-empty lines of --prompts-file; None if neither is given."""
  if prompts_file is None:
    return prompt
  try:
    lines = storage.read_text(storage.absolute(prompts_file)).splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise errors.UserError(f"--prompts-file {prompts_file}: cannot read it ({e})") from e
  prompts = (prompt or []) + [line.strip() for line in lines if line.strip()]
  if not prompts:
    raise errors.UserError(f"--prompts-file {prompts_file}: holds no prompt; write one per line")
  return prompts


def check_samples_path(path: str, config) -> None:
  """Raises `UserError` if `write_samples` cannot write samples of `config`'s data to `path`: a
  .png grid needs images, and the 2-D toy's points go to an .npz."""
  from jaxmm import data  # pylint: disable=import-outside-toplevel
  shape = data.example_shape(config.data)
  if path.endswith(".png") and len(shape) != 3:
    raise errors.UserError(f"--out {path}: the run's examples are points of shape {shape} "
                           f"(data.name={config.data.name!r}), not images, so there is no PNG "
                           "grid of them; end it in .npz")


def write_samples(path: str, images: np.ndarray, labels: np.ndarray | None, config) -> None:
  """A grid PNG (one row per class of the first label) or an .npz with 'images' and 'labels'."""
  # pylint: disable-next=import-outside-toplevel
  from jaxmm.evaluators import sample_grid
  from jaxmm.runs import sampling  # pylint: disable=import-outside-toplevel
  if path.endswith(".npz"):
    arrays = {"images": images}
    if labels is not None:  # the prompts of a text-to-image run are strings
      arrays["prompts" if labels.dtype.kind == "U" else "labels"] = labels
    npz = io.BytesIO()
    np.savez(npz, **arrays)
    storage.write_bytes(storage.absolute(path), npz.getvalue())
    return
  _, columns = sampling.grid_labels(tuple(config.model.num_classes), sampling.GRID_COLUMNS)
  sample_grid.write_png(path, images, columns)


def _load(flag: str, workdir: str, step: int | None):
  """`analysis.load_run(workdir, step)`, its failures as a `UserError` naming `flag`."""
  from jaxmm import analysis  # pylint: disable=import-outside-toplevel
  try:
    return analysis.load_run(workdir, step)
  except (FileNotFoundError, ValueError) as e:
    raise errors.UserError(f"{flag} {workdir}: {e}") from e


def run(args: argparse.Namespace) -> None:
  """Samples the run of --run into --out (module docstring)."""
  # Imported here so that the other commands need no diffusion start-up.
  from jaxmm.runs import sampling  # pylint: disable=import-outside-toplevel
  if not args.out.endswith((".png", ".npz")):
    raise errors.UserError(f"--out {args.out}: end it in .png (a grid) or .npz (the arrays)")
  flag_checks.check_output_file("--out", args.out)
  if args.guide_run is None and (args.guide_step is not None or args.guide_ema is not None):
    raise errors.UserError("--guide-step and --guide-ema choose the guide of --guide-run DIR; "
                           "give --guide-run too")
  trained = _load("--run", args.run, args.step)
  check_samples_path(args.out, trained.config)
  guide = None if args.guide_run is None else _load("--guide-run", args.guide_run, args.guide_step)
  labels = None if args.labels is None else [_parse_labels(value) for value in args.labels]
  prompts = read_prompts(args.prompt, args.prompts_file)
  images, used_labels = sampling.sample_run(trained,
                                            ema=args.ema,
                                            num=args.num,
                                            sampler=args.sampler,
                                            num_steps=args.steps,
                                            guidance=args.guidance,
                                            labels=labels,
                                            seed=args.seed,
                                            guide=guide,
                                            guide_ema=args.guide_ema,
                                            guidance_interval=args.guidance_interval,
                                            prompts=prompts)
  write_samples(args.out, images, used_labels, trained.config)
  print(f"wrote {len(images)} samples of {args.run} (step {trained.step}) to {args.out}")
