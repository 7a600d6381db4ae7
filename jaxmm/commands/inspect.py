"""`jaxmm inspect`: a config resolved with its overrides, a trained run's summary, (--memory,
`jaxmm.commands.memory`) the per-device memory of a config's train step, or (--input,
`jaxmm.commands.input_plan`) the host cores that feed it.

  jaxmm inspect --config FILE.py[:ARG] [--json] [--config.KEY=VALUE ...]
  jaxmm inspect --run DIR [--step N] [--json]
  jaxmm inspect --memory --config FILE.py[:ARG] [--devices N,...] [--batch-sizes B,...] [--json]
  jaxmm inspect --input --config FILE.py[:ARG] --step-time S --images-per-core-s R
                [--batch-sizes B,...] [--processes P] [--json]
"""
import argparse
import json

from jaxmm import config_loading
from jaxmm import errors
from jaxmm.commands import input_plan
from jaxmm.commands import memory

USAGE = ("(--config FILE.py[:ARG] [--config.KEY=VALUE ...] | --run DIR [--step N] | --memory "
         "--config FILE.py[:ARG] [--devices N,...] [--batch-sizes B,...] | --input --config "
         "FILE.py[:ARG] --step-time S --images-per-core-s R [--batch-sizes B,...] [--processes "
         "P]) [--json]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of `jaxmm inspect`, --memory's included."""
  parser.add_argument("--config",
                      metavar="FILE.py[:ARG]",
                      help="config file and the argument to its get_config()")
  parser.add_argument("--run", metavar="DIR", help="a workdir written by `jaxmm train`")
  parser.add_argument("--step", type=int, help="with --run: checkpoint step (default: the latest)")
  parser.add_argument("--json", action="store_true", help="print JSON instead of text")
  memory.add_arguments(parser)
  input_plan.add_arguments(parser)


def run(args: argparse.Namespace, overrides: list[str]) -> None:
  """Prints the config of --config with its overrides, the summary of the run in --run, with
  --memory the per-device memory of the config's train step, or with --input its host cores."""
  memory.check_flags(args)
  input_plan.check_flags(args)
  if args.config is not None and args.run is not None:
    raise errors.UserError("give --config FILE.py[:ARG] or --run DIR, not both")
  if args.config is None and args.run is None:
    raise errors.UserError("give --config FILE.py[:ARG] (a config to resolve) or --run DIR (a "
                           "trained run to summarize)")
  if args.run is None:
    if args.step is not None:
      raise errors.UserError("--step goes with --run DIR (a checkpoint of that run)")
    if args.memory:
      memory.run(args, overrides)
      return
    if args.input:
      input_plan.run(args, overrides)
      return
    config = config_loading.load_config(args.config)
    config_loading.apply_overrides(config, overrides)
    text = config_loading.config_to_json(config) if args.json else str(config)
    print(text.rstrip("\n"))
    return
  if overrides:
    raise errors.UserError("--run takes no --config.KEY overrides: it shows the run's saved config")
  # Imported here so that the other commands need no JAX start-up.
  from jaxmm.runs import run_files  # pylint: disable=import-outside-toplevel
  summary = run_files.run_summary(args.run, args.step)
  print(_run_summary_json(summary) if args.json else _run_summary_text(summary))


# The config keys that `jaxmm inspect --run` shows (those the run's config has).
_SUMMARY_KEYS = ("experiment", "model.name", "data.name", "loss.name", "diffusion.schedule",
                 "batch_size", "total_steps", "optim.name", "optim.lr", "seed")


def _config_value(config, key: str):
  """config's dotted `key`, or None if it has no such key."""
  for part in key.split("."):
    if not hasattr(config, "get"):
      return None
    config = config.get(part)
  return config


def _run_summary_text(summary: dict) -> str:
  """`run_files.run_summary` as lines: where, checkpoints, key config values, latest metrics."""
  config = summary["config"]
  values = {key: _config_value(config, key) for key in _SUMMARY_KEYS}
  lines = [
      f"run {summary['workdir']} at checkpoint {summary['step']}",
      f"checkpoints: {', '.join(map(str, summary['steps']))}",
      "config: " + " ".join(f"{k}={v}" for k, v in values.items() if v is not None),
      f"parameters: {summary['num_params']:,}; averages: {', '.join(summary['ema']) or 'none'}",
  ]
  metrics = summary["metrics"]
  if not metrics:
    lines.append("metrics: none in metrics.jsonl")
    return "\n".join(lines)
  lines.append(f"metrics (latest logged at or before step {summary['step']}):")
  width = max(map(len, metrics))
  rows = sorted(metrics.items())
  lines += [f"  {name:<{width}}  {value:<10.4g}  step {step}" for name, (step, value) in rows]
  return "\n".join(lines)


def _run_summary_json(summary: dict) -> str:
  """`run_files.run_summary` as JSON: the config as a dict, each metric as {'step', 'value'}."""
  metrics = {name: dict(step=s, value=v) for name, (s, v) in summary["metrics"].items()}
  config = json.loads(config_loading.config_to_json(summary["config"]))
  return json.dumps(dict(summary, config=config, metrics=metrics), indent=2)
