"""The `jaxmm filter` command: keep the image-text pairs that a trained two-tower scores highest.

  jaxmm filter --run DIR --dataset NAME --split S --keep F --out DIR
               [--step N] [--data-dir DIR] [--batch-size B]

Scores every pair of NAME's split S by the cosine similarity of its image and
caption embeddings under the run (`data_filter`, Fang et al. 2023) and
writes the filtered dataset, the scores and a summary into --out (`EPILOG`).
Every mistake in the arguments is reported before the run's parameters are
read or anything is compiled.
"""
import argparse
import os
import re

from jaxmm import errors
from jaxmm.commands import flag_checks
from jaxmm.commands import flag_spelling
from jaxmm import storage

USAGE = ("--run DIR --dataset NAME --split S --keep F --out DIR [--step N] [--data-dir DIR] "
         "[--batch-size B]")
DEFAULT_BATCH_SIZE = 512
EPILOG = """\
written into --out:
  NAME/VERSION/   the dataset under its own name: --split holds the kept pairs
                  (the round(F * N) highest-scoring, in their original order),
                  every other split is copied unchanged
  scores.npz      'index', 'score' (cosine similarity), 'kept' of every pair
  filter.json     the settings and counts
train on it with --config.data.data_dir=OUT (the evaluators read its copied eval split)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of `jaxmm filter`."""
  parser.add_argument("--run",
                      required=True,
                      metavar="DIR",
                      help="a trained image-text run (its workdir), the scoring model")
  parser.add_argument("--step",
                      type=int,
                      metavar="N",
                      help="the run's checkpoint step (default: the latest)")
  parser.add_argument("--dataset",
                      required=True,
                      metavar="NAME",
                      help="the dataset to filter: bundled, or prepared in --data-dir")
  flag_spelling.add_flag(parser,
                         "--data-dir",
                         metavar="DIR",
                         help="where --dataset is prepared (default: the run's data.data_dir, "
                         "else $JAXMM_DATA_DIR, else ~/.cache/jaxmm/tensorflow_datasets)")
  parser.add_argument("--split", required=True, metavar="S", help="the split to filter")
  parser.add_argument("--keep",
                      required=True,
                      type=flag_checks.finite_float,
                      metavar="F",
                      help="the fraction of pairs kept, in (0, 1]")
  parser.add_argument("--out",
                      required=True,
                      metavar="DIR",
                      help="a new or empty folder: the filtered dataset's data dir")
  flag_spelling.add_flag(parser,
                         "--batch-size",
                         type=int,
                         default=DEFAULT_BATCH_SIZE,
                         metavar="B",
                         help=f"pairs embedded per global batch (default {DEFAULT_BATCH_SIZE})")


def _check_keep(keep: float) -> float:
  if not 0 < keep <= 1:
    raise errors.UserError(f"--keep {keep}: give the fraction of pairs to keep, a number in "
                           "(0, 1]")
  return keep


def _run_config(run_dir: str, step: int | None):
  """(step, config) of the checkpoint `step` of an image-text run, read without any array."""
  from jaxmm.runs import run_files  # pylint: disable=import-outside-toplevel
  try:
    with run_files.read_only_manager(run_dir) as manager:
      step, config = run_files.read_checkpoint(manager, run_dir, step, run_files.saved_config)
  except run_files.NoRun as e:
    raise errors.UserError(f"--run {run_dir}: {e}") from e
  if config.experiment != "image_text":
    raise errors.UserError(f"--run {run_dir} is an experiment={config.experiment!r} run; "
                           "filtering scores pairs with a contrastive image-text run "
                           "(experiment='image_text')")
  return step, config


def _source(name: str, data_dir):
  """The builder of dataset `name` in `data_dir`; an unknown name lists the known ones."""
  from jaxmm import data  # pylint: disable=import-outside-toplevel
  names = data.dataset_names(data_dir)
  try:
    errors.one_of("--dataset", re.split(r"[/:]", name)[0], names)
  except errors.UserError as e:
    raise errors.UserError(f"{e} (the bundled datasets and those prepared in "
                           f"{data.resolve_data_dir(data_dir)}; --data-dir names another "
                           "folder)") from None
  return data.get_builder(name, data_dir)


def _check_features(config, source, args) -> None:
  """The dataset must have the image and text features that the run's config reads."""
  features = sorted(source.info.features)
  for key in ("image_key", "text_key"):
    if config.data[key] not in features:
      raise errors.UserError(f"--dataset {args.dataset} has no feature {config.data[key]!r}, "
                             f"which --run {args.run} reads as data.{key}; its features: "
                             f"{', '.join(map(repr, features))}")


def _checked(args: argparse.Namespace):
  """(keep, step, config, source, mesh) once every argument is checked: the run's config with
  its data pointed at --dataset in --data-dir, the dataset's builder, the run's mesh."""
  keep = _check_keep(args.keep)
  # A new or empty folder: nothing there is taken for the filtered dataset or overwritten.
  flag_checks.check_empty_output_dir("--out", args.out, "the filtered dataset")
  # Imported here so that the other commands need no JAX start-up.
  from jaxmm import data, parallel  # pylint: disable=import-outside-toplevel
  step, config = _run_config(args.run, args.step)
  data_dir = args.data_dir or config.data.get("data_dir")
  if data.resolve_data_dir(data_dir) == storage.absolute(args.out):
    raise errors.UserError(f"--out {args.out} is where --dataset is read from; give another "
                           "folder")
  source = _source(args.dataset, data_dir)
  errors.one_of("--split", args.split, list(source.info.splits))
  _check_features(config, source, args)
  config.data.name, config.data.data_dir = args.dataset, data_dir
  errors.integer_at_least("--batch-size", args.batch_size, 1)
  mesh = parallel.make_mesh(config.mesh)
  parallel.check_batch_size(args.batch_size, mesh, "--batch-size")
  return keep, step, config, source, mesh


def run(args: argparse.Namespace) -> None:
  """Checks every argument, then scores, filters and writes (module docstring)."""
  keep, _, config, source, mesh = _checked(args)
  from jaxmm import analysis, data  # pylint: disable=import-outside-toplevel
  from jaxmm.commands import data_filter  # pylint: disable=import-outside-toplevel
  # The latest checkpoint again without --step: a run still training may have rotated out the
  # one whose config was checked, and a damaged one is passed over.
  trained = analysis.load_run(args.run, args.step, mesh=mesh)
  step = trained.step
  scores = data_filter.pair_scores(trained.model, trained.params, config, args.split,
                                   args.batch_size, mesh)
  kept = data_filter.top_fraction(scores, keep)
  data_filter.write_filtered(source, args.split, kept, args.out)
  summary = dict(run=args.run,
                 step=step,
                 dataset=source.name,
                 version=str(source.info.version),
                 data_dir=data.resolve_data_dir(config.data.data_dir),
                 split=args.split,
                 keep=keep,
                 score="cosine similarity of the run's image and caption embeddings",
                 num_pairs=len(scores),
                 num_kept=int(kept.sum()),
                 min_kept_score=float(scores[kept].min()))
  data_filter.write_scores(args.out, scores, kept, summary)
  print(f"kept {summary['num_kept']} of {len(scores)} pairs of {source.name} {args.split} "
        f"(score >= {summary['min_kept_score']:.4f} under {args.run} at step {step}); wrote "
        f"{os.path.join(args.out, source.name, summary['version'])}, "
        f"{data_filter.SCORES_FILE} and {data_filter.SUMMARY_FILE}\n"
        f"train on it with --config.data.name={source.name} --config.data.data_dir={args.out}")
