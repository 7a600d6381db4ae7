"""The `jaxmm` command: train an experiment, or print its resolved config.

  jaxmm train   --config configs/NAME.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]
  jaxmm inspect --config configs/NAME.py[:ARG] [--json] [--config.KEY=VALUE ...]
  jaxmm inspect --run DIR [--step N] [--json]
  jaxmm inspect --memory --config FILE.py[:ARG] [--devices N,...] [--batch-sizes B,...] [--json]
  jaxmm sweep   --config configs/NAME.py[:ARG] --workdir DIR [--dry-run] [--launcher ...]
  jaxmm sweep   --summarize DIR
  jaxmm filter  --run DIR --dataset NAME --split S --keep F --out DIR [...]

Overrides are parsed here rather than with absl's config_flags so that an
unknown key fails before anything runs, with the nearest existing key named.

A user mistake (`jaxmm.errors.UserError`) ends in the one line
`jaxmm <command>: error: <message>` and exit status 2; `--traceback` or
JAXMM_TRACEBACK=1 prints the traceback too. A run stopped by SIGTERM or
Ctrl-C exits with 128 + the signal number after saving its checkpoint; before
its first step, at once, with one line.
"""
import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import traceback

from absl import flags
from absl import logging
import logging as std_logging

from jaxmm import config_loading
from jaxmm import errors
from jaxmm import filter_command
from jaxmm import flag_checks
from jaxmm import host_memory
from jaxmm import memory_command
from jaxmm import sweep_command
from jaxmm import xla_cpu

_OVERRIDES_HELP = """\
config overrides:
  --config.KEY=VALUE    set a dotted config key, e.g. --config.optim.lr=3e-4
                        --config.mesh.fsdp=4 --config.data.data_dir=None;
                        VALUE is read as the type of the field it replaces.
"""


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxmm",
                                   description="Contrastive and diffusion pretraining in JAX/Flax.",
                                   allow_abbrev=False)
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  def add_command(name, help_text, usage, takes_config=True):
    command = commands.add_parser(name,
                                  help=help_text,
                                  description=help_text,
                                  epilog=_OVERRIDES_HELP if takes_config else None,
                                  usage=f"jaxmm {name} {usage}" +
                                  (" [--config.KEY=VALUE ...]" if takes_config else ""),
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  allow_abbrev=False)
    command.set_defaults(parser=command)  # for errors that name the subcommand
    if takes_config:
      command.add_argument("--config",
                           required=True,
                           metavar="FILE.py[:ARG]",
                           help="config file and the argument to its get_config()")
    command.add_argument("--traceback",
                         action="store_true",
                         help="on an error, print the traceback too (or set JAXMM_TRACEBACK=1)")
    return command

  train = add_command("train", "Train an experiment, resuming from DIR's latest checkpoint.",
                      "--config FILE.py[:ARG] --workdir DIR")
  train.add_argument("--workdir",
                     required=True,
                     metavar="DIR",
                     help="where checkpoints, config.json and metrics go")
  cluster = train.add_argument_group(
      "multi-process runs",
      "Start the same command on every host with its own --process_id. Without these flags "
      "(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), SLURM job steps and "
      "TPU pods are detected; anything else runs as one process.")
  cluster.add_argument("--coordinator_address", metavar="HOST:PORT", help="process 0's address")
  cluster.add_argument("--num_processes", type=int, metavar="N", help="processes in the run")
  cluster.add_argument("--process_id", type=int, metavar="I", help="this process, 0 .. N-1")
  cluster.add_argument("--distributed_timeout",
                       type=int,
                       default=300,
                       metavar="S",
                       help="seconds to wait for every process to join (default 300)")
  inspect = add_command(
      "inspect", "Print a config resolved with its overrides, or a trained run's summary: its "
      "config, checkpoints and latest metrics, or (--memory) the per-device memory of a "
      "config's train step.",
      "(--config FILE.py[:ARG] [--config.KEY=VALUE ...] | --run DIR [--step N] | --memory "
      "--config FILE.py[:ARG] [--devices N,...] [--batch-sizes B,...]) [--json]",
      takes_config=False)
  inspect.epilog = _OVERRIDES_HELP
  inspect.add_argument("--config",
                       metavar="FILE.py[:ARG]",
                       help="config file and the argument to its get_config()")
  inspect.add_argument("--run", metavar="DIR", help="a workdir written by `jaxmm train`")
  inspect.add_argument("--step", type=int, help="with --run: checkpoint step (default: the latest)")
  inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
  memory_command.add_arguments(inspect)
  sample = add_command("sample",
                       "Sample a trained diffusion run into a PNG grid or an .npz of arrays.",
                       "--run DIR [--step N] [--ema NAME] [--num N] [--sampler NAME] [--steps N] "
                       "[--guidance W] [--labels I,J ...] [--seed S] --out FILE.png|FILE.npz",
                       takes_config=False)
  sample.add_argument("--run", required=True, metavar="DIR", help="the run's workdir")
  sample.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  sample.add_argument("--ema",
                      metavar="NAME",
                      help="parameter average to sample with, or 'none' for the raw "
                      "parameters (default: the run's first average)")
  sample.add_argument("--num", type=int, default=64, help="number of samples (default 64)")
  sample.add_argument("--sampler", default="heun", help="jaxmm.diffusion sampler (default heun)")
  sample.add_argument("--steps", type=int, default=18, help="sampler steps (default 18)")
  sample.add_argument("--guidance",
                      type=flag_checks.finite_float,
                      default=1.0,
                      help="classifier-free guidance scale w (1: conditional, default)")
  sample.add_argument("--labels",
                      nargs="+",
                      metavar="I,J",
                      help="one label per label key for each sample, cycled to --num "
                      "(default: a grid over the classes, one row per class)")
  sample.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
  sample.add_argument("--out",
                      required=True,
                      metavar="FILE",
                      help="a .png grid (runs on images) or an .npz of the arrays")
  sweep = add_command("sweep",
                      "Run every point of a config's get_sweep() as a run, or summarize a sweep.",
                      sweep_command.USAGE,
                      takes_config=False)
  sweep.epilog = _OVERRIDES_HELP
  sweep_command.add_arguments(sweep)
  filter_ = add_command("filter",
                        "Keep the image-text pairs of a dataset split that a trained two-tower "
                        "scores highest, as a new dataset (data filtering, Fang et al. 2023).",
                        filter_command.USAGE,
                        takes_config=False)
  filter_.epilog = filter_command.EPILOG
  filter_command.add_arguments(filter_)
  return parser


def _fail(prog: str, error: BaseException, show_traceback: bool) -> None:
  """Exits with status 2 after printing `error` as one line (and its traceback if asked)."""
  if show_traceback:
    traceback.print_exception(error)
  sys.stderr.write(f"{prog}: error: {' '.join(str(error).split())}\n")
  sys.exit(2)


def _train(config, args) -> None:
  # Imported here so that `jaxmm inspect` and config errors need no JAX start-up.
  from jaxmm import train as train_lib  # pylint: disable=import-outside-toplevel
  from jaxmm.experiments import EXPERIMENTS  # pylint: disable=import-outside-toplevel
  from jaxmm.parallel import distributed  # pylint: disable=import-outside-toplevel
  from jaxmm.train import background_errors  # pylint: disable=import-outside-toplevel
  errors.one_of("experiment", config.experiment, EXPERIMENTS)
  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                         args.distributed_timeout, prog=args.parser.prog)
  host_memory.keep_freed_memory()
  # Libraries that read absl flags (grain's worker processes) need them parsed.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["jaxmm"])
  # jaxmm's own progress at INFO; libraries (orbax, grain) only at WARNING.
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger("jaxmm").setLevel(std_logging.INFO)
  # A failed checkpoint write leaves orbax's asyncio tasks with unretrieved
  # errors; the loop reports the failure itself, in one line.
  std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
  # Orbax's and tensorstore's threads also print it, in hundreds of lines, which only
  # --traceback lets through.
  wants_traceback = args.traceback or os.environ.get("JAXMM_TRACEBACK", "0") not in ("", "0")
  with contextlib.nullcontext() if wants_traceback else background_errors.quiet_failed_saves():
    train_lib.train(config, args.workdir, EXPERIMENTS[config.experiment])


def _parse_labels(value: str) -> tuple[int, ...]:
  """'2,5' -> (2, 5)."""
  try:
    return tuple(int(part) for part in value.split(","))
  except ValueError:
    raise errors.UserError(f"--labels {value}: give one integer per label key, comma-separated, "
                           "e.g. --labels 2,5") from None


def _sample(args) -> None:
  # Imported here so that the other commands need no diffusion start-up.
  from jaxmm import analysis  # pylint: disable=import-outside-toplevel
  from jaxmm.experiments import diffusion  # pylint: disable=import-outside-toplevel
  if not args.out.endswith((".png", ".npz")):
    raise errors.UserError(f"--out {args.out}: end it in .png (a grid) or .npz (the arrays)")
  flag_checks.check_output_file("--out", args.out)
  try:
    run = analysis.load_run(args.run, args.step)
  except (FileNotFoundError, ValueError) as e:
    raise errors.UserError(f"--run {args.run}: {e}") from e
  diffusion.check_samples_path(args.out, run.config)
  labels = None if args.labels is None else [_parse_labels(value) for value in args.labels]
  images, used_labels = diffusion.sample_run(run,
                                             ema=args.ema,
                                             num=args.num,
                                             sampler=args.sampler,
                                             num_steps=args.steps,
                                             guidance=args.guidance,
                                             labels=labels,
                                             seed=args.seed)
  diffusion.write_samples(args.out, images, used_labels, run.config)
  print(f"wrote {len(images)} samples of {args.run} (step {run.step}) to {args.out}")


def _inspect(args, overrides) -> None:
  """Prints the config of --config with its overrides, the summary of the run in --run, or
  with --memory the per-device memory of the config's train step."""
  memory_command.check_flags(args)
  if args.config is not None and args.run is not None:
    raise errors.UserError("give --config FILE.py[:ARG] or --run DIR, not both")
  if args.config is None and args.run is None:
    raise errors.UserError("give --config FILE.py[:ARG] (a config to resolve) or --run DIR (a "
                           "trained run to summarize)")
  if args.run is None:
    if args.step is not None:
      raise errors.UserError("--step goes with --run DIR (a checkpoint of that run)")
    if args.memory:
      memory_command.run(args, overrides)
      return
    config = config_loading.load_config(args.config)
    config_loading.apply_overrides(config, overrides)
    text = config_loading.config_to_json(config) if args.json else str(config)
    print(text.rstrip("\n"))
    return
  if overrides:
    raise errors.UserError("--run takes no --config.KEY overrides: it shows the run's saved config")
  # Imported here so that the other commands need no JAX start-up.
  from jaxmm import analysis  # pylint: disable=import-outside-toplevel
  summary = analysis.run_summary(args.run, args.step)
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
  """`analysis.run_summary` as lines: where, checkpoints, key config values, latest metrics."""
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
  """`analysis.run_summary` as JSON: the config as a dict, each metric as {'step', 'value'}."""
  metrics = {name: dict(step=s, value=v) for name, (s, v) in summary["metrics"].items()}
  config = json.loads(config_loading.config_to_json(summary["config"]))
  return json.dumps(dict(summary, config=config, metrics=metrics), indent=2)


class _ExitOnSignal:
  """Context manager for `jaxmm train`: SIGINT or SIGTERM ends the process at once, with one line
  and status 128 + the signal number, until the train loop handles them itself (and saves first,
  `jaxmm.train.stop_signals`).

  Python runs a handler only between the main thread's bytecodes, and the main thread may wait
  minutes in C++ (compiling, joining other processes); so each signal also wakes a thread,
  through `signal.set_wakeup_fd`. `os._exit` skips the interpreter's teardown, which can crash
  while XLA's threads still compile.
  """

  def __init__(self, prog: str):
    self._prog = prog
    self._previous = {}  # signal -> its handler before
    self._exiting = threading.Lock()  # the handler and `_wake` may both act on one signal
    self._wakeup, self._wakeup_fd, self._previous_fd = None, -1, -1

  def __enter__(self):
    try:
      self._previous = {s: signal.signal(s, self._exit) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals are left alone
      return self
    self._wakeup, writer = socket.socketpair()
    writer.setblocking(False)
    self._wakeup_fd = writer.detach()
    self._previous_fd = signal.set_wakeup_fd(self._wakeup_fd, warn_on_full_buffer=False)
    threading.Thread(target=self._wake, daemon=True).start()
    return self

  def _wake(self):
    """Acts on each signal number written to the wakeup fd while `_exit` is its handler."""
    with self._wakeup:
      while numbers := self._wakeup.recv(64):
        for signum in numbers:
          if signal.getsignal(signum) == self._exit:
            self._exit(signum, None)

  def _exit(self, signum, frame):
    del frame
    if not self._exiting.acquire(blocking=False):
      return
    name = signal.Signals(signum).name
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except (OSError, RuntimeError, ValueError):  # RuntimeError: the main thread was writing
        pass
    os.write(sys.stderr.fileno(), f"{self._prog}: stopped by {name} before the first step; no "
             "checkpoint was written\n".encode())
    os._exit(128 + signum)

  def __exit__(self, *exc):
    if self._previous:
      signal.set_wakeup_fd(self._previous_fd)
      os.close(self._wakeup_fd)  # ends `_wake`
      for s, previous in self._previous.items():
        signal.signal(s, previous)


def main(argv=None) -> None:
  """Entry point of the `jaxmm` console script; `argv` excludes the program name."""
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = _parser()
  try:
    rest, overrides = config_loading.split_overrides(argv)
  except config_loading.ConfigError as e:
    parser.error(str(e))
  args = parser.parse_args(rest)
  xla_cpu.use_eigen_convolutions()
  show_traceback = args.traceback or os.environ.get("JAXMM_TRACEBACK", "0") not in ("", "0")
  if args.command == "sample" and overrides:
    parser.error("jaxmm sample takes no --config.KEY overrides: it samples the run's own config")
  if args.command == "filter" and overrides:
    parser.error("jaxmm filter takes no --config.KEY overrides: it scores with the run's own "
                 "config")
  try:
    if args.command == "sample":
      _sample(args)
      return
    if args.command == "filter":
      filter_command.run(args)
      return
    if args.command == "sweep":
      sweep_command.run(args, overrides)
      return
    if args.command == "inspect":
      _inspect(args, overrides)
      return
    with _ExitOnSignal(args.parser.prog):
      config = config_loading.load_config(args.config)
      config_loading.apply_overrides(config, overrides)
      _train(config, args)
  except errors.UserError as e:
    _fail(args.parser.prog, e, show_traceback)
  except errors.Interrupted as e:
    sys.stderr.write(f"{args.parser.prog}: {e}\n")
    sys.exit(128 + e.signum)
  except BrokenPipeError:
    # The reader went away (`jaxmm inspect ... | head`): stop quietly, as other tools do,
    # with stdout pointed at /dev/null so that the interpreter's final flush cannot fail too.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)


if __name__ == "__main__":
  main()
