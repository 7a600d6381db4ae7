"""The two ways a jaxmm command ends early on purpose: a user mistake, or a stop signal.

Code anywhere in jaxmm raises `UserError` for a mistake the user fixes (a bad
config value, a missing dataset, a busy workdir) with a message that says
what to change: the config key (or flag) and a valid value or range. The
`jaxmm` command prints it as the one line `jaxmm <command>: error: <message>`
and exits with status 2, without a traceback (`--traceback` or
`JAXMM_TRACEBACK=1` shows it). Anything else that goes wrong is a bug or a
fault and keeps its traceback. `Interrupted` is how the train loop reports
that SIGTERM or Ctrl-C stopped it after saving (`jaxmm.train.stop_signals`).

The helpers below are the checks that configs need again and again; each
raises a `UserError` naming `key`.
"""
from collections.abc import Iterable
import difflib
import signal
from typing import Any


class UserError(ValueError):
  """A mistake in the user's input; the message says what to change."""


class Interrupted(Exception):
  """The run stopped early on signal `signum`, after saving checkpoint `step`."""

  def __init__(self, signum: int, step: int):
    self.signum, self.step = signum, step
    super().__init__(f"stopped by {signal.Signals(signum).name} after saving checkpoint {step}; "
                     "run the same command to resume")


def one_of(key: str, value: Any, valid: Iterable[Any]) -> Any:
  """`value` if it is in `valid`, else an error listing the valid values (nearest first)."""
  valid = list(valid)
  if value in valid:
    return value
  names = [str(v) for v in valid]
  nearest = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
  hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
  raise UserError(f"{key}={value!r} is not one of {', '.join(repr(v) for v in valid)}{hint}")


def positive(key: str, value: Any) -> Any:
  """`value` if it is a number > 0, else an error."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise UserError(f"{key}={value!r} must be a number > 0")
  return value


def non_negative(key: str, value: Any) -> Any:
  """`value` if it is a number >= 0, else an error."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
    raise UserError(f"{key}={value!r} must be a number >= 0")
  return value


def integer_at_least(key: str, value: Any, minimum: int) -> int:
  """`value` if it is an integer >= `minimum`, else an error."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise UserError(f"{key}={value!r} must be an integer >= {minimum}")
  return value
