"""The `jaxmm data` command: a TFDS split written as shards, or what shards hold.

  jaxmm data export --dataset NAME --split S --format wds|parquet --out DIR [--shard-size N]
                    [--data-dir DIR] [--image-feature F] [--text-feature F]
                    [--image-format png|jpg|webp]
  jaxmm data stats  --files GLOB [GLOB ...] [--image-key K] [--text-key K]

`export` writes the split in webdataset or parquet layout (`jaxmm.data.shards.
export`), which a config then reads with data.source and data.files; `stats`
reads every example of the shards and prints their counts, damaged examples,
caption lengths and labels (`jaxmm.data.shards.stats`).
"""
import argparse
import os

from jaxmm import errors
from jaxmm.commands import flag_checks

USAGE = "export|stats ..."
# Read as the webdataset convention and img2dataset write them.
DEFAULT_IMAGE_KEY, DEFAULT_TEXT_KEY = "jpg;png;webp", "txt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The actions of `jaxmm data` and their options."""
  actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
  export = actions.add_parser("export",
                              prog="jaxmm data export",
                              help="write a TFDS split as webdataset or parquet shards",
                              description="Write a TFDS split as webdataset tar shards or "
                              "parquet files; record i becomes example i.")
  export.add_argument("--dataset", required=True, metavar="NAME",
                      help="a bundled dataset or one prepared in the data dir")
  export.add_argument("--split", required=True, metavar="S")
  export.add_argument("--format", required=True, choices=("wds", "parquet"))
  export.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
  export.add_argument("--shard-size", type=int, default=10_000, metavar="N",
                      help="examples a file (default 10000)")
  export.add_argument("--data-dir", metavar="DIR",
                      help="where the dataset is (default: $JAXMM_DATA_DIR or ~/.cache/jaxmm)")
  export.add_argument("--image-feature", default="image", metavar="F")
  export.add_argument("--text-feature", default="caption", metavar="F",
                      help="the captions' feature; '' for none")
  export.add_argument("--image-format", default="png", choices=("png", "jpg", "webp"),
                      help="png (default) is lossless: the shards train as the TFDS split does")
  stats = actions.add_parser("stats",
                             prog="jaxmm data stats",
                             help="count the examples, damaged examples, captions and labels",
                             description="Read every example of webdataset or parquet shards "
                             "and print what they hold.")
  stats.add_argument("--files", required=True, nargs="+", metavar="GLOB",
                     help="the .tar or .parquet shards, local or gs://")
  stats.add_argument("--image-key", default=DEFAULT_IMAGE_KEY, metavar="K",
                     help=f"the images' extensions or column (default {DEFAULT_IMAGE_KEY!r})")
  stats.add_argument("--text-key", default=DEFAULT_TEXT_KEY, metavar="K",
                     help=f"the captions' extension or column (default {DEFAULT_TEXT_KEY!r}); "
                     "'' for none")
  for action in (export, stats):
    action.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, print the traceback too")


def run(args: argparse.Namespace) -> None:
  if args.action == "export":
    _export(args)
  else:
    _stats(args)


def _export(args: argparse.Namespace) -> None:
  flag_checks.check_empty_output_dir("--out", args.out, "the shards")
  # Imported here so that `jaxmm --help` needs no TFDS start-up.
  from jaxmm.data.shards import export  # pylint: disable=import-outside-toplevel
  written, count = export.export(args.dataset, args.split, args.format, args.out,
                                 shard_size=args.shard_size, data_dir=args.data_dir,
                                 image_feature=args.image_feature,
                                 text_feature=args.text_feature, image_format=args.image_format)
  ext = "tar" if args.format == "wds" else "parquet"
  files = "file" if len(written) == 1 else "files"
  print(f"wrote {count} examples of {args.dataset} {args.split} in {len(written)} {args.format} "
        f"{files} to {args.out}\n"
        f"read them with --config.data.source={args.format} --config.data.files='"
        f"{os.path.join(args.out, '*.' + ext)}' (data.eval_files for an eval split) "
        f"--config.data.image_key={args.image_format}" +
        (" --config.data.text_key=txt" if args.text_feature else " --config.data.text_key=None"))


def _stats(args: argparse.Namespace) -> None:
  from jaxmm.data.shards import files, stats  # pylint: disable=import-outside-toplevel
  sources = {files.source_of(pattern) for pattern in args.files}
  if len(sources) != 1 or None in sources:
    raise errors.UserError(f"--files {' '.join(args.files)}: give globs ending in .tar "
                           "(webdataset) or in .parquet, one kind")
  source = sources.pop()
  report = stats.scan(files.shard_files("--files", args.files, source), source, args.image_key,
                      args.text_key or None)
  print("\n".join(stats.lines(report)))
