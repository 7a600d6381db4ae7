"""Parameter averages: the classic EMA and EDM2's power-function EMA."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmm import errors
from jaxmm.train import ema


def _config(decays=(), sigma_rels=()):
  return ml_collections.ConfigDict(dict(decays=decays, sigma_rels=sigma_rels))


def _relative_std(gamma):
  """Std of the density ∝ τ^γ on [0, 1] (the profile's width relative to its length), by
  numerical integration."""
  tau = np.linspace(0.0, 1.0, 200_001)
  weights = tau**gamma
  weights /= np.trapezoid(weights, tau)
  mean = np.trapezoid(tau * weights, tau)
  return np.sqrt(np.trapezoid((tau - mean)**2 * weights, tau))


@pytest.mark.parametrize("sigma_rel", [0.05, 0.1, 0.2])
def test_power_gamma_gives_the_profile_width(sigma_rel):
  assert _relative_std(ema.power_gamma(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-4)


def _run(config, values):
  """The averages after updates with params = values[0], values[1], ... (scalars)."""
  averages = ema.init(jnp.zeros([]), config)
  for t, value in enumerate(values):
    averages = ema.update(averages, jnp.float32(value), jnp.int32(t), config)
  return {name: float(v) for name, v in averages.items()}


def test_constant_decay_matches_the_recurrence():
  values = np.random.default_rng(0).normal(size=50)
  expected = 0.0
  for v in values:
    expected = 0.9 * expected + 0.1 * v
  assert _run(_config(decays=(0.9,)), values)["decay_0.9"] == pytest.approx(expected, rel=1e-5)


def test_power_ema_weights_follow_t_to_the_gamma():
  # β_t = (1 − 1/t)^(γ+1) makes the weight of update t after T updates
  # (t/T)^(γ+1) − ((t−1)/T)^(γ+1): a discretised density ∝ τ^γ, summing to 1.
  values = np.random.default_rng(1).normal(size=200)
  gamma = ema.power_gamma(0.1)
  t = np.arange(1, len(values) + 1, dtype=np.float64)
  weights = (t / len(values))**(gamma + 1) - ((t - 1) / len(values))**(gamma + 1)
  got = _run(_config(sigma_rels=(0.1,)), values)["sigma_rel_0.1"]
  assert got == pytest.approx(float(weights @ values), rel=1e-4, abs=1e-5)


def test_names_and_several_profiles_at_once():
  config = _config(decays=(0.999,), sigma_rels=(0.05, 0.1))
  assert ema.names(config) == ["decay_0.999", "sigma_rel_0.05", "sigma_rel_0.1"]
  averages = _run(config, [1.0] * 5)
  assert set(averages) == set(ema.names(config))
  # A constant stream: the power EMA is exact from the first update, the classic one is not.
  assert averages["sigma_rel_0.05"] == pytest.approx(1.0)
  assert averages["decay_0.999"] == pytest.approx(1 - 0.999**5, rel=1e-4)


@pytest.mark.parametrize("config,key", [(_config(decays=(1.0,)), "ema.decays"),
                                        (_config(sigma_rels=(0.3,)), "ema.sigma_rels"),
                                        (_config(sigma_rels=(0.0,)), "ema.sigma_rels")])
def test_bad_profiles_are_refused(config, key):
  with pytest.raises(errors.UserError, match=key):
    ema.check_config(config)
