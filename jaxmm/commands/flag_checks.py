"""Checks of command-line flags that several `jaxmm` commands share, made before anything runs.

- `finite_float`: the argparse type of every float flag; NaN and infinities
  are refused while parsing (a NaN guidance scale would sample black images).
- `check_output_dir`, `check_output_file`: an --out path must be writable
  before minutes of work go into what it will hold (`check_empty_output_dir`:
  and new or empty, so that nothing there is overwritten or taken for
  output). The folder, or the nearest folder above it that exists, is probed
  by creating and deleting a file there, which catches a missing write
  permission and a read-only mount alike.
  Bucket paths (`gs://`) are not probed.
"""
import argparse
import math
import os
import tempfile

from jaxmm.errors import UserError
from jaxmm import storage


def finite_float(text: str) -> float:
  """argparse type: `text` as a float, refusing NaN and infinities."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
  if not math.isfinite(value):
    raise argparse.ArgumentTypeError(f"{text} is not a finite number; give a finite one")
  return value


def _nearest_existing(path: str) -> str:
  """`path`, or the nearest folder above it that exists (what creating `path` would write in)."""
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return path


def _check_writable_folder(flag: str, value: str, folder: str) -> None:
  """Raises `UserError` naming `flag` `value` unless files can be written in local `folder`
  (created if missing)."""
  existing = _nearest_existing(storage.absolute(folder))
  if not os.path.isdir(existing):
    raise UserError(f"{flag} {value}: {existing} is a file, not a folder; give a path in a folder")
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise UserError(f"{flag} {value}: cannot write in {existing} ({e.strerror}); give a path "
                    "on a writable disk, in a folder you may write to") from e


def check_output_dir(flag: str, path: str) -> None:
  """Raises `UserError` unless folder `path` can be created (if missing) and written in."""
  if storage.is_local(path):
    _check_writable_folder(flag, path, path)


def check_empty_output_dir(flag: str, path: str, holds: str) -> None:
  """Raises `UserError` unless folder `path`, which will hold `holds` (e.g. 'the filtered
  dataset'), is new or empty and can be written in."""
  if storage.is_file(path):
    raise UserError(f"{flag} {path} is a file; give a new or empty folder for {holds}")
  held = storage.list_dir(path)
  if held:
    listed = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
    raise UserError(f"{flag} {path} is not empty (it holds {listed}); give a new or empty "
                    f"folder for {holds}")
  check_output_dir(flag, path)


def check_output_file(flag: str, path: str) -> None:
  """Raises `UserError` unless the file `path` can be written (its folder created if missing)."""
  if not storage.is_local(path):
    return
  if os.path.isdir(storage.absolute(path)):
    raise UserError(f"{flag} {path} is a folder; give a file name")
  _check_writable_folder(flag, path, os.path.dirname(storage.absolute(path)))
