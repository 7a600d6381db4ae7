"""Fréchet distance between Gaussians fitted to two feature sets (FID, Heusel et al. 2017).

    FD = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})

in float64, with the unbiased sample covariances Σ_a = X_aᵀX_a / (N − 1)
of the centred features X_a [N, D] (as FID's reference code, `np.cov`).

No matrix square root is taken. A general one of Σ_a Σ_b (scipy.linalg.sqrtm)
can come back complex or inaccurate when a covariance is singular (fewer
samples than dimensions), and square roots of the eigenvalues of a symmetric
form lose half the digits of the eigenvalues near zero. Instead: Σ_a Σ_b has
the nonzero eigenvalues of (X_a X_bᵀ)(X_a X_bᵀ)ᵀ / ((N − 1)(M − 1)), so

    Tr((Σ_a Σ_b)^{1/2}) = ‖X_a X_bᵀ‖_* / √((N − 1)(M − 1)) = ‖R_a R_bᵀ‖_* / √((N − 1)(M − 1)),

the nuclear norm (sum of singular values) of the [D, D] product of the
triangular factors of X_a = Q_a R_a and X_b = Q_b R_b, which an SVD finds to
full precision.
"""
import numpy as np


def _centred_factor(features: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, int]:
  """Mean [D], triangular R [min(N, D), D] with RᵀR = X_cᵀX_c, and N, of features [N, D]."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"{name} must be [N, D] with N >= 2, got shape {features.shape}")
  mean = features.mean(0)
  return mean, np.linalg.qr(features - mean, mode="r"), len(features)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """The Fréchet distance between Gaussians fitted to features_a [N, D] and features_b [M, D].

  FD = ‖μ_a − μ_b‖² + Tr(Σ_a) + Tr(Σ_b) − 2 Tr((Σ_a Σ_b)^{1/2}) (Heusel et al.
  2017, arXiv:1706.08500), Σ the unbiased sample covariances; the trace of
  the square root as in the module docstring. Returns a Python float, 0 (to
  rounding) for identical sets.
  """
  mean_a, r_a, n = _centred_factor(features_a, "features_a")
  mean_b, r_b, m = _centred_factor(features_b, "features_b")
  if mean_a.shape != mean_b.shape:
    raise ValueError(f"features of different widths: {mean_a.shape[0]} and {mean_b.shape[0]}")
  trace_a, trace_b = np.sum(r_a**2) / (n - 1), np.sum(r_b**2) / (m - 1)
  trace_sqrt = np.linalg.norm(r_a @ r_b.T, "nuc") / np.sqrt((n - 1) * (m - 1))
  return float(np.sum((mean_a - mean_b)**2) + trace_a + trace_b - 2 * trace_sqrt)
