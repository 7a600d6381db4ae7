"""Experiment configs: load `configs/NAME.py[:ARG]`, apply command-line overrides, JSON.

A config file defines `get_config(arg)` returning an `ml_collections.ConfigDict`.
Overrides are `KEY=VALUE` strings with dotted keys (`optim.lr=1e-3`); each
value is parsed by the type of the field it replaces, and an unknown key is an
error naming the nearest existing key, so a typo fails before anything runs.
Every float in the resolved config must be finite: a nan or inf passes every
range check and only shows once training diverges, so it fails at load time.
`split_overrides` picks the `--config.KEY=VALUE` arguments out of a command
line, for `jaxmm` and for scripts that take configs the same way.
"""
import ast
import difflib
import importlib.util
import json
import math
import os
import traceback
from typing import Sequence

import ml_collections

from jaxmm.errors import UserError

OVERRIDE_PREFIX = "--config."
# Top-level keys that were renamed: old -> (new, what changed), for the error an override of
# an old key gets.
RENAMED_KEYS = {
    "eval": ("evals", "evaluators are now config.evals.NAME = dict(type=TYPE, ...settings)")
}


class ConfigError(UserError):
  """A config spec, override key or override value that cannot be used."""


def split_spec(spec: str) -> tuple[str, str | None]:
  """'configs/x.py:base' -> ('configs/x.py', 'base'); 'configs/x.py' -> ('configs/x.py', None)."""
  path, sep, arg = spec.rpartition(":")
  if not sep or not path.endswith(".py"):
    return spec, None
  return path, arg


def import_config_file(path: str):
  """The config file at `path` as a fresh module; a `ConfigError` naming the file and line
  if it is missing or fails to import."""
  if not os.path.isfile(path):
    raise ConfigError(f"config file not found: {path!r}")
  return _import_file(path)


def call_in_file(path: str, function, arg: str | None):
  """`function(arg)` (no argument when `arg` is None) of a config file's module; an error it
  raises becomes a `ConfigError` naming the file and the line in it."""
  try:
    return function() if arg is None else function(arg)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(_where(path, e)) from e


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Returns `get_config(ARG)` of the file named by `spec`, 'path.py' or 'path.py:ARG'.

  A config file that fails to import, or whose get_config() raises, is a
  `ConfigError` naming the file and the line in it where that happened.
  Shared config helpers are imported from the installed package
  (`jaxmm.configs`), so a config file works from any folder.
  """
  path, arg = split_spec(spec)
  module = import_config_file(path)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} defines no get_config()")
  try:
    config = module.get_config() if arg is None else module.get_config(arg)
  except ValueError as e:  # e.g. an unknown variant ARG
    raise ConfigError(f"{spec}: {e}") from e
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(_where(path, e)) from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() of {path!r} returned {type(config).__name__}, "
                      "not an ml_collections.ConfigDict")
  return config


def _where(path: str, error: BaseException) -> str:
  """'config file P, line N: Error: message', N the last line of `path` in the traceback."""
  absolute = os.path.abspath(path)
  if isinstance(error, SyntaxError) and error.filename == absolute:
    line = error.lineno
  else:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == absolute]
    line = frames[-1].lineno if frames else "?"
  message = error.msg if isinstance(error, SyntaxError) else str(error)
  return f"config file {path}, line {line}: {type(error).__name__}: {message}"


def _import_file(path):
  """Imports the Python file at `path` as a fresh module."""
  name = "_jaxmm_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(_where(path, e)) from e
  return module


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Dotted keys of all leaves of `config`, e.g. ['mesh.data', 'optim.lr', ...]."""
  keys = []
  for key in config.keys():
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
      keys.extend(flat_keys(value, prefix + key + "."))
    else:
      keys.append(prefix + key)
  return keys


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: list[str]) -> ml_collections.ConfigDict:
  """Sets each 'dotted.key=value' of `overrides` on `config` in place and returns it.

  All overrides are parsed and checked, and then every float of the config
  as it would result (`_check_finite`), before any is applied, so a bad one
  leaves `config` unchanged.
  """
  keys = flat_keys(config)
  parsed = []
  for override in overrides:
    key, sep, text = override.partition("=")
    if not sep:
      raise ConfigError(f"override {override!r} is not of the form KEY=VALUE")
    if key not in keys:
      raise ConfigError(_unknown_key_message(key, keys))
    parent, name = _parent(config, key)
    parsed.append((key, parent, name, _parse_value(key, text, parent.get_type(name))))
  _check_finite(config, keys, {key: value for key, _, _, value in parsed})
  for _, parent, name, value in parsed:
    parent[name] = value
  return config


def _check_finite(config: ml_collections.ConfigDict, keys: list[str],
                  replaced: dict[str, object]) -> None:
  """Raises `ConfigError` naming the first of `keys` whose value, or a float inside it (a tuple's
  item), is nan or inf; a key of `replaced` is checked with its new value."""
  for key in keys:
    if key in replaced:
      value = replaced[key]
    else:
      parent, name = _parent(config, key)
      value = parent[name]
    if not _all_finite(value):
      raise ConfigError(f"{key}={value!r}: nan and inf are not allowed; set "
                        f"{OVERRIDE_PREFIX}{key} to a finite value")


def _all_finite(value) -> bool:
  """Whether every float in `value` (a leaf, or a tuple, list or dict of them) is finite."""
  if isinstance(value, float):
    return math.isfinite(value)
  if isinstance(value, (dict, ml_collections.ConfigDict)):
    return all(map(_all_finite, value.values()))
  if isinstance(value, (tuple, list)):
    return all(map(_all_finite, value))
  return True


def _unknown_key_message(key, keys):
  message = f"unknown config key {key!r}"
  head, dot, rest = key.partition(".")
  if head in RENAMED_KEYS:
    new_head, change = RENAMED_KEYS[head]
    message += f"; {change}"
    key = new_head + dot + rest
  nearest = difflib.get_close_matches(key, keys, n=1, cutoff=0.0)
  return message + (f"; did you mean {nearest[0]!r}?" if nearest else "")


def _parent(config, key):
  *path, name = key.split(".")
  for part in path:
    config = config[part]
  return config, name


def _parse_value(key, text, field_type):
  """Parses `text` as a value of `field_type`; 'None' is accepted for any field."""
  if text == "None":
    return None
  try:
    if field_type is bool:
      return _parse_bool(text)
    if field_type is str:
      return text
    if field_type is int:
      return _parse_int(text)
    if field_type is float:
      return float(text)
    if field_type in (tuple, list):
      value = ast.literal_eval(text)
      # A bare scalar is read as a one-element sequence: 'mesh_shape=4' -> (4,).
      return field_type(value if isinstance(value, (tuple, list)) else (value,))
  except (ValueError, SyntaxError) as e:
    raise ConfigError(f"bad value {text!r} for config key {key!r}: expected "
                      f"{field_type.__name__}") from e
  # A field that is None (or of another type) takes a Python literal, and
  # otherwise the text itself: 'data.data_dir=/tmp/x' gives the string.
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
  if field_type is not type(None) and not isinstance(value, field_type):
    raise ConfigError(f"bad value {text!r} for config key {key!r}: expected "
                      f"{field_type.__name__}")
  return value


def _parse_int(text):
  try:
    return int(text)
  except ValueError:
    # 'total_steps=1e5' is a common way to write an int.
    value = float(text)
    if not value.is_integer():
      raise
    return int(value)


def _parse_bool(text):
  lowered = text.lower()
  if lowered in ("true", "1", "yes"):
    return True
  if lowered in ("false", "0", "no"):
    return False
  raise ValueError(text)


def config_to_json(config: ml_collections.ConfigDict) -> str:
  """The config as indented JSON (tuples become lists), as in `workdir/config.json`."""
  return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def config_from_json(text: str) -> ml_collections.ConfigDict:
  """Inverse of `config_to_json`; JSON lists become tuples, as configs write them."""
  return ml_collections.ConfigDict(json.loads(text, object_hook=_lists_to_tuples))


def _lists_to_tuples(obj):
  return {k: _as_tuple(v) for k, v in obj.items()}


def _as_tuple(value):
  return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.KEY=VALUE` / `--config.KEY VALUE` from the other arguments.

  Returns (other arguments, ['KEY=VALUE', ...]).
  """
  rest, overrides = [], []
  args = iter(argv)
  for arg in args:
    if not arg.startswith(OVERRIDE_PREFIX):
      rest.append(arg)
      continue
    key, sep, value = arg[len(OVERRIDE_PREFIX):].partition("=")
    if not sep:
      value = next(args, None)
      if value is None or value.startswith("--"):
        raise ConfigError(f"{arg} needs a value")
    overrides.append(f"{key}={value}")
  return rest, overrides
