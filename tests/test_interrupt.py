"""SIGINT and SIGTERM before the train loop begins: exit at once with one line, every time.

Until the loop's own handlers (`jaxmm.train.stop_signals`) take over, there
is nothing to save; `jaxmm train` must neither print a traceback nor crash
while XLA compiles in other threads, and must not wait for a compilation or
for other processes to finish first.
"""
import re
import signal
import time

import pytest

from test_cli_faults import TIMEOUT, _command, _start
from test_multiprocess import _free_port


def _stopped_line(signum) -> str:
  return (f"jaxmm train: stopped by {signal.Signals(signum).name} before the first step; "
          "no checkpoint was written")


def _wait_for_stderr(process, pattern) -> str:
  """Reads the process's stderr until a line matches `pattern`; returns what it read."""
  read = ""
  deadline = time.time() + TIMEOUT
  for line in process.stderr:
    read += line
    if re.search(pattern, line):
      return read
    assert time.time() < deadline
  raise AssertionError(f"no stderr line matching {pattern!r}: {read[-2000:]}")


def _signal_and_finish(process, signum, read):
  """Sends `signum`; returns (stdout, all of stderr, seconds until the process ended)."""
  sent = time.time()
  process.send_signal(signum)
  out, err = process.communicate(timeout=TIMEOUT)
  return out, read + err, time.time() - sent


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_first_step_compiles_exits_with_one_line(
    tmp_path, shapes_data_dir, tiny_overrides, signum):
  workdir = tmp_path / "run"
  process = _start(_command(workdir, shapes_data_dir, tiny_overrides, "total_steps=5"))
  read = _wait_for_stderr(process, r"mesh: ")  # the loop compiles its step next
  out, err, _ = _signal_and_finish(process, signum, read)
  assert process.returncode == 128 + signum, err[-3000:]
  assert "Traceback" not in err and "Fatal Python error" not in err, err[-3000:]
  assert err.strip().splitlines()[-1] == _stopped_line(signum)
  assert "[1] train/" not in out
  assert not list(workdir.glob("checkpoints/*"))


def test_a_signal_while_waiting_for_other_processes_exits_at_once(tmp_path, shapes_data_dir,
                                                                 tiny_overrides):
  """Here the main thread waits inside JAX's C++ client, where Python runs no handler."""
  command = _command(tmp_path / "run", shapes_data_dir, tiny_overrides) + [
      "--coordinator-address", f"127.0.0.1:{_free_port()}", "--num-processes", "2",
      "--process-id", "0", "--distributed-timeout", "120"
  ]
  process = _start(command)
  read = _wait_for_stderr(process, r"waiting for 2 processes to join")
  time.sleep(2)  # into jax.distributed.initialize
  _, err, seconds = _signal_and_finish(process, signal.SIGINT, read)
  assert process.returncode == 128 + signal.SIGINT, err[-3000:]
  assert err.strip().splitlines()[-1] == _stopped_line(signal.SIGINT)
  assert seconds < 10
