"""Sweeps in config files: lists of points built from axes of values.

A config file may define `get_sweep(arg)` beside `get_config(arg)`. It returns
a list of points, each a dict of dotted config keys -> values, which
`jaxmm sweep` runs one run each (`jaxmm.sweeps.plan`, `jaxmm.sweeps.launch`):

  from jaxmm import sweeps

  def get_sweep(arg="small"):
    # 4 points: (1e-3, 0), (1e-3, 1), (3e-4, 0), (3e-4, 1)
    return sweeps.product({"optim.lr": [1e-3, 3e-4]}, {"seed": [0, 1]})

`product` combines its axes in every way (the first varies slowest), `zipped`
advances them together. An axis is a key with a list (or range) of values,
given in a dict part, `{"optim.lr": [1e-3, 3e-4], ...}`, or as a keyword
(`seed=[0, 1]`) when the key has no dot; a part may also be a list of points,
such as another `product` or `zipped` returned, so the two nest:

  sweeps.product(sweeps.zipped({"optim.lr": [1e-3, 3e-4], "optim.warmup_steps": [100, 300]}),
                 seed=[0, 1])                    # 4 points, lr and warmup paired

A sweep is a plain list, so `+` puts two sweeps one after the other.
"""
from collections.abc import Mapping, Sequence
import itertools
from typing import Any

from jaxmm.errors import UserError

Point = dict[str, Any]


def product(*parts: Mapping[str, Sequence] | Sequence[Point], **axes: Sequence) -> list[Point]:
  """Every combination of one value (or point) per axis, the first axis varying slowest.

  `product({"optim.lr": [1e-3, 3e-4]}, seed=[0, 1])` gives
  `[{"optim.lr": 1e-3, "seed": 0}, {"optim.lr": 1e-3, "seed": 1}, {"optim.lr": 3e-4, ...}, ...]`.
  """
  return [
      _merge("product", combination)
      for combination in itertools.product(*[points for _, points in _axes("product", parts, axes)])
  ]


def zipped(*parts: Mapping[str, Sequence] | Sequence[Point], **axes: Sequence) -> list[Point]:
  """Points whose values advance together: point i takes the i-th value (or point) of every axis.

  `zipped({"optim.lr": [1e-3, 3e-4], "optim.warmup_steps": [100, 300]})` gives
  `[{"optim.lr": 1e-3, "optim.warmup_steps": 100}, {"optim.lr": 3e-4, "optim.warmup_steps": 300}]`.
  Every axis must have the same length.
  """
  named_axes = _axes("zipped", parts, axes)
  lengths = {len(points) for _, points in named_axes}
  if len(lengths) > 1:
    sizes = ", ".join(f"{name} has {len(points)}" for name, points in named_axes)
    raise UserError(f"zipped(): {sizes}; zipped axes advance together, so give each the same "
                    "number of values (or use product() to combine them in every way)")
  return [_merge("zipped", combination) for combination in zip(*[p for _, p in named_axes])]


def _axes(function: str, parts, axes) -> list[tuple[str, list[Point]]]:
  """(name, points) of each axis: one per key of a dict part or keyword, one per list part."""
  named_axes = []
  for number, part in enumerate(parts + ((axes,) if axes else ()), start=1):
    if isinstance(part, Mapping):
      for key, values in part.items():
        named_axes.append((repr(key), [{key: value} for value in _values(function, key, values)]))
    else:
      named_axes.append((f"part {number}", _points(function, number, part)))
  return named_axes


def _values(function: str, key, values) -> list:
  if not isinstance(key, str):
    raise UserError(f"{function}(): keys are dotted config keys such as 'optim.lr', got {key!r}")
  if not isinstance(values, (list, range)):
    # A tuple is refused too: it may be one value of a tuple-valued key.
    raise UserError(f"{function}(): {key!r} needs a list of values, got {values!r} "
                    f"(a single value v is [v])")
  if not values:
    raise UserError(f"{function}(): {key!r} has no values")
  return list(values)


def _points(function: str, number: int, part) -> list[Point]:
  """A part that is a list of points (dicts of config keys), as product() or zipped() return."""
  if not isinstance(part, list) or not all(isinstance(point, Mapping) for point in part):
    raise UserError(f"{function}(): part {number} is {part!r}; give a dict of key -> list of "
                    "values, or a list of points (dicts) such as product() or zipped() return")
  for point in part:
    for key in point:
      if not isinstance(key, str):
        raise UserError(f"{function}(): part {number} has key {key!r}; keys are dotted config "
                        "keys such as 'optim.lr'")
  return [dict(point) for point in part]


def _merge(function: str, points: Sequence[Point]) -> Point:
  """One point holding the keys of all `points`; a key set by two of them is an error."""
  merged = {}
  for point in points:
    for key, value in point.items():
      if key in merged:
        raise UserError(f"{function}(): {key!r} is set by two axes; give each key once")
      merged[key] = value
  return merged
