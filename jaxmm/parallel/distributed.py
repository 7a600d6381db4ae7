"""Joining JAX's multi-controller runtime: one process per host, all running the same program.

`initialize` is called once, before anything touches a device. Where it finds
the cluster's shape:

1. explicit values: `jaxmm train --coordinator_address HOST:PORT
   --num_processes N --process_id I`, or the environment variables
   JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID;
2. a cluster JAX detects by itself (`jax.distributed.initialize()` with no
   arguments): a SLURM job step of several tasks, a TPU pod slice on GKE
   (TPU_WORKER_HOSTNAMES lists several hosts) or any Cloud TPU VM (libtpu is
   installed; a single host then forms a cluster of one);
3. otherwise the run is a single process and nothing is initialised.

On the CPU, processes exchange collectives through gloo over TCP, so several
local processes with simulated devices form one cluster (the tests do this).
"""
import importlib.util
import os
import socket
import time

import jax

from jaxmm import errors

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
  missing = [f"--{key} (or {ENV[key]})" for key, value in given.items() if value is None]
  if missing:
    raise errors.UserError(f"a multi-process run needs --coordinator_address, --num_processes "
                           f"and --process_id together; missing {', '.join(missing)}")
  host, _, port = str(given["coordinator_address"]).rpartition(":")
  if not host or not port.isdigit():
    raise errors.UserError(f"--coordinator_address={given['coordinator_address']!r}: expected "
                           "HOST:PORT, the address of process 0, e.g. 10.0.0.2:1234")
  try:
    num_processes, process_id = int(given["num_processes"]), int(given["process_id"])
  except ValueError as e:
    raise errors.UserError(f"--num_processes and --process_id must be integers: {e}") from None
  errors.integer_at_least("--num_processes", num_processes, 1)
  errors.integer_at_least("--process_id", process_id, 0)
  if process_id >= num_processes:
    raise errors.UserError(f"--process_id={process_id} is not below --num_processes="
                           f"{num_processes}; number the processes 0 .. {num_processes - 1}")
  return {"coordinator_address": given["coordinator_address"], "num_processes": num_processes,
          "process_id": process_id}


def _check_coordinator(address: str, process_id: int, timeout_s: int) -> None:
  """Process 0: the port is free to serve on. Others: process 0 answers within `timeout_s`.

  JAX's own client aborts the whole process when it cannot connect, so this
  is checked first, to fail with a message instead.
  """
  host, _, port = address.rpartition(":")
  if process_id == 0:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
      try:
        s.bind(("", int(port)))
      except OSError as e:
        raise errors.UserError(f"--coordinator_address={address}: process 0 cannot serve on port "
                               f"{port} ({e.strerror}); choose a free port") from None
    return
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
      return
    except OSError:
      if time.monotonic() > deadline:
        raise errors.UserError(
            f"could not reach the coordinator {address} within {timeout_s} s as process "
            f"{process_id}; start process 0 with the same --coordinator_address (its own host "
            "and a free port) and check that the port is reachable from here") from None
      time.sleep(0.5)


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
               timeout_s: int = 300) -> str:
  """Joins the cluster (module docstring) and returns how: 'explicit', a cluster name, or 'single'.

  Fails with a `UserError` for values that do not add up, before any network
  traffic, and when the cluster does not form within `timeout_s` seconds.
  """
  explicit = _explicit(coordinator_address, num_processes, process_id)
  how = "explicit" if explicit else detect_cluster()
  if how is None:
    return "single"
  errors.integer_at_least("--distributed_timeout", timeout_s, 1)
  if explicit:
    _check_coordinator(explicit["coordinator_address"], explicit["process_id"], timeout_s)
  # Only the CPU client reads this; on accelerators it changes nothing.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**explicit, initialization_timeout=timeout_s)
  except Exception as e:  # pylint: disable=broad-except
    where = (f"process {explicit['process_id']} of {explicit['num_processes']} with coordinator "
             f"{explicit['coordinator_address']}" if explicit else f"the {how} cluster")
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.UserError(
        f"could not join {where} within {timeout_s} s ({first_line}); start every process "
        "with the same --coordinator_address (process 0's host and a free port) and "
        "--num_processes, and check that the port is reachable") from e
  return how
