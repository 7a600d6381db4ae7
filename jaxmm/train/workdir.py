"""A run's directory: one live run at a time, and the config of every launch.

`WorkdirLock` holds an exclusive `flock` on `workdir/jaxmm.lock` for as long
as a run trains there; the file names the holder (host, pid, start time,
command). The kernel drops the lock when the holder exits, however it exits,
so a crashed or killed run never leaves the workdir locked. A bucket has no
locks: there the lock stands aside, and one run at a time is up to the user.

Every launch writes its resolved config twice: `config.json` (the latest
launch, what tools read) and `config_history/launch_NNN_from_step_S.json`,
which is never overwritten, so a run that was resumed with other settings
keeps the record of each.
"""
import datetime
import fcntl
import logging
import os
import socket
import sys

import ml_collections

from jaxmm import config_loading
from jaxmm.errors import UserError
from jaxmm import storage

log = logging.getLogger("jaxmm")

LOCK_FILE = "jaxmm.lock"
CONFIG_FILE = "config.json"
HISTORY_DIR = "config_history"


def make_workdir(workdir: str) -> str:
  """Creates `workdir` if needed and returns its absolute path (a bucket path as given); a file
  there is an error."""
  path = storage.absolute(workdir)
  if storage.is_file(path):
    raise UserError(f"--workdir {workdir} is a file, not a directory; choose another --workdir")
  try:
    storage.make_dirs(path)
  except OSError as e:
    raise UserError(f"cannot create --workdir {workdir}: {e.strerror}") from e
  return path


class WorkdirLock:
  """Context manager: an exclusive lock on the workdir, or a `UserError` naming its holder."""

  def __init__(self, workdir: str):
    self._path = os.path.join(workdir, LOCK_FILE)
    self._file = None

  def __enter__(self):
    if not storage.is_local(self._path):
      log.info("workdir %s is in a bucket, which has no locks: start one run at a time there",
               os.path.dirname(self._path))
      return self
    self._file = open(self._path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._file.seek(0)
      holder = self._file.read().strip() or "another process"
      self._file.close()
      raise UserError(f"workdir {os.path.dirname(self._path)} is in use by a live run "
                      f"({holder}); wait for it or stop it, or choose another --workdir") from None
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    self._file.truncate(0)
    self._file.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}: "
                     f"{' '.join(sys.argv)}")
    self._file.flush()
    return self

  def __exit__(self, *exc):
    if self._file is None:
      return
    self._file.truncate(0)
    self._file.close()  # closing releases the flock


def record_launch(workdir: str, config: ml_collections.ConfigDict, start_step: int) -> str:
  """Writes this launch's config to config.json and to a new file of config_history/.

  Returns the history file's path.
  """
  text = config_loading.config_to_json(config)
  history = os.path.join(workdir, HISTORY_DIR)
  launch = 1 + sum(name.startswith("launch_") for name in storage.list_dir(history))
  path = os.path.join(history, f"launch_{launch:03d}_from_step_{start_step}.json")
  storage.write_text(path, text)
  storage.write_text(os.path.join(workdir, CONFIG_FILE), text)
  return path
