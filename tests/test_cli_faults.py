"""Faults met from the command line: Ctrl-C, a second run on a busy workdir, a failing disk.

Each test drives `jaxmm train` as a subprocess on one CPU device, as a user would.
"""
import logging
import os
import pathlib
import re
import resource
import signal
import subprocess
import sys
import time

import pytest

from jaxmm import analysis
from jaxmm.train import background_errors

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 300


def _env(**overrides):
  env = dict(os.environ, PYTHONUNBUFFERED="1", **overrides)
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user's process has
  return env


# For processes whose files are cut short: the compilation cache's entries would be too.
NO_COMPILATION_CACHE = dict(JAX_ENABLE_COMPILATION_CACHE="false")


def _command(workdir, data_dir, tiny_overrides, *overrides):
  tiny = [o for o in tiny_overrides if not o.startswith("total_steps")]
  return ([
      sys.executable, "-m", "jaxmm.commands.cli", "train", "--config", "configs/siglip_shapes.py",
      "--workdir",
      str(workdir), f"--config.data.data_dir={data_dir}", "--config.eval_every=0"
  ] + [f"--config.{o}" for o in tiny] + [f"--config.{o}" for o in overrides])


def _start(command, **kwargs):
  return subprocess.Popen(command,
                          cwd=REPO,
                          env=_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True,
                          **kwargs)


def _run(command, env=None, **kwargs):
  """Runs `command` to completion (in `env`, default `_env()`); returns the CompletedProcess
  (stdout, stderr as text)."""
  return subprocess.run(command,
                        cwd=REPO,
                        env=env or _env(),
                        capture_output=True,
                        text=True,
                        timeout=TIMEOUT,
                        check=False,
                        **kwargs)


def _wait_for_line(process, pattern):
  """Reads the process's stdout until a line matches `pattern`."""
  deadline = time.time() + TIMEOUT
  for line in process.stdout:
    if re.search(pattern, line):
      return line
    assert time.time() < deadline
  raise AssertionError(f"no line matching {pattern!r}; stderr: {process.stderr.read()[-2000:]}")


def _last_line(text):
  return text.strip().splitlines()[-1]


def test_ctrl_c_saves_the_current_step_and_exits_130(tmp_path, shapes_data_dir, tiny_overrides):
  workdir = tmp_path / "run"
  process = _start(
      _command(workdir, shapes_data_dir, tiny_overrides, "total_steps=100000",
               "checkpoint_every=1000", "log_every=1"))
  _wait_for_line(process, r"^\[3\] train/")
  process.send_signal(signal.SIGINT)
  _, err = process.communicate(timeout=TIMEOUT)
  assert process.returncode == 128 + signal.SIGINT, err[-2000:]
  match = re.fullmatch(
      r"jaxmm train: stopped by SIGINT after saving checkpoint (\d+); "
      r"run the same command to resume", _last_line(err))
  assert match, _last_line(err)
  step = int(match.group(1))
  assert step >= 3 and step % 1000  # the step it was at, not a checkpoint step
  assert analysis.checkpoint_steps(str(workdir)) == [step]


def test_second_ctrl_c_exits_at_once(tmp_path, shapes_data_dir, tiny_overrides):
  process = _start(
      _command(tmp_path / "run", shapes_data_dir, tiny_overrides, "total_steps=100000",
               "checkpoint_every=1000", "log_every=1"))
  _wait_for_line(process, r"^\[3\] train/")
  process.send_signal(signal.SIGINT)
  time.sleep(0.05)
  process.send_signal(signal.SIGINT)
  _, err = process.communicate(timeout=TIMEOUT)
  assert process.returncode == 128 + signal.SIGINT
  assert "second interrupt: exiting now" in err
  assert "stopped by SIGINT after saving" not in err


def test_second_run_on_a_live_workdir_is_refused_until_the_holder_dies(
    tmp_path, shapes_data_dir, tiny_overrides):
  workdir = tmp_path / "run"
  holder = _start(
      _command(workdir, shapes_data_dir, tiny_overrides, "total_steps=100000",
               "checkpoint_every=100000", "log_every=1"))
  try:
    _wait_for_line(holder, r"^\[1\] train/")
    # Stopped, the holder is still alive and holds the lock, and leaves the cores to the second.
    holder.send_signal(signal.SIGSTOP)
    second = _run(_command(workdir, shapes_data_dir, tiny_overrides, "total_steps=2"))
    assert second.returncode == 2
    assert re.match(
        rf"jaxmm train: error: workdir {workdir} is in use by a live run \(pid "
        rf"{holder.pid} on .*\); wait for it or stop it, or choose another --workdir",
        _last_line(second.stderr)), _last_line(second.stderr)
  finally:
    holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
    holder.communicate(timeout=TIMEOUT)
  after = _run(
      _command(workdir, shapes_data_dir, tiny_overrides, "total_steps=2", "checkpoint_every=1"))
  assert after.returncode == 0, after.stderr[-2000:]
  assert analysis.checkpoint_steps(str(workdir)) == [1, 2]


def test_failed_save_stops_the_run_at_once(tmp_path, shapes_data_dir, tiny_overrides):
  # Files may grow to 30 kB: config.json, the lock and the event file fit, the
  # first checkpoint's array store does not (write fails with EFBIG, as on a
  # full disk). Without the check after each step, the failure would surface
  # only at the next save, step 100.
  def limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

  result = _run(_command(tmp_path / "run", shapes_data_dir, tiny_overrides, "total_steps=100000",
                         "checkpoint_every=50", "log_every=5"),
                env=_env(**NO_COMPILATION_CACHE),
                preexec_fn=limit_file_size)
  assert result.returncode == 2, result.stderr[-2000:]
  line = _last_line(result.stderr)
  assert line.startswith("jaxmm train: error: saving a checkpoint under ")
  assert "File too large" in line and "no checkpoint was written" in line
  logged = [int(s) for s in re.findall(r"^\[(\d+)\] train/", result.stdout, re.M)]
  assert 50 <= max(logged) < 100


def _stderr_lines_besides_progress(stderr):
  """The lines of `stderr` other than tqdm's progress bar and jaxmm's INFO lines."""
  lines = [line.strip() for line in re.split(r"[\r\n]", stderr)]
  return [
      line for line in lines
      if line and not re.match(r"\d+%\|", line) and not line.startswith("INFO:jaxmm:")
  ]


def _train_on_a_full_disk(workdir, *flags):
  """The 2-D toy (no dataset, quick to compile) trained as in
  test_failed_save_stops_the_run_at_once, where the first checkpoint does not fit: orbax's writer
  threads fail, and each of them and of tensorstore's callbacks prints the failure."""

  def limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

  result = subprocess.run([
      sys.executable, "-m", "jaxmm.commands.cli", "train", "--config", "configs/edm_toy2d.py",
      "--workdir",
      str(workdir), "--config.total_steps=100000", "--config.checkpoint_every=5",
      "--config.batch_size=16", "--config.eval_every=0", *flags
  ],
                          cwd=REPO,
                          env=_env(**NO_COMPILATION_CACHE),
                          capture_output=True,
                          text=True,
                          timeout=TIMEOUT,
                          check=False,
                          preexec_fn=limit_file_size)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = _stderr_lines_besides_progress(result.stderr)
  assert lines[-1].startswith("jaxmm train: error: saving a checkpoint under ")
  assert "File too large" in lines[-1]
  return lines


def test_full_disk_ends_in_one_line(tmp_path):
  lines = _train_on_a_full_disk(tmp_path / "run")
  assert lines == lines[-1:], "\n".join(lines[:40])


@pytest.mark.slow  # test_full_disk_ends_in_one_line runs the same failure by default
def test_full_disk_with_traceback_shows_the_libraries_reports_too(tmp_path):
  lines = _train_on_a_full_disk(tmp_path / "run", "--traceback")
  assert "Traceback (most recent call last):" in lines
  assert any(line.startswith("ERROR:absl:") for line in lines)


def test_orbax_reports_of_a_failed_save_stay_quiet_after_the_loop_has_returned():
  """A writer thread may log its failure after the loop has reported it and returned."""
  absl_logger = logging.getLogger("absl")
  filters = list(absl_logger.filters)
  background_errors.quiet_failed_saves()
  try:

    def passes(pathname, exc_info):
      return absl_logger.filter(
          logging.LogRecord("absl", logging.ERROR, pathname, 1, "write failed", None, exc_info))

    failure = (ValueError, ValueError("File too large"), None)
    assert not passes("/site-packages/orbax/checkpoint/_src/futures/future.py", failure)
    assert passes("/site-packages/orbax/checkpoint/_src/path/deleter.py", failure)
    assert passes("/site-packages/orbax/checkpoint/_src/futures/future.py", None)
  finally:
    absl_logger.filters[:] = filters
