"""A peer's architecture, named (one of its module's ARCHS) or read from a .json file, and
checked for options jaxmm's towers cannot hold."""
import copy
import json
import os
from collections.abc import Collection, Mapping

from jaxmm import errors
from jaxmm.errors import UserError


def named_or_json(arch: str, archs: Mapping[str, dict], peer: str, json_what: str):
  """A copy of `archs[arch]`, or the JSON value of the file whose path `arch` is; `UserError`s
  name `peer` ('open_clip') and say what the .json holds (`json_what`, e.g. "an open_clip model
  config .json") for an unknown name, a missing file and a file that is not JSON."""
  if arch in archs:
    return copy.deepcopy(archs[arch])
  if not arch.endswith(".json"):
    try:
      errors.one_of(f"{peer} architecture", arch, archs)
    except UserError as e:
      raise UserError(f"{e}; or give the path of {json_what}") from None
  if not os.path.isfile(arch):
    raise UserError(f"{peer} architecture {arch!r} is not a file; give the path of {json_what}, "
                    f"or one of {', '.join(archs)}")
  try:
    with open(arch, encoding="utf-8") as f:
      return json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"{peer} architecture {arch!r} is not JSON ({e})") from None


def check_options(options: Mapping, read: Collection[str], defaults_only: Mapping[str, tuple],
                  where: str, imports: str) -> None:
  """Raises `UserError` for a key of a peer's `options` that jaxmm's towers cannot hold: one
  neither `read` nor in `defaults_only` (key -> the values jaxmm holds, the peer's default
  first), or one of those at another value. `where` prefixes each key in the message (e.g.
  "x.json: open_clip option vision_cfg."); `imports` says what jaxmm imports."""
  for key, value in options.items():
    if key in read:
      continue
    if key not in defaults_only:
      raise UserError(f"{where}{key} is not one jaxmm's towers know; jaxmm imports {imports}")
    if value not in defaults_only[key]:
      raise UserError(f"{where}{key}={value!r} has no counterpart in jaxmm's towers (they hold "
                      f"{defaults_only[key][0]!r} only)")
