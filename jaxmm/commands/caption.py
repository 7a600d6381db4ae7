"""`jaxmm caption`: captions of images by a trained captioning run (CapPa, CoCa).

  jaxmm caption --run DIR (--split NAME | --images FILE.npz) [--num N] [--beam K] [--step N]

Prints one caption per line. With --split the images are the first N of that
split of the run's dataset, as its input pipeline makes them, each line also
shows the reference caption, and a last line scores them as the 'caption'
evaluator does (accuracy per class label and exact match). An .npz holds
the images under 'images' (uint8 [N, S, S, 3], or float on the pipeline's
scale, as `jaxmm sample --out FILE.npz` writes them). Every flag and the
run's kind are checked before anything is compiled.
"""
import argparse
import io

import numpy as np

from jaxmm import errors
from jaxmm import storage

# Examples read from a split at a time.
_SPLIT_BATCH = 256
USAGE = "--run DIR (--split NAME | --images FILE.npz) [--num N] [--beam K] [--step N]"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of `jaxmm caption`."""
  parser.add_argument("--run", required=True, metavar="DIR", help="the run's workdir")
  parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--split", metavar="NAME", help="caption a split of the run's dataset")
  source.add_argument("--images", metavar="FILE.npz", help="caption the 'images' of an .npz")
  parser.add_argument("--num", type=int, help="caption the first N images (default: all)")
  parser.add_argument("--beam", type=int, default=1, help="beam width (default 1: greedy)")


def _npz_images(path: str) -> np.ndarray:
  try:
    with storage.open_binary(storage.absolute(path)) as f:
      content = f.read()
    with np.load(io.BytesIO(content)) as arrays:
      if "images" not in arrays:
        raise errors.UserError(f"--images {path} holds {sorted(arrays)}, no 'images' array")
      return arrays["images"]
  except (OSError, ValueError) as e:
    raise errors.UserError(f"--images {path}: not a readable .npz file ({e})") from e


def _split_examples(config, split: str, num: int | None) -> dict:
  """The first `num` examples of `split` as the run's pipeline makes them (images normalised and
  resized, captions tokenised), with their labels."""
  from jaxmm import data  # pylint: disable=import-outside-toplevel
  batches, kept = [], 0
  for batch in data.eval_batches(config.data, split=split, batch_size=_SPLIT_BATCH):
    batches.append({k: v[batch["mask"]] for k, v in batch.items()})
    kept += int(batch["mask"].sum())
    if num is not None and kept >= num:
      break
  return {k: np.concatenate([b[k] for b in batches])[:num] for k in batches[0]}


def run(args: argparse.Namespace) -> None:
  """Captions the images of --split or --images by the run of --run (module docstring)."""
  # Imported here so that the other commands need no model start-up.
  from jaxmm import analysis  # pylint: disable=import-outside-toplevel
  from jaxmm import data  # pylint: disable=import-outside-toplevel
  from jaxmm.evaluators import captioning  # pylint: disable=import-outside-toplevel
  errors.integer_at_least("--beam", args.beam, 1)
  if args.num is not None:
    errors.integer_at_least("--num", args.num, 1)
  try:
    trained = analysis.load_run(args.run, args.step)
  except (FileNotFoundError, ValueError) as e:
    raise errors.UserError(f"--run {args.run}: {e}") from e
  if trained.config.experiment not in analysis.CAPTIONING:
    raise errors.UserError(f"--run {args.run} is an experiment={trained.config.experiment!r} "
                           f"run; jaxmm caption needs a captioning run "
                           f"({', '.join(analysis.CAPTIONING)})")
  if args.images is not None:
    for caption in trained.caption(_npz_images(args.images)[:args.num], beam=args.beam):
      print(caption)
    return
  config = trained.config
  examples = _split_examples(config, args.split, args.num)
  generated = trained.caption(examples["image"], beam=args.beam)
  tokenizer = data.get_tokenizer(config.data.tokenizer)
  references = [tokenizer.decode(row) for row in examples["tokens"]]
  for caption, reference in zip(generated, references):
    print(f"{caption}\t(reference: {reference})")
  scores = captioning.caption_scores(generated, references, examples,
                                     captioning.class_names(config.data))
  print(f"{args.split}, {len(generated)} images, beam {args.beam}: " +
        ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items())))
