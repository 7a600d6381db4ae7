"""Post-hoc EMA's coefficients (EDM2 Algorithm 3) against a float64 NumPy reference that integrates
the power profiles numerically."""
import numpy as np

from jaxmm.train import posthoc_ema

# The exponents of σ_rel 0.05, 0.10 and 0.07 (checked below from the profiles' moments); snapshots
# of the first two after 100, 200 and 300 steps.
GAMMA_005, GAMMA_010, GAMMA_007 = 16.972198602303447, 6.937203937601809, 11.244939447857924
TIMES = np.array([100.0, 200.0, 300.0, 100.0, 200.0, 300.0])
GAMMAS = np.array([GAMMA_005] * 3 + [GAMMA_010] * 3)
# Midpoint rule on (0, 300] with every snapshot time on a cell boundary, so each profile is
# smooth inside every cell.
H = 0.01
TAU = (np.arange(round(300 / H)) + 0.5) * H


def _profile(t, gamma):
  """p_{t,γ}(τ) = (γ + 1) τ^γ / t^(γ+1) on (0, t], 0 after (EDM2 Sec. 3.2), at TAU."""
  return np.where(TAU <= t, (gamma + 1) * TAU**gamma / t**(gamma + 1), 0.0)


def _inner(p, q):
  return (p * q).sum(-1) * H


def _profile_std(sigma_rel_gamma):
  """The relative std of p_{1,γ}: sqrt(E[τ²] − E[τ]²), from the moments of (γ+1)τ^γ on (0, 1]."""
  g = sigma_rel_gamma
  return np.sqrt((g + 1) / (g + 3) - ((g + 1) / (g + 2))**2)


def test_gammas_above_have_the_sigma_rels_named():
  np.testing.assert_allclose([_profile_std(g) for g in (GAMMA_005, GAMMA_010, GAMMA_007)],
                             [0.05, 0.10, 0.07],
                             rtol=1e-12)


def test_inner_products_match_numerical_integration():
  profiles = np.stack([_profile(t, g) for t, g in zip(TIMES, GAMMAS)])
  reference = _inner(profiles[:, None], profiles[None, :])
  closed_form = posthoc_ema.profile_inner_products(TIMES, GAMMAS, TIMES, GAMMAS)
  # The midpoint rule's error is h²/24 · ∫|p·q''|, relative (γ h / τ)² / 24 where the mass of
  # p·q lies (τ ≳ 50 for γ ≤ 34): below 1e-6.
  np.testing.assert_allclose(closed_form, reference, rtol=1e-6)


def test_coefficients_solve_the_normal_equations_of_the_profiles():
  profiles = np.stack([_profile(t, g) for t, g in zip(TIMES, GAMMAS)])
  target = _profile(300.0, GAMMA_007)
  gram = _inner(profiles[:, None], profiles[None, :])
  reference = np.linalg.solve(gram, _inner(profiles, target))
  x = posthoc_ema.coefficients(TIMES, GAMMAS, 300.0, GAMMA_007)
  # Inner products within 1e-6 relative, times cond(gram) ≈ 81: the weights (≤ 0.6) within 1e-4.
  np.testing.assert_allclose(x, reference, atol=1e-4)
  # The reconstructed profile is the target's to 5 % in L2 (the fit's residual is 4 %).
  residual = x @ profiles - target
  assert np.sqrt(_inner(residual, residual)) < 0.05 * np.sqrt(_inner(target, target))


def test_a_target_that_is_a_snapshot_takes_it_alone():
  x = posthoc_ema.coefficients(TIMES, GAMMAS, 200.0, GAMMA_010)
  np.testing.assert_allclose(x, [0, 0, 0, 0, 1, 0], atol=1e-9)


def test_a_repeated_snapshot_shares_its_weight():
  x = posthoc_ema.coefficients([100.0, 100.0], [GAMMA_010, GAMMA_010], 100.0, GAMMA_010)
  np.testing.assert_allclose(x, [0.5, 0.5], atol=1e-9)
