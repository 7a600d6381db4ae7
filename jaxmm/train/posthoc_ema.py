"""Post-hoc EMA: the power EMA of any σ_rel as a combination of snapshots of other ones.

EDM2 (Karras et al. 2024, "Analyzing and improving the training dynamics of
diffusion models", Sec. 3.2 and Algorithm 3). The power EMA with exponent γ
(`jaxmm.train.ema.power_gamma`), read at time t, is an average of the
training trajectory θ(τ) with the weights of the profile

    p_{t,γ}(τ) = (γ + 1) τ^γ / t^(γ+1),   0 < τ ≤ t   (0 after t),

which integrates to 1. A linear combination Σ_i x_i θ̄_{t_i,γ_i} of saved
snapshots is the average of θ(τ) with the profile Σ_i x_i p_{t_i,γ_i}; the x
that bring that profile closest, in L2 over τ, to the profile p_{t,γ} of the
wanted average solve the normal equations

    A x = b,   A_ij = ⟨p_{t_i,γ_i}, p_{t_j,γ_j}⟩,   b_i = ⟨p_{t_i,γ_i}, p_{t,γ}⟩,

with the inner products ⟨p, q⟩ = ∫ p(τ) q(τ) dτ in closed form
(`profile_inner_products`). Time is counted in optimizer steps: the
average written after update t has profile p_{t,γ}.
"""
import numpy as np


def profile_inner_products(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
  """⟨p_{t_a,γ_a}, p_{t_b,γ_b}⟩, float64 [A, B], for profiles a [A] and b [B].

  With m = min(t_a, t_b) the integral is over (0, m]:
      (γ_a + 1)(γ_b + 1) m^(γ_a+γ_b+1) / ((γ_a + γ_b + 1) t_a^(γ_a+1) t_b^(γ_b+1)),
  written with the ratio of the two times, which is at most 1, so that no
  power of a large t overflows: for t_a ≤ t_b it is
      (γ_a + 1)(γ_b + 1) (t_a / t_b)^γ_b / ((γ_a + γ_b + 1) t_b).
  """
  t_a, gamma_a = (np.asarray(v, np.float64)[:, None] for v in (t_a, gamma_a))
  t_b, gamma_b = (np.asarray(v, np.float64)[None, :] for v in (t_b, gamma_b))
  t_max = np.maximum(t_a, t_b)
  ratio_power = np.where(t_a <= t_b, (t_a / t_b)**gamma_b, (t_b / t_a)**gamma_a)
  return (gamma_a + 1) * (gamma_b + 1) * ratio_power / ((gamma_a + gamma_b + 1) * t_max)


def coefficients(times, gammas, t: float, gamma: float) -> np.ndarray:
  """The weights x [N] (float64) of snapshots (times [N], gammas [N]) whose sum Σ x_i θ̄_i is
  the least-squares reconstruction of the power EMA (t, γ): the solution of A x = b above
  (EDM2 Algorithm 3), by least squares so that a repeated snapshot shares its weight."""
  gram = profile_inner_products(times, gammas, times, gammas)
  target = profile_inner_products(times, gammas, [t], [gamma])[:, 0]
  return np.linalg.lstsq(gram, target, rcond=None)[0]
