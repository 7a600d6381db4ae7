"""Whether a checkpoint can be resumed under the current config.

A resumed run may change its schedule, batch size or total steps (each
change is listed as a warning), but not the shape of anything in the train
state: that fails before anything is restored or written, naming the first
parameter whose shape differs, both shapes, and the config keys that changed.
"""
from collections.abc import Mapping
import logging
from typing import Any

import jax

from jaxmm.errors import UserError
from jaxmm.train import partition

log = logging.getLogger("jaxmm")


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """'key: old -> new' for each dotted key whose value differs (or exists on one side only)."""
  old, new = _flat(saved), _flat(current)
  missing = object()
  changes = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, missing), new.get(key, missing)
    if a != b:
      changes.append(f"{key}: {'(none)' if a is missing else repr(a)} -> "
                     f"{'(none)' if b is missing else repr(b)}")
  return changes


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{'params/img/.../kernel': shape} over the leaves of a state or its checkpoint metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {partition.param_path(path): tuple(leaf.shape) for path, leaf in leaves}


def check_resumable(saved_state: Any, target_state: Any, changes: list[str], step: int) -> None:
  """Raises `UserError` if the checkpoint's state (`saved_state`: orbax metadata) does not have
  the leaves and shapes of the state the current config builds (`target_state`)."""
  saved, target = _shapes(saved_state), _shapes(target_state)
  shape_keys = [c for c in changes if c.startswith(("model.", "data."))]
  because = ("; changed config keys: " + ", ".join(shape_keys) if shape_keys else
             "; no model or data key changed, so the model code must differ from the one "
             "that wrote it")
  for path, shape in target.items():
    if path not in saved:
      raise UserError(f"cannot resume checkpoint {step}: it has no {path} (current shape "
                      f"{shape}){because}. Use the config it was trained with, or a new --workdir")
    if saved[path] != shape:
      raise UserError(f"cannot resume checkpoint {step}: {path} has shape {saved[path]} there but "
                      f"{shape} under the current config{because}. Use the config it was trained "
                      "with, or a new --workdir")
  extra = sorted(set(saved) - set(target))
  if extra:
    raise UserError(f"cannot resume checkpoint {step}: it has {extra[0]}, which the current "
                    f"config does not build{because}. Use the config it was trained with, or a "
                    "new --workdir")


def warn_changes(changes: list[str], step: int) -> None:
  if changes:
    log.warning("resuming checkpoint %d with a changed config: %s", step, "; ".join(changes))
