"""Linear probe: multinomial logistic regression on frozen features, fitted in JAX.

The probe minimises the L2-regularised mean cross-entropy

    J(W, b) = −(1/N) Σᵢ log softmax(xᵢ W + b)_{yᵢ} + (λ/2) ‖W‖²_F

over W [D, C] and b [C] (the bias is not regularised), the objective of
scikit-learn's LogisticRegression with C = 1 / (λ N), which CLIP's linear
probes used (Radford et al. 2021, appendix A.3). J is convex, and strictly
so in W for λ > 0, so its minimiser is unique up to adding a constant to
every bias (which changes no prediction).

It is fitted full-batch with L-BFGS (`optax.lbfgs`, zoom line search) from
W = 0, b = 0, until ‖∇J‖ ≤ tol or max_steps steps: no randomness, so every
process that fits the same features gets the same probe.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class Probe(NamedTuple):
  """A fitted probe: weights [D, C], bias [C], the L-BFGS steps taken and the final ‖∇J‖."""
  weights: jax.Array
  bias: jax.Array
  steps: jax.Array
  grad_norm: jax.Array


def objective(params: dict, features: jax.Array, labels: jax.Array, l2: float) -> jax.Array:
  """J of the module docstring for params {'weights': [D, C], 'bias': [C]}, features [N, D]
  and int labels [N]."""
  logits = features @ params["weights"] + params["bias"]
  log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)
  return -jnp.mean(log_p) + 0.5 * l2 * jnp.sum(params["weights"]**2)


@functools.partial(jax.jit, static_argnames=("num_classes", "max_steps"))
def _fit(features, labels, l2, tol, *, num_classes, max_steps):
  loss = functools.partial(objective, features=features, labels=labels, l2=l2)
  params = {
      "weights": jnp.zeros((features.shape[1], num_classes), features.dtype),
      "bias": jnp.zeros((num_classes,), features.dtype)
  }
  solver = optax.lbfgs()
  # L-BFGS's line search already evaluated J and ∇J at the new point: reuse them.
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    return optax.apply_updates(params, updates), state

  def keep_going(carry):
    _, state = carry
    count = optax.tree_utils.tree_get(state, "count")
    grad_norm = optax.tree_utils.tree_norm(optax.tree_utils.tree_get(state, "grad"))
    return (count == 0) | ((count < max_steps) & (grad_norm > tol))

  params, state = jax.lax.while_loop(keep_going, step, (params, solver.init(params)))
  grad_norm = optax.tree_utils.tree_norm(jax.grad(loss)(params))
  return Probe(params["weights"], params["bias"], optax.tree_utils.tree_get(state, "count"),
               grad_norm)


def fit(features: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        *,
        l2: float,
        max_steps: int = 1000,
        tol: float = 1e-5) -> Probe:
  """The probe minimising J (module docstring) for features [N, D] and int labels [N] in
  [0, num_classes). Computes in float32, or float64 for float64 features under jax_enable_x64."""
  features = jnp.asarray(features)
  features = features.astype(jnp.promote_types(features.dtype, jnp.float32))
  return _fit(features,
              jnp.asarray(labels, jnp.int32),
              jnp.asarray(l2, features.dtype),
              jnp.asarray(tol, features.dtype),
              num_classes=num_classes,
              max_steps=max_steps)


def standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """train [N, D] and test [M, D] features shifted and scaled by the train mean and std.

  A probe is fitted to standardised features, so that λ weighs every feature
  alike whatever the scale of the embeddings (unit-norm ones have components
  of order 1/√D), and L-BFGS meets a better conditioned problem. A feature
  that is constant on train keeps scale 1.
  """
  train, test = np.asarray(train), np.asarray(test)
  mean, std = train.mean(0), train.std(0)
  std = np.where(std > 0, std, 1)
  return (train - mean) / std, (test - mean) / std


def predict(probe: Probe, features: np.ndarray) -> np.ndarray:
  """int [N]: the probe's class for each of features [N, D]."""
  logits = np.asarray(features) @ np.asarray(probe.weights) + np.asarray(probe.bias)
  return np.argmax(logits, axis=1)
