"""Exponential moving averages (EMA) of the parameters, each named by its profile.

`config.ema` asks for any number of averages, of two kinds, tracked at once:

- `decays=(0.9999, ...)`: the classic EMA θ̄ ← β·θ̄ + (1 − β)·θ with a
  constant β, named 'decay_0.9999'.
- `sigma_rels=(0.05, 0.10, ...)`: the power-function EMA of EDM2 (Karras et
  al. 2024, "Analyzing and improving the training dynamics of diffusion
  models", Sec. 3.1): after update t = 1, 2, ..., β_t = (1 − 1/t)^(γ+1)
  (eq. 2), so that θ̄_t averages θ_1 ... θ_t with weights ∝ τ^γ and its
  length scales with the run. γ is set by the profile's relative standard
  deviation σ_rel (its width as a fraction of the training time), eq. 3:
      σ_rel² = (γ + 1) / ((γ + 2)² (γ + 3)),
  a cubic in γ: γ³ + 7γ² + (16 − σ_rel⁻²)γ + (12 − σ_rel⁻²) = 0, whose
  largest real root is γ. Named 'sigma_rel_0.05'.

Every checkpoint stores every average. With `snapshot_every=N` (steps; 0 =
off) the power profiles are also written every N steps and at the last one as
EMA-only snapshots that are never rotated out (`jaxmm.runs.ema_snapshots`),
from which `Run.posthoc_ema` reconstructs the power EMA of any other σ_rel
(EDM2 Sec. 3.2, `jaxmm.train.posthoc_ema`).
"""
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm import errors


def power_gamma(sigma_rel: float) -> float:
  """The exponent γ of the power-function EMA with relative std `sigma_rel` (EDM2 eq. 3)."""
  s = sigma_rel**-2
  return float(np.roots([1.0, 7.0, 16.0 - s, 12.0 - s]).real.max())


def check_sigma_rel(sigma_rel: float, where: str) -> None:
  """Raises `UserError` unless `sigma_rel` lies in (0, 0.28); `where` names the setting
  ('ema.sigma_rels', '--sigma-rel')."""
  # σ_rel = 1/√12 ≈ 0.289 at γ = 0, a uniform average over the whole run.
  if (isinstance(sigma_rel, bool) or not isinstance(sigma_rel, (int, float)) or
      not 0 < sigma_rel < 0.28):
    raise errors.UserError(f"{where}={sigma_rel!r} is out of range: a σ_rel must lie in "
                           "(0, 0.28), e.g. 0.05 or 0.10")


def check_config(ema_config: ml_collections.ConfigDict) -> None:
  """Raises `UserError` unless every decay lies in [0, 1), every σ_rel in (0, 0.28), and
  snapshot_every is a whole number of steps (0: off) with σ_rels to snapshot."""
  for decay in ema_config.decays:
    if not 0 <= decay < 1:
      raise errors.UserError(f"ema.decays holds {decay!r}; each decay must lie in [0, 1), "
                             "e.g. 0.9999")
  for sigma_rel in ema_config.sigma_rels:
    check_sigma_rel(sigma_rel, "ema.sigma_rels")
  if errors.integer_at_least("ema.snapshot_every", snapshot_every(ema_config), 0) and not len(
      ema_config.sigma_rels):
    raise errors.UserError("ema.snapshot_every snapshots the power EMAs, but ema.sigma_rels is "
                           "empty; set ema.sigma_rels, e.g. (0.05, 0.10), or snapshot_every=0")


def snapshot_every(ema_config: ml_collections.ConfigDict) -> int:
  """Steps between EMA snapshots, 0 for none (also for a config saved before the key existed)."""
  return ema_config.get("snapshot_every", 0)


def _profiles(ema_config: ml_collections.ConfigDict) -> dict[str, tuple[str, float]]:
  """name -> (kind, constant): ('decay', β) or ('power', γ)."""
  profiles = {f"decay_{d:g}": ("decay", float(d)) for d in ema_config.decays}
  profiles.update({
      name: ("power", power_gamma(s)) for name, s in power_sigma_rels(ema_config).items()
  })
  return profiles


def power_sigma_rels(ema_config: ml_collections.ConfigDict) -> dict[str, float]:
  """The power EMAs' names and σ_rels, {'sigma_rel_0.05': 0.05, ...}, in config order."""
  return {f"sigma_rel_{s:g}": float(s) for s in ema_config.sigma_rels}


def names(ema_config: ml_collections.ConfigDict) -> list[str]:
  """The averages' names, in config order: 'decay_0.9999', ..., 'sigma_rel_0.05', ..."""
  return list(_profiles(ema_config))


def init(params: Any, ema_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{name: a copy of `params`} for every average the config asks for."""
  return {name: jax.tree.map(jnp.copy, params) for name in _profiles(ema_config)}


def update(ema: Mapping[str, Any], params: Any, step: jax.Array,
           ema_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The averages after update number t = step + 1 with the new `params`."""
  t = (step + 1).astype(jnp.float32)
  out = {}
  for name, (kind, constant) in _profiles(ema_config).items():
    beta = constant if kind == "decay" else (1.0 - 1.0 / t)**(constant + 1.0)
    # β·θ̄ + (1 − β)·θ written as θ̄ + (1 − β)·(θ − θ̄): a parameter that does not move (a
    # frozen tower) keeps an average equal to it bit for bit, whatever the compiler fuses.
    out[name] = jax.tree.map(lambda avg, p, b=beta: avg + (1.0 - b) * (p - avg), ema[name],
                             params)
  return out
