"""`jaxmm train`: an experiment of experiments/ (`config.experiment`) through `jaxmm.train`.

  jaxmm train --config FILE.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]
              [--coordinator-address HOST:PORT --num-processes N --process-id I]

The run resumes from DIR's latest checkpoint when there is one. A run stopped
by SIGTERM or Ctrl-C exits with 128 + the signal number after saving its
checkpoint; before its first step, at once, with one line (`ExitOnSignal`).
"""
import argparse
import logging as std_logging
import os
import signal
import socket
import sys
import threading

from absl import flags
from absl import logging

from jaxmm import errors
from jaxmm.commands import flag_spelling


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of `jaxmm train` besides --config."""
  parser.add_argument("--workdir",
                      required=True,
                      metavar="DIR",
                      help="where checkpoints, config.json and metrics go")
  cluster = parser.add_argument_group(
      "multi-process runs",
      "Start the same command on every host with its own --process-id. Without these flags "
      "(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), SLURM job steps and "
      "TPU pods are detected; anything else runs as one process.")
  flag_spelling.add_flag(cluster, "--coordinator-address", metavar="HOST:PORT",
                         help="process 0's address")
  flag_spelling.add_flag(cluster, "--num-processes", type=int, metavar="N",
                         help="processes in the run")
  flag_spelling.add_flag(cluster, "--process-id", type=int, metavar="I",
                         help="this process, 0 .. N-1")
  flag_spelling.add_flag(cluster,
                         "--distributed-timeout",
                         type=int,
                         default=300,
                         metavar="S",
                         help="seconds to wait for every process to join (default 300)")


def run(config, args: argparse.Namespace, wants_traceback: bool) -> None:
  """Trains `config` into --workdir as the experiment it names."""
  # Imported here so that `jaxmm inspect` and config errors need no JAX start-up.
  from jaxmm import train as train_lib  # pylint: disable=import-outside-toplevel
  from jaxmm.experiments import EXPERIMENTS  # pylint: disable=import-outside-toplevel
  from jaxmm.parallel import distributed  # pylint: disable=import-outside-toplevel
  from jaxmm.train import background_errors  # pylint: disable=import-outside-toplevel
  errors.one_of("experiment", config.experiment, EXPERIMENTS)
  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                         args.distributed_timeout, prog=args.parser.prog)
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
  if not wants_traceback:
    background_errors.quiet_failed_saves()
  train_lib.train(config, args.workdir, EXPERIMENTS[config.experiment])


class ExitOnSignal:
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
