"""SIGTERM and SIGINT (Ctrl-C) as a request to save and stop between steps.

A preempted VM or a scheduler sends SIGTERM; a user presses Ctrl-C. Either
way the loop finishes the step it is in, saves it, and raises
`jaxmm.errors.Interrupted`; the `jaxmm` command then exits with status
128 + the signal number, as a process killed by that signal would, so that
schedulers restart it. A second
Ctrl-C while that happens exits at once: the checkpoint being written is
abandoned, and orbax leaves the previous one intact.
"""
import os
import signal
import sys

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
