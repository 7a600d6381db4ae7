"""Whether a checkpoint can be resumed under the current config.

A resumed run may change its schedule, batch size or total steps (each
change is listed as a warning), but not its experiment or the shape of
anything in the train state: that fails before anything is restored or
written. A changed experiment says just that (the --workdir is another
experiment's run); a changed shape names the first parameter whose shape
differs, both shapes, and the config keys that changed.
"""
from collections.abc import Mapping
import dataclasses
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


_MISSING = object()  # the value of a key that one of the two configs lacks


@dataclasses.dataclass(frozen=True)
class Change:
  """A dotted config key whose value differs between a checkpoint's config and the current one;
  its text is 'key: old -> new'."""
  key: str
  old: Any
  new: Any

  def __str__(self) -> str:
    return f"{self.key}: {_value_text(self.old)} -> {_value_text(self.new)}"


def _value_text(value: Any) -> str:
  return "(none)" if value is _MISSING else repr(value)


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[Change]:
  """The dotted keys whose value differs (or that exist on one side only), sorted."""
  old, new = _flat(saved), _flat(current)
  changes = []
  for key in sorted(set(old) | set(new)):
    change = Change(key, old.get(key, _MISSING), new.get(key, _MISSING))
    if change.old != change.new:
      changes.append(change)
  return changes


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{'params/img/.../kernel': shape} over the leaves of a state or its checkpoint metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {partition.param_path(path): tuple(leaf.shape) for path, leaf in leaves}


def check_resumable(saved_state: Any, target_state: Any, changes: list[Change], step: int) -> None:
  """Raises `UserError` if `changes` (`config_changes`) change the experiment, or if the
  checkpoint's state (`saved_state`: orbax metadata) does not have the leaves and shapes of the
  state the current config builds (`target_state`)."""
  for change in changes:
    if change.key == "experiment":
      raise UserError(f"the --workdir holds an experiment={change.old!r} run (checkpoint "
                      f"{step}); this config is experiment={change.new!r}: choose another "
                      "--workdir, or resume that run with the config it was trained with (its "
                      "config.json)")
  saved, target = _shapes(saved_state), _shapes(target_state)
  shape_keys = [str(c) for c in changes if c.key.startswith(("model.", "data."))]
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


def warn_changes(changes: list[Change], step: int) -> None:
  if changes:
    log.warning("resuming checkpoint %d with a changed config: %s", step,
                "; ".join(map(str, changes)))
