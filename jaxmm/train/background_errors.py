"""What orbax and tensorstore print when a background checkpoint write fails, silenced.

When a save fails (a full disk, a lost permission), each of orbax's writer
threads logs the error with its traceback at ERROR: hundreds of lines on a
real checkpoint. Orbax also hands the error on, up to the thread that waits
for the save, where the loop reports it as one `checkpoints.SaveFailed` line
whose cause (`__cause__`) is that error. `quiet_failed_saves` drops exactly
those logs; anything else orbax logs (such as an old checkpoint it failed to
delete) still appears. (Tensorstore's "Event loop is closed" callbacks that
follow are dropped for every process by `checkpoints.make_manager`.)
"""
import logging
import os

# The orbax modules (under orbax/checkpoint/) that log an error with its traceback and then
# raise it, or store it for the thread that waits for the save.
_MODULES_HANDING_ON = tuple(
    os.path.join("orbax", "checkpoint", *module.split("/"))
    for module in ("_src/futures/future.py", "_src/checkpointers/async_checkpointer.py",
                   "_src/metadata/checkpoint.py", "checkpoint_manager.py"))


def _not_handed_on(record: logging.LogRecord) -> bool:
  """False (drop it) for an error with a traceback that orbax logs and also hands on."""
  return not (record.levelno >= logging.ERROR and record.exc_info and
              record.pathname.endswith(_MODULES_HANDING_ON))


def quiet_failed_saves() -> None:
  """From now on, for the rest of the process, orbax's logs of the errors it hands on (on the
  std logger 'absl', where absl logging writes) are not printed.

  Not only while the loop runs: on a busy machine a writer thread may log its
  failure after the loop has reported it and returned, below the one line.
  """
  absl_logger = logging.getLogger("absl")
  if _not_handed_on not in absl_logger.filters:
    absl_logger.addFilter(_not_handed_on)
