"""Optimizer partition rules: frozen parameters keep their values and no state, learning-rate
multipliers and no-decay groups, clipping that ignores frozen gradients, and rule errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmm import train
from jaxmm.errors import UserError
from jaxmm.train import partition
from test_optim import optim_config


def params():
  return {
      "image_tower": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))},
      "text_tower": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))},
  }


def grads(scale=1.0):
  return jax.tree.map(lambda p: scale * jnp.linspace(0.5, 1.5, p.size).reshape(p.shape), params())


def steps(rules, num=3, grad_scale=1.0, **overrides):
  """(params after `num` updates with `rules`, optimizer state)."""
  tx, _ = train.make_optimizer(optim_config(partition=rules, **overrides), 10)
  p, state = params(), None
  state = tx.init(p)
  for _ in range(num):
    updates, state = tx.update(grads(grad_scale), state, p)
    p = optax.apply_updates(p, updates)
  return p, state


def nbytes(tree):
  return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


def test_frozen_parameters_stay_bit_identical_and_keep_no_state():
  frozen, state = steps((("image_tower/.*", "frozen"),))
  jax.tree.map(np.testing.assert_array_equal, frozen["image_tower"], params()["image_tower"])
  for leaf in jax.tree.leaves(frozen["text_tower"]):
    assert not np.any(np.asarray(leaf) == 1.0)
  _, full_state = steps(())
  # AdamW keeps two moments per parameter: freezing half the parameters halves them.
  moments = 2 * nbytes(params()["image_tower"])
  assert nbytes(state) == nbytes(full_state) - moments
  assert len(jax.tree.leaves(state)) == len(jax.tree.leaves(full_state)) - 4


def test_learning_rate_multiplier_scales_the_update():
  scaled, _ = steps((("text_tower/.*", 0.1),), num=1)
  plain, _ = steps((), num=1)
  moved = lambda p: jax.tree.map(lambda a, b: np.asarray(a - b), p, params())
  np.testing.assert_allclose(moved(scaled)["text_tower"]["kernel"],
                             0.1 * moved(plain)["text_tower"]["kernel"],
                             rtol=1e-5)
  np.testing.assert_array_equal(scaled["image_tower"]["kernel"], plain["image_tower"]["kernel"])


def test_no_decay_group_has_no_weight_decay():
  # Zero gradients: only weight decay moves a matrix.
  decayed, _ = steps((("text_tower/kernel", "no_decay"),), grad_scale=0.0, weight_decay=0.5)
  assert np.all(np.asarray(decayed["image_tower"]["kernel"]) < 1.0)
  np.testing.assert_array_equal(decayed["text_tower"]["kernel"], params()["text_tower"]["kernel"])


def test_clipping_ignores_frozen_gradients():
  rules = (("image_tower/.*", "frozen"),)
  small, _ = steps(rules, num=1, grad_clip_norm=100.0)
  # A frozen gradient large enough to dominate the global norm would shrink the others' update.
  tx, _ = train.make_optimizer(optim_config(partition=rules, grad_clip_norm=100.0), 10)
  g = grads()
  g["image_tower"] = jax.tree.map(lambda x: 1e6 * x, g["image_tower"])
  updates, _ = tx.update(g, tx.init(params()), params())
  np.testing.assert_array_equal(
      optax.apply_updates(params(), updates)["text_tower"]["kernel"], small["text_tower"]["kernel"])


@pytest.mark.parametrize("rules,message", [
    ((("vision/.*", "frozen"),), r"regex 'vision/\.\*' matches no parameter"),
    ((("image_tower/.*", "freeze"),), r"optim\.partition\[0\].*tactic must be"),
    ((("image_tower/.*", -1.0),), r"optim\.partition\[0\].*multiplier >= 0"),
    ((("image_tower/(", "frozen"),), r"optim\.partition\[0\].*not a regular expression"),
    (("image_tower",), r"optim\.partition\[0\].*must be a pair"),
])
def test_bad_rules_fail_with_one_line(rules, message):
  with pytest.raises(UserError, match=message) as error:
    steps(rules)
  assert "\n" not in str(error.value)


def test_param_path_names_keys_attributes_and_indices_but_not_a_box():
  tree = {
      "attn": {
          "value": {"kernel": nn.Partitioned(jnp.ones((2, 2)), ("embed", "mlp"))},
          "bias": jnp.ones(2)
      },
      "mu": (jnp.ones(1),)
  }
  paths = [partition.param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
  assert paths == ["attn/bias", "attn/value/kernel", "mu/0"]
  value = {"value": jnp.ones(1)}  # a parameter named 'value' keeps its name
  [(path, _)] = jax.tree_util.tree_flatten_with_path(value)[0]
  assert partition.param_path(path) == "value"
