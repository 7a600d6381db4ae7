"""Muon for the weight matrices, Adam for the rest (`optim.name='muon'`).

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural
networks") keeps a momentum of each weight matrix W [fan_in, fan_out]'s
gradient G and steps along its orthogonalised Nesterov step: with
M_t = β·M_{t−1} + (1 − β)·G_t (optax's form, bias-corrected like Adam's first
moment), N = β·M_t/(1 − β^(t+1)) + (1 − β)·G_t/(1 − β^t), and five
Newton–Schulz iterations X ← a·X + (b·XXᵀ + c·(XXᵀ)²)·X, (a, b, c) =
(3.4445, −4.775, 2.0315), from X = N/‖N‖_F take N = U S Vᵀ to about U Vᵀ,
so every direction of the update gets a similar size. The orthogonalised update is
scaled to RMS 0.2 (0.2·√max(fan_in, fan_out) on the unit-singular-value
matrix; Liu et al. 2025, "Muon is scalable for LLM training", eq. 4), the RMS
of a typical AdamW update, so that AdamW's learning rate carries over.
optax.contrib.muon does the arithmetic; this module says which parameters are
matrices and how each one is laid out.

Which parameters: every kernel with two or more axes, seen as the matrix
[product of its input axes, product of its output axes]. A convolution
[k, k, C_in, C_out] or patch embedding [p, p, C, D] has three input axes;
attention's query, key and value [D, heads, head_dim] one, its output
projection [heads, head_dim, D] two; any other kernel one. Adam (the
config's b1, b2 and eps, with Nesterov momentum) takes biases, norm scales,
embedding tables, and the network's first and last layers (`ADAM_LAYERS`), as
in Jordan et al.; `weight_decay` applies to the Muon matrices only.
"""
import re
from typing import Any

import jax
from optax import contrib
from optax.transforms import _masking

from jaxmm.train import partition

# Layers that keep Adam: a model's input and output layers (U-Net conv_in and
# conv_out, DiT and ViT patch embeddings and DiT's final layer, classifier
# heads) and embedding tables.
ADAM_LAYERS = re.compile(r"(^|/)(conv_in|conv_out|patch_embed|final|head\d*|embedding|labels)(/|$)")

_ATTENTION_OUT = re.compile(r"(^|/)attn/out/kernel$")


def input_axes(name: str, ndim: int) -> int | None:
  """How many leading axes of kernel `name` (with `ndim` axes) are its inputs; None: Adam."""
  if ndim < 2 or not name.endswith("kernel") or ADAM_LAYERS.search(name):
    return None
  if ndim == 4:
    return 3
  if _ATTENTION_OUT.search(name):
    return 2
  return 1


def dimension_numbers(params: Any) -> Any:
  """The tree of `params` with optax's MuonDimensionNumbers for each matrix, None elsewhere.

  Leaves optax has masked out (`MaskedNode`) map to None.
  """

  def one(path, leaf):
    if isinstance(leaf, _masking.MaskedNode):
      return None
    num_in = input_axes(partition.param_path(path), leaf.ndim)
    if num_in is None:
      return None
    return contrib.MuonDimensionNumbers(reduction_axis=tuple(range(num_in)),
                                        output_axis=tuple(range(num_in, leaf.ndim)))

  return jax.tree_util.tree_map_with_path(one,
                                          params,
                                          is_leaf=lambda x: isinstance(x, _masking.MaskedNode))


def muon(learning_rate, *, momentum: float, b1: float, b2: float, eps: float,
         weight_decay: float):
  """Muon with Nesterov momentum `momentum` on the matrices, decoupled weight decay
  `weight_decay` on them alone; Adam (b1, b2, eps, Nesterov) on the rest."""
  return contrib.muon(learning_rate,
                      beta=momentum,
                      eps=eps,
                      weight_decay=weight_decay,
                      adam_b1=b1,
                      adam_b2=b2,
                      muon_weight_dimension_numbers=dimension_numbers,
                      consistent_rms=0.2)
