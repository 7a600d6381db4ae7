"""The linear probe against a float64 NumPy optimum of its objective and against scikit-learn."""
import numpy as np
import pytest
from sklearn import linear_model

from jaxmm.evaluators import linear_probe

L2 = 1e-2


def _softmax(logits):
  z = np.exp(logits - logits.max(axis=1, keepdims=True))
  return z / z.sum(axis=1, keepdims=True)


def _gradient(weights, bias, x, y, l2):
  """float64 ∇J of the regularised mean cross-entropy, written out: (dJ/dW [D, C], dJ/db [C])."""
  x = np.float64(x)
  residual = _softmax(x @ weights + bias) - np.eye(weights.shape[1])[y]
  return x.T @ residual / len(x) + l2 * weights, residual.mean(0)


def _newton_optimum(x, y, num_classes, l2, steps=50):
  """J's minimiser by float64 Newton steps on (W, b), the bias fixed to sum to 0."""
  x = np.float64(x)
  n, d = x.shape
  xb = np.concatenate([x, np.ones((n, 1))], axis=1)  # [N, D + 1], the last column for b
  theta = np.zeros((d + 1, num_classes))
  penalty = np.diag(np.kron(np.r_[np.full(d, l2), 0.0], np.ones(num_classes)))
  for _ in range(steps):
    p = _softmax(xb @ theta)
    g_w, g_b = _gradient(theta[:d], theta[d], x, y, l2)
    grad = np.concatenate([g_w, g_b[None]]).reshape(-1)
    # Hessian of the mean cross-entropy: (1/N) Σᵢ x̃ᵢx̃ᵢᵀ ⊗ (diag pᵢ − pᵢpᵢᵀ).
    per_example = np.einsum("nc,ce->nce", p, np.eye(num_classes)) - np.einsum("nc,ne->nce", p, p)
    hessian = np.einsum("na,nb,nce->acbe", xb, xb, per_example).reshape(grad.size, grad.size) / n
    # lstsq: adding a constant to every bias leaves J unchanged, so H is singular there.
    theta -= np.linalg.lstsq(hessian + penalty, grad, rcond=None)[0].reshape(theta.shape)
  return theta[:d], theta[d] - theta[d].mean()


def _clusters(seed, n, d=5, classes=3, spread=1.0):
  rng = np.random.default_rng(seed)
  centres = 2.0 * rng.normal(size=(classes, d))
  y = rng.integers(classes, size=n)
  return np.float32(centres[y] + spread * rng.normal(size=(n, d))), y


def test_probe_is_the_float64_optimum():
  x, y = _clusters(0, 300, spread=2.0)  # overlapping: the optimum has finite, O(1) weights
  probe = linear_probe.fit(x, y, 3, l2=L2)
  weights, bias = np.float64(probe.weights), np.float64(probe.bias)
  g_w, g_b = _gradient(weights, bias, x, y, L2)
  assert np.sqrt(np.sum(g_w**2) + np.sum(g_b**2)) < 1e-4
  assert float(probe.grad_norm) < 1e-4 and 0 < int(probe.steps) < 1000
  best_w, best_b = _newton_optimum(x, y, 3, L2)
  # J is L2-strongly convex in W: ‖W − W*‖ ≤ ‖∇J‖ / λ.
  np.testing.assert_allclose(weights, best_w, atol=1e-3)
  np.testing.assert_allclose(bias - bias.mean(), best_b, atol=1e-3)


def test_accuracy_matches_scikit_learn_on_separable_data():
  x, y = _clusters(1, 400, d=8, classes=4, spread=0.5)
  test_x, test_y = _clusters(1, 1400, d=8, classes=4, spread=0.5)
  test_x, test_y = test_x[400:], test_y[400:]  # same clusters, unseen points
  probe = linear_probe.fit(x, y, 4, l2=1e-3)
  ours = np.mean(linear_probe.predict(probe, test_x) == test_y)
  # scikit-learn minimises C Σ loss + ½‖W‖², i.e. J with λ = 1 / (C N).
  reference = linear_model.LogisticRegression(C=1 / (1e-3 * len(x)), tol=1e-8, max_iter=10_000)
  theirs = reference.fit(np.float64(x), y).score(np.float64(test_x), test_y)
  assert ours > 0.95 and abs(ours - theirs) <= 0.01
  # Both near the same optimum: fit stops at ‖∇J‖ ≤ 1e-5, so ‖W − W*‖ ≤ 1e-5 / λ = 1e-2.
  np.testing.assert_allclose(np.asarray(probe.weights), reference.coef_.T, atol=1e-2)


def test_fit_is_deterministic():
  x, y = _clusters(2, 200, spread=2.0)
  first, second = linear_probe.fit(x, y, 3, l2=L2), linear_probe.fit(x, y, 3, l2=L2)
  np.testing.assert_array_equal(first.weights, second.weights)
  np.testing.assert_array_equal(first.bias, second.bias)


def test_standardize_uses_train_statistics():
  rng = np.random.default_rng(3)
  train = np.concatenate([rng.normal(5.0, 3.0, size=(100, 2)), np.ones((100, 1))], axis=1)
  test = rng.normal(size=(10, 3))
  train_z, test_z = linear_probe.standardize(train, test)
  np.testing.assert_allclose(train_z[:, :2].mean(0), 0, atol=1e-12)
  np.testing.assert_allclose(train_z[:, :2].std(0), 1)
  assert np.all(train_z[:, 2] == 0)  # a constant feature is centred, not divided by 0
  np.testing.assert_allclose(test_z, (test - train.mean(0)) / np.r_[train.std(0)[:2], 1.0])


@pytest.mark.parametrize("max_steps", [1, 3])
def test_max_steps_bounds_the_solver(max_steps):
  x, y = _clusters(4, 200, spread=2.0)
  assert int(linear_probe.fit(x, y, 3, l2=L2, max_steps=max_steps).steps) == max_steps
