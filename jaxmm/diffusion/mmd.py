"""A kernel two-sample statistic: the squared maximum mean discrepancy with RBF kernels.

Gretton et al. (2012), "A Kernel Two-Sample Test", eq. 3 (the unbiased
estimate MMD²_u): with k the mean of Gaussian kernels
exp(−‖a − b‖²/(2h²)) over the bandwidths h,

    MMD²_u = Σ_{i≠j} k(x_i, x_j)/(n(n−1)) + Σ_{i≠j} k(y_i, y_j)/(m(m−1)) − 2·Σ_{i,j} k(x_i, y_j)/(nm).

Its expectation is 0 when x and y come from the same distribution, so it can
come out slightly negative; it grows with the distance between them. The
default bandwidths suit data of scale ~0.05–1, such as `mixture_2d()`.
"""
import functools

import jax
import jax.numpy as jnp

DEFAULT_BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0)


def _kernel_sum(a, b, bandwidths, block):
  """Σ_{i,j} k(a_i, b_j), a [n, D], b [m, D], computed `block` rows of a at a time."""

  def rows(a_i):
    squared = jnp.sum((a_i[None, :] - b)**2, axis=-1)
    return sum(jnp.sum(jnp.exp(-squared / (2 * h * h))) for h in bandwidths) / len(bandwidths)

  return jnp.sum(jax.lax.map(rows, a, batch_size=block))


@functools.partial(jax.jit, static_argnames=("bandwidths", "block"))
def mmd2(x, y, bandwidths=DEFAULT_BANDWIDTHS, block=256):
  """Unbiased MMD² between samples x [n, D] and y [m, D] (n, m ≥ 2); a scalar.

  Memory is O(block·m): the kernel matrices are summed `block` rows at a time.
  Jitted; `bandwidths` (a tuple) and `block` are static.
  """
  n, m = x.shape[0], y.shape[0]
  kxx = (_kernel_sum(x, x, bandwidths, block) - n) / (n * (n - 1))  # k(a, a) = 1 on the diagonal
  kyy = (_kernel_sum(y, y, bandwidths, block) - m) / (m * (m - 1))
  return kxx + kyy - 2 * _kernel_sum(x, y, bandwidths, block) / (n * m)
