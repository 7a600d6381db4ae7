"""How a sweep's points run: in turn here (local), as a Slurm array job, or on a TPU VM or pod.

Finished points (a checkpoint at their total_steps) are skipped; a partial one
runs again and `jaxmm train` resumes it from its latest checkpoint. A failing
point is reported and the others still run; the sweep then ends in an error
naming the failed points. Run here, each point's stderr passes through the
sweep, which keeps its last line: how the point ended, with that line when it
diverged or failed, goes to its folder (`plan.record_outcome`) for
`jaxmm sweep --summarize`. With `dry_run` nothing runs or is submitted: the
commands are printed, and notes (such as skipped points) as `# ...` lines.
"""
import io
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable

from jaxmm import config_loading
from jaxmm.errors import UserError
from jaxmm import storage
from jaxmm.sweeps import plan

# tpu/launch.sh --tpu NAME --zone ZONE [--project P] -- COMMAND starts COMMAND on every worker.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TPU_LAUNCH_SCRIPT = os.path.join(REPOSITORY, "tpu", "launch.sh")
SLURM_COMMANDS_FILE = "sweep_commands.txt"
SLURM_SCRIPT_FILE = "sweep.sbatch"
TRAIN_ERROR_PREFIX = "jaxmm train: error: "  # how a point's `jaxmm train` reports a UserError
DIVERGED_PREFIX = "training diverged at step "  # how `jaxmm.train.nonfinite.Diverged` begins
_STDERR_TAIL_BYTES = 65536  # of a point's stderr, kept for its last line
_STDERR_DRAIN_S = 10  # to wait, once a point has exited, for the rest of its stderr


class Stopped(Exception):
  """SIGTERM or Ctrl-C stopped a point's run (which saved first, as `jaxmm train` does)."""

  def __init__(self, signum: int, point_name: str):
    self.signum = signum
    super().__init__(f"stopped by {signal.Signals(signum).name} while {point_name} ran; run the "
                     "same command to resume the sweep")


def _note(text: str, dry_run: bool) -> None:
  print(f"# {text}" if dry_run else text, flush=True)


def _labelled(sweep: plan.Sweep) -> list[tuple[str, plan.Point]]:
  """Each point with its label for progress lines, '[i/n] name'."""
  count = len(sweep.points)
  return [(f"[{i}/{count}] {point.name}", point) for i, point in enumerate(sweep.points, start=1)]


def _finished(sweep: plan.Sweep, label: str, point: plan.Point, dry_run: bool) -> bool:
  """Whether `point` is finished, noted as skipped if so."""
  if plan.point_status(sweep.point_dir(point), point.total_steps) != plan.FINISHED:
    return False
  _note(f"{label}: finished, skipped", dry_run)
  return True


def run_in_turn(sweep: plan.Sweep, command_of: Callable[[plan.Point], list[str]],
                dry_run: bool) -> None:
  """Runs `command_of(point)` for each unfinished point, one after another.

  A failing point does not stop the others; a UserError naming the failed
  ones ends the sweep. A point stopped by SIGTERM or Ctrl-C stops the sweep
  (`Stopped`).
  """
  ran, failures = 0, []
  for label, point in _labelled(sweep):
    if _finished(sweep, label, point, dry_run):
      continue
    command = command_of(point)
    if dry_run:
      print(shlex.join(command))
      continue
    print(f"{label}: running {shlex.join(command)}", flush=True)
    point_dir = sweep.point_dir(point)
    plan.record_outcome(point_dir, plan.RUNNING)
    status, received, last_line = _run(command)
    if received is None and status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
      received = status - 128  # the point alone was stopped, and saved
    if received is not None:
      plan.record_outcome(point_dir, plan.STOPPED, status)
      raise Stopped(received, point.name)
    _record_end(point_dir, status, last_line)
    ran += 1
    if status:
      failures.append(f"{point.name} ({_describe_status(status)})")
    print(f"{label}: {_describe_status(status) if status else 'done'}", flush=True)
  if dry_run:
    return
  print(f"sweep: {ran - len(failures)} ran, {len(sweep.points) - ran} skipped (finished before), "
        f"{len(failures)} failed")
  if failures:
    raise UserError(f"{len(failures)} of {len(sweep.points)} points failed: "
                    f"{', '.join(failures)}; see their output above, then run the same command "
                    "again (finished points are skipped)")


def _describe_status(status: int) -> str:
  if status < 0:
    return f"killed by {signal.Signals(-status).name}"
  return f"failed with exit status {status}"


def _record_end(point_dir: str, status: int, last_line: str) -> None:
  """Records how a point's run ended: DONE, or DIVERGED or FAILED with what went wrong (its
  `jaxmm train: error:` message, else its exit status and last line)."""
  if not status:
    plan.record_outcome(point_dir, plan.DONE, status)
    return
  if last_line.startswith(TRAIN_ERROR_PREFIX):
    error = last_line[len(TRAIN_ERROR_PREFIX):]
  else:
    error = _describe_status(status) + (f": {last_line}" if last_line and status > 0 else "")
  outcome = plan.DIVERGED if error.startswith(DIVERGED_PREFIX) else plan.FAILED
  plan.record_outcome(point_dir, outcome, status, error)


def _run(command: list[str]) -> tuple[int, int | None, str]:
  """Runs `command` to its end: (its exit status, the stop signal the sweep got meanwhile or
  None, the last line of its stderr).

  Its stderr is copied to the sweep's as it comes. Ctrl-C reaches the command
  too (one process group) and `jaxmm train` saves before it exits, so this
  waits for it; SIGTERM sent to the sweep alone is passed on to it.
  """
  # pylint: disable-next=consider-using-with
  process = subprocess.Popen(command, stderr=subprocess.PIPE)
  tail = bytearray()
  copier = threading.Thread(target=_copy_to_stderr, args=(process.stderr, tail), daemon=True)
  copier.start()
  status, received = _wait(process)
  # A process that the point started and left behind may hold the pipe open: wait for what
  # the point wrote, not for that.
  copier.join(timeout=_STDERR_DRAIN_S)
  return status, received, _last_line(bytes(tail))


def _copy_to_stderr(pipe, tail: bytearray) -> None:
  """Copies `pipe` to this process's stderr as it comes (progress bars too, which end in '\\r'),
  keeping its last _STDERR_TAIL_BYTES in `tail`."""
  copying = True
  with pipe:
    for chunk in iter(lambda: os.read(pipe.fileno(), io.DEFAULT_BUFFER_SIZE), b""):
      try:
        if copying:
          _write_all(2, chunk)  # where the point's stderr would have gone, had it not been piped
      except OSError:
        # The sweep's stderr is gone (a reader that quit): still drain the pipe, or the point
        # would block on its next write.
        copying = False
      tail += chunk
      del tail[:-_STDERR_TAIL_BYTES]


def _write_all(fd: int, data: bytes) -> None:
  """Writes all of `data` to file descriptor `fd` (one os.write may write less)."""
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view):]


def _last_line(text: bytes) -> str:
  """The last line of `text` that holds more than spaces, stripped; '' if there is none."""
  lines = text.decode("utf-8", errors="replace").replace("\r", "\n").split("\n")
  return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _wait(process: subprocess.Popen) -> tuple[int, int | None]:
  """Waits for `process` to end: (its exit status, the stop signal the sweep got meanwhile or
  None), passing SIGTERM on to it."""
  received = []

  def pass_on(signum, frame):
    del frame
    received.append(signum)
    process.send_signal(signum)

  previous = signal.signal(signal.SIGTERM, pass_on)
  try:
    while True:
      try:
        return process.wait(), (received[0] if received else None)
      except KeyboardInterrupt:
        received.append(signal.SIGINT)
  finally:
    signal.signal(signal.SIGTERM, previous)


def launch_on_tpu(sweep: plan.Sweep, python: str | None, tpu: str, zone: str,
                  project: str | None, dry_run: bool) -> None:
  """Runs the sweep itself on every worker of TPU VM or pod slice `tpu`, through tpu/launch.sh.

  launch.sh starts its command detached, so points launched one by one from
  here would all run at once. Instead each worker runs `jaxmm sweep` with the
  local launcher, in its checkout with its .venv active: the points in turn,
  every worker joining each point's run, finished ones skipped.
  """
  remote_sweep = [
      "python", "-m", "jaxmm.commands.cli", "sweep", "--config", sweep.spec, "--workdir",
      sweep.workdir,
      *(["--python", python] if python else []),
      *[config_loading.OVERRIDE_PREFIX + o for o in sweep.base_overrides]
  ]
  project_args = ["--project", project] if project else []
  command = [TPU_LAUNCH_SCRIPT, "--tpu", tpu, "--zone", zone, *project_args, "--", *remote_sweep]
  if dry_run:
    print(shlex.join(command))
    return
  if not os.access(TPU_LAUNCH_SCRIPT, os.X_OK):
    raise UserError(f"{TPU_LAUNCH_SCRIPT} is missing or not executable; --launcher tpu runs "
                    "the sweep through it")
  status = subprocess.run(command, check=False).returncode
  if status:
    raise UserError(f"tpu/launch.sh failed with exit status {status}; see its message above")
  print(f"the sweep runs on {tpu}; follow it with tpu/logs.sh --tpu {tpu} --zone {zone}")


def submit_slurm(sweep: plan.Sweep, python: str, task_options: list[str],
                 dry_run: bool) -> None:
  """Writes the unfinished points' commands and an sbatch array script, and submits it.

  Array task i runs line i + 1 of `workdir/sweep_commands.txt`; `task_options`
  are its `#SBATCH` options (`sbatch_options`). With
  `dry_run` both files are written and the sbatch command is printed.
  """
  if not storage.is_local(sweep.workdir):
    raise UserError(f"--launcher slurm with --workdir {sweep.workdir}: the Slurm nodes read the "
                    "array script from the workdir, so give a folder on the cluster's shared "
                    "filesystem (or use --launcher local or tpu with a bucket)")
  todo = [point for label, point in _labelled(sweep) if not _finished(sweep, label, point, dry_run)]
  if not todo:
    _note("every point is finished; nothing to submit", dry_run)
    return
  commands_path = os.path.abspath(os.path.join(sweep.workdir, SLURM_COMMANDS_FILE))
  script_path = os.path.join(sweep.workdir, SLURM_SCRIPT_FILE)
  with open(commands_path, "w", encoding="utf-8") as f:
    f.writelines(shlex.join(sweep.train_command(point, python)) + "\n" for point in todo)
  with open(script_path, "w", encoding="utf-8") as f:
    f.write(_sbatch_script(sweep.workdir, commands_path, len(todo), task_options))
  submit = ["sbatch", script_path]
  if dry_run:
    print(shlex.join(submit))
    return
  try:
    status = subprocess.run(submit, check=False).returncode
  except FileNotFoundError:
    raise UserError("sbatch not found: --launcher slurm submits with Slurm's sbatch; run on a "
                    f"login node, or submit {script_path} there") from None
  if status:
    raise UserError(f"{shlex.join(submit)} failed with exit status {status}; see its message "
                    "above")


def sbatch_options(nodes: int, gpus_per_node: int, time: str, extra: str) -> list[str]:
  """The `#SBATCH` options of each task; `extra` ('--partition=gpu -A proj') is passed through."""
  options = [f"--nodes={nodes}", f"--time={time}"]
  if gpus_per_node:
    options.append(f"--gpus-per-node={gpus_per_node}")
  # One #SBATCH line per option: a token that starts with '-' begins the next.
  extra_options = []
  for token in shlex.split(extra):
    if token.startswith("-") or not extra_options:
      extra_options.append(token)
    else:
      extra_options[-1] += " " + token
  return options + extra_options


def _sbatch_script(workdir: str, commands_path: str, count: int, task_options: list[str]) -> str:
  """An array job of `count` tasks, task i running line i + 1 of `commands_path` with srun."""
  workdir = os.path.abspath(workdir)
  options = [
      f"--job-name=jaxmm-sweep-{os.path.basename(workdir)}", f"--array=0-{count - 1}",
      f"--output={workdir}/slurm-%A_%a.out", "--open-mode=append", *task_options
  ]
  return "\n".join([
      "#!/bin/bash",
      f"# A jaxmm sweep of {count} points: array task i runs line i + 1 of {SLURM_COMMANDS_FILE}.",
      *[f"#SBATCH {option}" for option in options],
      "set -euo pipefail",
      f"cd {shlex.quote(os.getcwd())}",
      f'command=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(commands_path)})',
      'srun bash -c "$command"',
      "",
  ])
