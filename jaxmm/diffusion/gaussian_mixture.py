"""A Gaussian mixture: exact samples, noisy log-density and the ideal denoiser E[x0 | x].

For x0 ~ Σ_k w_k·N(μ_k, Σ_k) and x = x0 + σ·n, n ~ N(0, I), every component
stays Gaussian: p(x; σ) = Σ_k w_k·N(x; μ_k, Σ_k + σ²I), and

    E[x0 | x] = Σ_k r_k(x)·(μ_k + Σ_k·(Σ_k + σ²I)⁻¹·(x − μ_k)),

with responsibilities r_k(x) = w_k·N(x; μ_k, Σ_k + σ²I)/p(x; σ). That is the
denoiser a perfectly trained network would be, so a sampler run with it must
reproduce the mixture.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """weights [K] (summing to 1), means [K, D], covariances [K, D, D] (positive definite)."""
  weights: np.ndarray
  means: np.ndarray
  covariances: np.ndarray

  def sample(self, rng, n, dtype=jnp.float32):
    """n exact samples [n, D]."""
    component_rng, normal_rng = jax.random.split(rng)
    k = jax.random.choice(component_rng, len(self.weights), (n,), p=jnp.asarray(self.weights))
    z = jax.random.normal(normal_rng, (n, self.means.shape[1]), dtype)
    chol = jnp.asarray(np.linalg.cholesky(self.covariances), dtype)
    return jnp.asarray(self.means, dtype)[k] + jnp.einsum("nij,nj->ni", chol[k], z)

  def _components(self, x, sigma):
    """log(w_k·N(x; μ_k, Σ_k + σ²I)) [B, K] and the components' posterior means [B, K, D].

    With Σ_k = U_k·diag(e_k)·U_kᵀ (computed once, on the host), Σ_k + σ²I has
    eigenvalues e_k + σ² in the same basis, so every inverse and determinant
    is elementwise there.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(self.covariances)  # [K, D], [K, D, D]
    eigenvalues = jnp.asarray(eigenvalues, x.dtype)
    eigenvectors = jnp.asarray(eigenvectors, x.dtype)
    means = jnp.asarray(self.means, x.dtype)
    noisy = eigenvalues + (sigma**2)[:, None, None]  # [B, K, D]
    projected = jnp.einsum("kji,bkj->bki", eigenvectors, x[:, None, :] - means)  # U_kᵀ(x − μ_k)
    log_normal = -0.5 * jnp.sum(projected**2 / noisy + jnp.log(2 * jnp.pi * noisy), axis=-1)
    # μ_k + Σ_k·(Σ_k + σ²I)⁻¹·(x − μ_k), in the eigenbasis e/(e + σ²) per axis.
    posterior_means = means + jnp.einsum("kij,bkj->bki", eigenvectors,
                                         eigenvalues / noisy * projected)
    return jnp.log(jnp.asarray(self.weights, x.dtype)) + log_normal, posterior_means

  def log_prob(self, x, sigma):
    """log p(x; σ) [B] of the noisy mixture, x [B, D], sigma [B]."""
    return jax.nn.logsumexp(self._components(x, sigma)[0], axis=-1)

  def denoiser(self, x, sigma):
    """E[x0 | x] [B, D] for x [B, D] = x0 + σ·n, sigma [B] (module docstring)."""
    log_joint, posterior_means = self._components(x, sigma)
    return jnp.einsum("bk,bki->bi", jax.nn.softmax(log_joint, axis=-1), posterior_means)

  def select(self, components, extra_variance=0.0):
    """The mixture of `components` (indices) alone, weights renormalised, each covariance
    widened by extra_variance·I: the data convolved with N(0, extra_variance·I)."""
    components = list(components)
    weights = self.weights[components]
    covariances = self.covariances[components] + extra_variance * np.eye(self.means.shape[1])
    return GaussianMixture(weights / weights.sum(), self.means[components], covariances)

  def mahalanobis(self, x):
    """float64 [n, K]: ‖x − μ_k‖ in the metric Σ_k⁻¹ for points x [n, D], each component."""
    offsets = np.asarray(x, np.float64)[:, None, :] - self.means
    return np.sqrt(np.einsum("nki,kij,nkj->nk", offsets, np.linalg.inv(self.covariances), offsets))


def mixture_2d():
  """The 3-component 2-D mixture of the samplers' tests and benchmark.

  Unequal weights, an elongated, a tilted and a narrow (std 0.05) component
  about a unit apart, so that a sampler must resolve σ from ~1 down to ~0.05.
  """

  def cov(std_x, std_y, corr):
    return [[std_x**2, corr * std_x * std_y], [corr * std_x * std_y, std_y**2]]

  return GaussianMixture(weights=np.array([0.5, 0.3, 0.2]),
                         means=np.array([[-1.0, -0.5], [1.0, 0.0], [0.0, 1.2]]),
                         covariances=np.array(
                             [cov(0.3, 0.1, 0.5),
                              cov(0.15, 0.4, -0.3),
                              cov(0.05, 0.05, 0.0)]))
