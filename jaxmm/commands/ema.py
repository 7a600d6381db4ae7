"""`jaxmm ema`: post-hoc EMA of a trained run (EDM2, Karras et al. 2024, Sec. 3.2).

  jaxmm ema --run DIR --sigma-rel 0.05 [0.08 ...] [--step N]
  jaxmm ema --run DIR --sweep 0.02:0.20:10 [--judge DIR] [--step N]

With --sigma-rel, each σ_rel's power EMA is reconstructed from the run's EMA
snapshots up to --step (a checkpoint's step; default: the latest snapshot)
and kept as the average 'posthoc_sigma_rel_X' of that checkpoint, which
`jaxmm sample --ema NAME` and `load_run(...).ema` take like a tracked one.
With --sweep LO:HI:N, N σ_rels from LO to HI are reconstructed and scored by
the run's judge and two-sample evaluators (`jaxmm.commands.ema_sweep`), beside
the tracked averages, so σ_rel is chosen after training. Every flag is checked
before any array is read or anything compiles.
"""
import argparse

import numpy as np

from jaxmm import errors
from jaxmm.runs import posthoc
from jaxmm.runs import run_files
from jaxmm.train import ema as ema_lib

USAGE = "--run DIR (--sigma-rel S [S ...] | --sweep LO:HI:N [--judge DIR]) [--step N]"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of `jaxmm ema`."""
  parser.add_argument("--run", required=True, metavar="DIR", help="the run's workdir")
  chosen = parser.add_mutually_exclusive_group(required=True)
  chosen.add_argument("--sigma-rel",
                      nargs="+",
                      type=float,
                      metavar="S",
                      help="σ_rel of each average to reconstruct and keep, in (0, 0.28)")
  chosen.add_argument("--sweep",
                      metavar="LO:HI:N",
                      help="reconstruct N σ_rels from LO to HI and judge each, e.g. 0.02:0.20:10")
  parser.add_argument("--step",
                      type=int,
                      help="the checkpoint step to reconstruct at (default: the latest snapshot)")
  parser.add_argument("--judge",
                      metavar="DIR",
                      help="with --sweep: the image-text run that judges the samples (default: "
                      "the run's evals.judge.run)")


def parse_sweep(value: str) -> np.ndarray:
  """'0.02:0.20:10' -> the 10 σ_rels np.linspace(0.02, 0.20, 10); a `UserError` if malformed."""
  parts = value.split(":")
  try:
    if len(parts) != 3:
      raise ValueError(value)
    lo, hi, num = float(parts[0]), float(parts[1]), int(parts[2])
  except ValueError:
    raise errors.UserError(f"--sweep {value}: give LO:HI:N, e.g. 0.02:0.20:10") from None
  for sigma_rel in (lo, hi):
    ema_lib.check_sigma_rel(sigma_rel, "--sweep")
  if not lo < hi or num < 2:
    raise errors.UserError(f"--sweep {value}: needs LO < HI and N >= 2, e.g. 0.02:0.20:10")
  return np.round(np.linspace(lo, hi, num), 10)  # 0.04, not 0.04000000000000001


def _step(workdir: str, step: int | None) -> int:
  """The step to reconstruct at: --step, which must be a checkpoint's (where the averages are
  kept) with two snapshots up to it, or the latest snapshot's."""
  saved = run_files.checkpoint_steps(workdir)
  snapshots = posthoc.snapshot_steps(workdir)
  at = snapshots[-1] if step is None else step
  if at not in saved:
    raise errors.UserError(f"--step {at}: the averages are kept beside a checkpoint, and "
                           f"{workdir!r} has checkpoints at {saved}; pass one of them")
  posthoc.snapshots_up_to(workdir, snapshots, at)
  return at


def run(args: argparse.Namespace) -> None:
  """Reconstructs the averages of --run (module docstring)."""
  # Imported here so that the other commands need no diffusion start-up.
  from jaxmm import analysis  # pylint: disable=import-outside-toplevel
  from jaxmm.commands import ema_sweep  # pylint: disable=import-outside-toplevel
  if args.judge is not None and args.sweep is None:
    raise errors.UserError("--judge scores a --sweep; reconstructing with --sigma-rel judges "
                           "nothing")
  if args.sweep is not None:
    sigma_rels = parse_sweep(args.sweep)
  else:
    sigma_rels = args.sigma_rel
    for sigma_rel in sigma_rels:
      ema_lib.check_sigma_rel(sigma_rel, "--sigma-rel")
  step = _step(args.run, args.step)
  if args.sweep is not None:
    ema_sweep.run(args.run, step, sigma_rels, args.judge)
    return
  trained = analysis.load_run(args.run, step)
  for sigma_rel in sigma_rels:
    name = posthoc.average_name(sigma_rel)
    posthoc.write(args.run, step, name, trained.posthoc_ema(sigma_rel))
    print(f"wrote {name} of {args.run} (step {step}); sample it with "
          f"`jaxmm sample --run {args.run} --step {step} --ema {name} --out FILE`")
