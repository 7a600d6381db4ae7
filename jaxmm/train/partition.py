"""Per-parameter optimizer rules from `config.optim.partition` (LiT, Zhai et al. 2022).

A rule is a pair (regex, tactic). The regex is matched in full against a
parameter's path, its dict keys joined by '/' ('image_tower/encoder/block_0/
attn/query/kernel'); the first rule that matches decides, and a parameter no
rule matches is trained as usual. Tactics:
  'frozen'    no update and no optimizer state (LiT's locked image tower);
  'no_decay'  trained without weight decay;
  a number    the learning rate times that multiplier.
"""
from collections.abc import Sequence
import re
from typing import Any

from flax.core import meta
import jax
import optax

from jaxmm.errors import UserError

FROZEN, NO_DECAY, DEFAULT = "frozen", "no_decay", "default"


def param_path(path) -> str:
  """A key path of a params or train-state tree -> 'a/b/c': dict keys, attribute names and
  sequence indices, without the trailing 'value' attribute of a flax Partitioned box."""
  if path and getattr(path[-1], "name", None) == "value":
    path = path[:-1]
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _is_param(node) -> bool:
  # A parameter boxed with its logical axis names is one leaf: the label tree must have the
  # same structure whether the state is built boxed (for its shardings) or plain.
  return isinstance(node, meta.AxisMetadata)


def check_rules(rules: Sequence[Any]) -> list[tuple[re.Pattern, Any]]:
  """(compiled regex, tactic) of each rule; `UserError` naming the bad one otherwise."""
  checked = []
  for i, rule in enumerate(rules):
    where = f"optim.partition[{i}]={tuple(rule) if isinstance(rule, Sequence) else rule!r}"
    if isinstance(rule, str) or not isinstance(rule, Sequence) or len(rule) != 2:
      raise UserError(f"{where} must be a pair (regex, tactic)")
    pattern, tactic = rule
    is_number = isinstance(tactic, (int, float)) and not isinstance(tactic, bool)
    if not (tactic in (FROZEN, NO_DECAY) or (is_number and tactic >= 0)):
      raise UserError(f"{where}: the tactic must be '{FROZEN}', '{NO_DECAY}' or a learning-rate "
                      "multiplier >= 0")
    try:
      checked.append((re.compile(pattern), tactic))
    except (re.error, TypeError) as e:
      raise UserError(f"{where}: {pattern!r} is not a regular expression ({e})") from None
  return checked


def _label(tactic: Any) -> str:
  """The multi_transform label of a tactic: 'frozen', 'no_decay', or 'lr*<multiplier>'."""
  return tactic if isinstance(tactic, str) else f"lr*{float(tactic)}"


def labels_fn(rules: Sequence[Any]):
  """params -> a tree of labels like params; `UserError` if a rule matches no parameter."""
  checked = check_rules(rules)

  def labels(params):
    paths = [
        param_path(p)
        for p, _ in jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_param)[0]
    ]
    for pattern, _ in checked:
      if not any(pattern.fullmatch(path) for path in paths):
        raise UserError(f"optim.partition regex {pattern.pattern!r} matches no parameter; "
                        f"parameters are named like {paths[0]!r}")

    def first_match(path, _):
      path = param_path(path)
      return next((_label(t) for p, t in checked if p.fullmatch(path)), DEFAULT)

    return jax.tree_util.tree_map_with_path(first_match, params, is_leaf=_is_param)

  return labels


def partitioned(rules: Sequence[Any], make_tx) -> optax.GradientTransformation:
  """One transformation per tactic of `rules` over the parameters they match.

  `make_tx(lr_multiplier, weight_decay)` builds the optimizer of a group;
  frozen parameters get `optax.set_to_zero()`, which keeps no state.
  """
  transforms = {DEFAULT: make_tx(1.0, True)}
  for _, tactic in check_rules(rules):
    if tactic == FROZEN:
      transforms[FROZEN] = optax.set_to_zero()
    elif tactic == NO_DECAY:
      transforms[NO_DECAY] = make_tx(1.0, False)
    else:
      transforms[_label(tactic)] = make_tx(float(tactic), True)
  return optax.multi_transform(transforms, labels_fn(rules))


def frozen_mask(rules: Sequence[Any]):
  """params -> bool tree, True where a parameter is frozen."""
  labels = labels_fn(rules)
  return lambda params: jax.tree.map(lambda lab: lab == FROZEN, labels(params))
