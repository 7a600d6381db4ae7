"""Joining JAX's multi-controller runtime: one process per host, all running the same program.

`initialize` is called once, before anything touches a device. Where it finds
the cluster's shape:

1. explicit values: `jaxmm train --coordinator-address HOST:PORT
   --num-processes N --process-id I`, or the environment variables
   JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID;
2. a cluster JAX detects by itself (`jax.distributed.initialize()` with no
   arguments): a SLURM job step of several tasks, a TPU pod slice on GKE
   (TPU_WORKER_HOSTNAMES lists several hosts) or any Cloud TPU VM (libtpu is
   installed; a single host then forms a cluster of one);
3. otherwise the run is a single process and nothing is initialised.

On the CPU, processes exchange collectives through gloo over TCP, so several
local processes with simulated devices form one cluster (the tests do this).

JAX's client ends the whole process with a C++ abort when the cluster does not
form in time or the coordinator is not JAX's, so `initialize` checks the
address first, says at once what it waits for (and every `REPORT_EVERY_S`
seconds how it goes), and at the deadline ends the process itself with one
error line, before JAX's own timeout.
"""
import importlib.util
import os
import socket
import sys
import threading
import time

import jax

from jaxmm import errors

REPORT_EVERY_S = 30
# JAX's own timeout comes this much after `initialize`'s deadline, so that a
# cluster that does not form ends with `_Wait`'s one line, not with JAX's abort.
_JAX_GRACE_S = 60
# The start of an HTTP/2 connection (the client preface and an empty SETTINGS
# frame). JAX's coordinator speaks gRPC over HTTP/2, so it answers with a
# SETTINGS frame (type 4); anything else listening on the port does not.
_HTTP2_START = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS_FRAME = 4

ENV = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def _explicit(coordinator_address, num_processes, process_id) -> dict:
  """The explicit values (flags first, then ENV); {} when none is given."""
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  for key, var in ENV.items():
    if given[key] is None and os.environ.get(var):
      given[key] = os.environ[var]
  if all(value is None for value in given.values()):
    return {}
  missing = [
      f"--{key.replace('_', '-')} (or {ENV[key]})" for key, value in given.items() if value is None
  ]
  if missing:
    raise errors.UserError(f"a multi-process run needs --coordinator-address, --num-processes "
                           f"and --process-id together; missing {', '.join(missing)}")
  host, _, port = str(given["coordinator_address"]).rpartition(":")
  if not host or not port.isdigit():
    raise errors.UserError(f"--coordinator-address={given['coordinator_address']!r}: expected "
                           "HOST:PORT, the address of process 0, e.g. 10.0.0.2:1234")
  if not 1 <= int(port) <= 65535:
    raise errors.UserError(f"--coordinator-address={given['coordinator_address']}: the port "
                           "must be a number from 1 to 65535, a free port of process 0's host")
  try:
    num_processes, process_id = int(given["num_processes"]), int(given["process_id"])
  except ValueError as e:
    raise errors.UserError(f"--num-processes and --process-id must be integers: {e}") from None
  errors.integer_at_least("--num-processes", num_processes, 1)
  errors.integer_at_least("--process-id", process_id, 0)
  if process_id >= num_processes:
    raise errors.UserError(f"--process-id={process_id} is not below --num-processes="
                           f"{num_processes}; number the processes 0 .. {num_processes - 1}")
  return {"coordinator_address": given["coordinator_address"], "num_processes": num_processes,
          "process_id": process_id}


def _check_coordinator(address: str, process_id: int) -> None:
  """Process 0: the port is free to serve on. Others: waits until a JAX coordinator answers.

  Only a port that answers as something else is an error here; one that does
  not answer yet is waited for, until `_Wait` ends the process.
  """
  host, _, port = address.rpartition(":")
  if process_id == 0:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
      try:
        s.bind(("", int(port)))
      except OSError as e:
        raise errors.UserError(f"--coordinator-address={address}: process 0 cannot serve on port "
                               f"{port} ({e.strerror}); choose a free port") from None
    return
  while (answer := _first_answer(host.strip("[]"), int(port))) is None:
    time.sleep(0.5)
  if answer[3:4] != bytes([_SETTINGS_FRAME]):
    raise errors.UserError(
        f"--coordinator-address={address}: something other than a JAX coordinator listens there "
        f"(it answered {answer.splitlines()[0][:40]!r}); give process 0's host and the port that "
        "process 0 was started with")


def _first_answer(host: str, port: int) -> bytes | None:
  """The first bytes (4 or more) that HOST:PORT sends back to the start of an HTTP/2
  connection; None when nothing listens there or it says nothing within seconds."""
  try:
    with socket.create_connection((host, port), timeout=5) as s:
      s.sendall(_HTTP2_START)
      answer = b""
      while len(answer) < 4 and (chunk := s.recv(64)):
        answer += chunk
  except OSError:  # refused, unreachable or silent (socket.timeout is an OSError)
    return None
  return answer or None


def _joined(port: int) -> int | None:
  """How many processes are connected to the coordinator that this process serves on `port`.

  JAX does not tell; each process holds one TCP connection to the
  coordinator, so this counts the connections this process accepted on that
  port, from Linux's /proc. None where there is no /proc.
  """
  try:
    sockets = set()
    for fd in os.listdir("/proc/self/fd"):
      try:
        sockets.add(os.readlink(f"/proc/self/fd/{fd}"))
      except OSError:
        pass  # closed since it was listed
    with open("/proc/self/net/tcp", encoding="ascii") as f:
      rows = f.readlines()[1:]
    if os.path.exists("/proc/self/net/tcp6"):
      with open("/proc/self/net/tcp6", encoding="ascii") as f:
        rows += f.readlines()[1:]
  except OSError:
    return None
  # Columns: number, local HEX_IP:HEX_PORT, remote address, state (01: established), ...;
  # the tenth is the socket's inode.
  columns = [row.split() for row in rows]
  return sum(1 for c in columns if int(c[1].rpartition(":")[2], 16) == port and c[3] == "01" and
             f"socket:[{c[9]}]" in sockets)


class _Wait:
  """Context manager around joining a cluster: says what this process waits for, at once and
  every `REPORT_EVERY_S` seconds; at `timeout_s` it prints `PROG: error: ...` and exits with
  status 2 (from a thread: JAX's client blocks the main thread until it aborts).

  `explicit` is `_explicit`'s dict, or {} for a cluster that JAX detects (`how`).
  `reached` is set by the caller once process 0 answered.
  """

  def __init__(self, prog: str, timeout_s: int, explicit: dict, how: str):
    self.reached = False
    self._prog, self._timeout_s, self._how = prog, timeout_s, how
    self._address = explicit.get("coordinator_address")
    self._num, self._id = explicit.get("num_processes"), explicit.get("process_id")
    self._done = threading.Event()
    self._watcher = threading.Thread(target=self._watch, daemon=True)
    self._start = time.monotonic()

  def __enter__(self):
    if self._address is None:
      self._say(f"joining the {self._how} cluster (waiting up to {self._timeout_s} s)")
    else:
      self._say(f"process {self._id} waiting for {self._num} processes to join at "
                f"{self._address} (up to {self._timeout_s} s)")
    self._watcher.start()
    return self

  def __exit__(self, *exc):
    self._done.set()
    self._watcher.join()  # no report after the wait

  def _say(self, text: str) -> None:
    sys.stderr.write(f"{self._prog}: {text}\n")
    sys.stderr.flush()

  def _joined_text(self) -> str | None:
    """'K of N processes joined' on process 0 where that can be counted, else None."""
    if self._id != 0:
      return None
    joined = _joined(int(self._address.rpartition(":")[2]))
    return None if joined is None else f"{min(joined, self._num)} of {self._num} processes joined"

  def _progress(self) -> str:
    waited = f"after {time.monotonic() - self._start:.0f} s"
    if self._address is None:
      return f"still joining the {self._how} cluster {waited}"
    if self._id != 0 and not self.reached:
      return f"process {self._id} cannot reach the coordinator {self._address} yet, {waited}"
    joined = self._joined_text() or f"not all {self._num} processes have joined"
    return f"{joined} at {self._address} {waited}"

  def _timeout_message(self) -> str:
    if self._address is None:
      return (f"the {self._how} cluster did not form within {self._timeout_s} s; check that "
              "every process of the job started, or raise --distributed-timeout")
    if self._id != 0 and not self.reached:
      return (f"could not reach the coordinator {self._address} within {self._timeout_s} s as "
              f"process {self._id}; start process 0 with the same --coordinator-address (its "
              "own host and a free port) and check that the port is reachable from here")
    joined = self._joined_text() or f"not all {self._num} processes joined"
    return (f"the cluster did not form within {self._timeout_s} s: {joined} at "
            f"{self._address}; start every process with --coordinator-address {self._address} "
            f"--num-processes {self._num} and its own --process-id (0 .. {self._num - 1}), or "
            "raise --distributed-timeout")

  def _watch(self) -> None:
    deadline = self._start + self._timeout_s
    while not self._done.wait(min(REPORT_EVERY_S, max(deadline - time.monotonic(), 0))):
      if time.monotonic() < deadline:
        self._say(self._progress())
        continue
      self._say(f"error: {self._timeout_message()}")
      sys.stdout.flush()
      os._exit(2)


def detect_cluster() -> str | None:
  """'slurm', 'gke' or 'cloud_tpu' when JAX can find the cluster by itself, else None."""
  if int(os.environ.get("SLURM_NTASKS", os.environ.get("SLURM_STEP_NUM_TASKS", "1"))) > 1:
    return "slurm"
  if len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
    return "gke"
  if importlib.util.find_spec("libtpu") is not None:
    return "cloud_tpu"
  return None


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None,
               timeout_s: int = 300,
               prog: str = "jaxmm") -> str:
  """Joins the cluster (module docstring) and returns how: 'explicit', a cluster name, or 'single'.

  Fails with a `UserError` for values that do not add up and for a coordinator
  address where something else listens, before JAX starts. While it waits it
  writes `PROG: ...` lines to stderr; when the cluster has not formed within
  `timeout_s` seconds it ends the process: `PROG: error: ...` and status 2.
  """
  explicit = _explicit(coordinator_address, num_processes, process_id)
  how = "explicit" if explicit else detect_cluster()
  if how is None:
    return "single"
  errors.integer_at_least("--distributed-timeout", timeout_s, 1)
  with _Wait(prog, timeout_s, explicit, how) as wait:
    if explicit:
      _check_coordinator(explicit["coordinator_address"], explicit["process_id"])
      wait.reached = True
    _join(explicit, how, timeout_s + _JAX_GRACE_S)
  return how


def _join(explicit: dict, how: str, timeout_s: int) -> None:
  """`jax.distributed.initialize`, its Python errors as a `UserError`."""
  # Only the CPU client reads this; on accelerators it changes nothing.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**explicit, initialization_timeout=timeout_s)
  except Exception as e:  # pylint: disable=broad-except
    where = (f"process {explicit['process_id']} of {explicit['num_processes']} with coordinator "
             f"{explicit['coordinator_address']}" if explicit else f"the {how} cluster")
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.UserError(
        f"could not join {where} ({first_line}); start every process with the same "
        "--coordinator-address (process 0's host and a free port) and --num-processes, and "
        "check that the port is reachable") from e
