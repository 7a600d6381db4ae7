"""Matrix products in the compute dtype that accumulate in float32, forward and backward.

Why: XLA:CPU runs a bfloat16 x bfloat16 -> bfloat16 dot no faster than float32
(it converts the operands to float32 around the dot), while the same dot with
`preferred_element_type=float32` takes the CPU's bf16 matmul path (AMX /
AVX512-BF16). Measured on a 2-core Xeon with AMX-BF16, [4096, 192] x [192, 768]:
about 130-157 GFLOP/s for bf16 -> bf16 and for float32, about 955 GFLOP/s for
bf16 -> float32. Autodiff of a float32-accumulating dot does not keep that
path: its cotangent is float32, so both backward dots would run in float32.
`einsum` therefore has a custom VJP whose two backward products are again
bf16 x bf16 -> float32 (the cotangent is cast to bf16 first), as under
torch.autocast. The models use it for every dense layer, with float32
results; the batched attention products stay with plain autodiff (see
`transformer.dot_product_attention`).

In float32 every function here is the plain jax.numpy product, bit for bit.
"""
import functools
import string

import jax
import jax.numpy as jnp


def _accumulates_in_float32(dtype) -> bool:
  """True for compute dtypes narrower than float32 (bfloat16, float16)."""
  return jnp.finfo(dtype).bits < 32


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _low_precision_einsum(spec, out_dtype, x, y):
  return jnp.einsum(spec, x, y, preferred_element_type=jnp.float32).astype(out_dtype)


def _low_precision_einsum_fwd(spec, out_dtype, x, y):
  return _low_precision_einsum(spec, out_dtype, x, y), (x, y)


def _low_precision_einsum_bwd(spec, out_dtype, residuals, g):
  """For out = Σ x·y: dx = Σ g·y and dy = Σ g·x, each a bf16 x bf16 -> float32 product."""
  del out_dtype
  x, y = residuals
  inputs, out = spec.split("->")
  x_spec, y_spec = inputs.split(",")
  g = g.astype(x.dtype)
  dx = jnp.einsum(f"{out},{y_spec}->{x_spec}", g, y, preferred_element_type=jnp.float32)
  dy = jnp.einsum(f"{out},{x_spec}->{y_spec}", g, x, preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dy.astype(y.dtype)


_low_precision_einsum.defvjp(_low_precision_einsum_fwd, _low_precision_einsum_bwd)


def einsum(spec: str, x, y, dtype, out_dtype=None):
  """jnp.einsum(spec, x, y) with both operands in `dtype`, accumulated in float32.

  Args:
    spec: two-operand einsum, e.g. "blhk,bshk->bhls", without '...'; every index
      of one operand appears in the other operand or in the output (true of any
      linear layer or attention product), so each input gradient is one einsum.
    x, y: operands of any float dtype; the cast to `dtype` happens outside the
      custom VJP, so float32 parameters receive float32 gradients.
    dtype: compute dtype of the product.
    out_dtype: dtype of the result, `dtype` if None (float32 for attention logits).

  Returns:
    The product in `out_dtype`.
  """
  out_dtype = dtype if out_dtype is None else out_dtype
  x, y = x.astype(dtype), y.astype(dtype)
  if not _accumulates_in_float32(dtype):
    return jnp.einsum(spec, x, y, preferred_element_type=out_dtype)
  inputs, out = spec.split("->")
  x_spec, y_spec = inputs.split(",")
  if "." in spec or not set(x_spec) <= set(y_spec + out) or not set(y_spec) <= set(x_spec + out):
    raise ValueError(f"einsum spec {spec!r}: each operand index must appear elsewhere, no '...'")
  return _low_precision_einsum(spec, jnp.dtype(out_dtype), x, y)


def tensordot(x, y, num_contract: int, dtype, out_dtype=None):
  """x's last `num_contract` axes contracted with y's first, in `dtype` with float32 accumulation.

  x [*A, *C], y [*C, *N] -> [*A, *N] in `out_dtype` (`dtype` if None), like
  jnp.tensordot(x, y, num_contract).
  """
  free_x, free_y = x.ndim - num_contract, y.ndim - num_contract
  letters = string.ascii_letters
  a, c, n = (letters[:free_x], letters[free_x:x.ndim], letters[x.ndim:x.ndim + free_y])
  return einsum(f"{a}{c},{c}{n}->{a}{n}", x, y, dtype, out_dtype)
