"""SIGTERM and SIGINT (Ctrl-C) as a request to save and stop between steps.

A preempted VM or a scheduler sends SIGTERM; a user presses Ctrl-C. Either
way the loop finishes the step it is in, saves it, and raises
`jaxmm.errors.Interrupted`; the `jaxmm` command then exits with status
128 + the signal number, as a process killed by that signal would, so that
schedulers restart it. A second
Ctrl-C while that happens exits at once: the checkpoint being written is
abandoned, and orbax leaves the previous one intact. Before the loop installs
these handlers there is nothing to save, and the `jaxmm train` command exits
at once on either signal.

With several processes, a signal may reach one host only (a preempted VM).
`AgreedStop` makes every process stop at the same step, so that all save the
same checkpoint together and none is left waiting in a collective.
"""
import os
import signal
import sys

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
  """Context manager: while active, `requested` holds the first stop signal received (or None).

  Outside the main thread, where Python cannot install handlers, signals are
  left alone.
  """

  def __init__(self):
    self.requested = None
    self._previous = {}

  def __enter__(self):
    try:
      self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}
    except ValueError:  # not the main thread
      self._previous = {}
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested is not None and signum == signal.SIGINT:
      sys.stderr.write("\njaxmm: second interrupt: exiting now, without the checkpoint in "
                       "progress (the previous one is intact)\n")
      sys.stderr.flush()
      os._exit(128 + signum)
    if self.requested is None:
      self.requested = signum

  def __exit__(self, *exc):
    for s, previous in self._previous.items():
      signal.signal(s, previous)


class AgreedStop:
  """The stop signal that every process acts on at the same step.

  One process: the signal it received, at once. Several: every step, each
  process contributes its signal number (0 for none) to a max over all
  devices that runs asynchronously; the result is read one step later, so
  every process sees the same value at the same step without waiting for the
  step in flight.
  """

  def __init__(self, signals: StopSignals):
    self._signals = signals
    self._in_flight = None
    self._processes = jax.process_count()
    if self._processes > 1:
      mesh = jax.sharding.Mesh(np.array(jax.devices()), ("devices",))
      self._sharding = NamedSharding(mesh, P("devices"))
      self._max = jax.jit(lambda x: x.max(), out_shardings=NamedSharding(mesh, P()))

  def poll(self) -> int | None:
    """The agreed stop signal number, or None to go on. Call once per step on every process."""
    local = self._signals.requested
    if self._processes == 1:
      return local
    agreed = None if self._in_flight is None else int(self._in_flight.addressable_data(0))
    flags = np.full(jax.local_device_count(), local or 0, np.int32)
    self._in_flight = self._max(jax.make_array_from_process_local_data(self._sharding, flags))
    return agreed or None
