"""Pre-LN transformer encoder shared by the image and text towers.

Every parameter carries logical axis names ('embed', 'mlp', 'heads', 'kv') and
the main activations are constrained to ('batch', 'length', 'act_*'), so one
table of rules in `jaxmm.parallel` decides data, FSDP and tensor parallelism.

Precision: parameters are float32 and `dtype` is the dtype of the operands of
every matrix product, which accumulates in float32 (`jaxmm.models.matmul`).
`activation_dtype` is the dtype of the activations between products
(residual stream, LayerNorm outputs, GELU, biases, attention outputs);
LayerNorm statistics and softmax are computed in float32 either way.

The default float32 activations suit XLA:CPU, which has no bfloat16
arithmetic and converts around every elementwise op; measured on the
benchmark step (`benchmarks/step_throughput.py`, bf16), 0.31 s/step with
bfloat16 activations against 0.23 s/step with float32 ones. On GPUs and
TPUs the elementwise ops are memory-bound, and bfloat16 activations halve
their traffic and the activation memory kept for the backward pass.
"""
import functools
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm import errors
from jaxmm.models import matmul

# How `dot_product_attention` may compute: jaxmm's own einsums (any backend), or
# cuDNN's fused flash attention (NVIDIA GPUs only, bf16/fp16 operands).
ATTENTION = ("xla", "cudnn")

# flax's LayerNorm epsilon, jaxmm's default (PyTorch's, and so open_clip's, is 1e-5).
NORM_EPS = 1e-6

# Large negative logit for masked keys: finite so that a row whose keys are all
# masked gives a uniform (not NaN) distribution.
_MASKED_LOGIT = -1e30


def partitioned(init_fn, names):
  """An initialiser whose parameter carries logical axis `names`."""
  return nn.with_logical_partitioning(init_fn, names)


def dot_product_attention(q,
                          k,
                          v,
                          mask=None,
                          dtype=jnp.float32,
                          implementation="xla",
                          out_dtype=jnp.float32):
  """softmax(q kᵀ / √d) v (Vaswani et al. 2017, eq. 1), softmax in float32.

  `implementation` "cudnn" hands the whole product to cuDNN's fused attention
  (`jax.nn.dot_product_attention`), which never writes the [L, S] weights to
  memory; it needs an NVIDIA GPU and `dtype` bfloat16 or float16.

  Both batched products take operands in `dtype` and accumulate in float32.
  They keep plain autodiff rather than `matmul.einsum`'s custom VJP, because
  XLA:CPU (jax 0.10.2) compiles some bf16 x bf16 -> float32 backward products
  of this shape into a dot it cannot run ("Unsupported element type for
  DotThunk"); at head sizes like 64 the bf16 path would not be faster there.

  Args:
    q: [B, L, H, K] queries.
    k: [B, S, H, K] keys.
    v: [B, S, H, K] values.
    mask: optional bool, broadcastable to [B, H, L, S]; False drops a key.
    dtype: operand dtype of the two products.
    implementation: one of ATTENTION.
    out_dtype: dtype of the result.

  Returns:
    [B, L, H, K] in `out_dtype`.
  """
  q, k, v = (t.astype(dtype) for t in (q, k, v))
  if implementation == "cudnn":
    if mask is not None:  # cuDNN takes a mask with the full [L, S] extent only
      mask = jnp.broadcast_to(mask, mask.shape[:2] + (q.shape[1], k.shape[1]))
    return jax.nn.dot_product_attention(q, k, v, mask=mask,
                                        implementation="cudnn").astype(out_dtype)
  logits = jnp.einsum("blhk,bshk->bhls", q, k, preferred_element_type=jnp.float32)
  logits = logits / jnp.sqrt(jnp.float32(q.shape[-1]))
  if mask is not None:
    logits = jnp.where(mask, logits, _MASKED_LOGIT)
  weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
  return jnp.einsum("bhls,bshk->blhk", weights, v,
                    preferred_element_type=jnp.float32).astype(out_dtype)


class Dense(nn.Module):
  """x · kernel contracting x's last `num_in` axes with the kernel's first, plus bias.

  Every dense layer of the towers: the q/k/v ([embed, heads, kv]) and output
  ([heads, kv, embed]) projections keep heads as a separate kernel axis, so
  'heads' can be tensor-sharded (flax's DenseGeneral initialises multi-axis
  kernels flat and reshapes after, so under a mesh its logical constraint meets
  a rank-2 value and fails; this one does not); the MLP uses [embed, mlp] and
  [mlp, embed], the patch embedding [p, p, C, embed]. The product takes
  operands in `dtype` and accumulates in float32 (`jaxmm.models.matmul`); the
  result, with the bias added, is in `activation_dtype`.
  """
  kernel_shape: Tuple[int, ...]
  kernel_axes: Tuple[Optional[str], ...]
  num_in: int = 1
  dtype: Any = jnp.float32
  use_bias: bool = True
  kernel_init: Optional[Callable] = None  # None: Glorot uniform over the in and out axes.
  bias_init: Callable = nn.initializers.zeros
  activation_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x [..., *kernel_shape[:num_in]] -> [..., *kernel_shape[num_in:]]."""
    kernel_init = self.kernel_init or nn.initializers.xavier_uniform(
        in_axis=tuple(range(self.num_in)),
        out_axis=tuple(range(self.num_in, len(self.kernel_shape))))
    kernel = self.param("kernel", partitioned(kernel_init, self.kernel_axes), self.kernel_shape)
    y = matmul.tensordot(x, kernel, self.num_in, self.dtype, out_dtype=self.activation_dtype)
    if not self.use_bias:
      return y
    bias = self.param("bias", partitioned(self.bias_init, self.kernel_axes[self.num_in:]),
                      self.kernel_shape[self.num_in:])
    return y + bias.astype(y.dtype)


class MultiHeadAttention(nn.Module):
  """Multi-head attention with einsum projections (Vaswani et al. 2017, section 3.2.2).

  `out_kernel_init` (None: Glorot uniform) lets a residual branch start at zero, as the U-Net's
  attention does; `attention` is `dot_product_attention`'s implementation.
  """
  num_heads: int
  dtype: Any = jnp.float32
  out_kernel_init: Optional[Callable] = None
  attention: str = "xla"
  activation_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_q, x_kv, mask=None):
    """x_q [B, L, D], x_kv [B, S, D], mask broadcastable to [B, H, L, S] -> [B, L, D]."""
    width = x_q.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
    heads_shape = (self.num_heads, width // self.num_heads)

    def project(name, x, use_bias=True):
      dense = Dense((width,) + heads_shape, ("embed", "heads", "kv"),
                    1,
                    self.dtype,
                    use_bias=use_bias,
                    activation_dtype=self.activation_dtype,
                    name=name)
      return nn.with_logical_constraint(dense(x), ("batch", "length", "act_heads", None))

    # No key bias: it adds q·b_k to a whole row of logits, which the softmax
    # ignores, so its gradient is zero up to rounding and Adam would turn that
    # rounding noise into updates of full step size.
    keys = project("key", x_kv, use_bias=False)
    y = dot_product_attention(project("query", x_q), keys, project("value", x_kv), mask,
                              self.dtype, self.attention, self.activation_dtype)
    y = nn.with_logical_constraint(y, ("batch", "length", "act_heads", None))
    return Dense(heads_shape + (width,), ("heads", "kv", "embed"),
                 2,
                 self.dtype,
                 kernel_init=self.out_kernel_init,
                 activation_dtype=self.activation_dtype,
                 name="out")(y)


def layer_norm(name=None, affine=True, dtype=jnp.float32, eps=NORM_EPS):
  """LayerNorm (x − mean) / √(var + eps), scaled and shifted; scale and bias named along
  'embed', none if not `affine`.

  Its statistics are float32 whatever `dtype` (flax computes them in at least
  float32); `dtype` is the dtype of its output.
  """
  return nn.LayerNorm(epsilon=eps,
                      dtype=dtype,
                      name=name,
                      use_scale=affine,
                      use_bias=affine,
                      scale_init=partitioned(nn.initializers.ones, ("embed",)),
                      bias_init=partitioned(nn.initializers.zeros, ("embed",)))


def quick_gelu(x):
  """x·σ(1.702·x): the sigmoid approximation of GELU (Hendrycks & Gimpel 2016, section 2)
  that OpenAI's CLIP trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


# The MLP's nonlinearity by name. GELU is x·Φ(x) (Hendrycks & Gimpel 2016), Φ the standard
# normal CDF: 'gelu' computes Φ with erf (PyTorch's nn.GELU, open_clip's towers), 'gelu_tanh'
# with the tanh approximation (flax's default, jaxmm's own towers); they differ by up to
# ~5e-4, far more than float32 rounding, so a converted model keeps the one it trained with.
ACTIVATIONS = {
    "gelu_tanh": functools.partial(nn.gelu, approximate=True),
    "gelu": functools.partial(nn.gelu, approximate=False),
    "quick_gelu": quick_gelu,
}


def activation_fn(name: str) -> Callable:
  """The function of ACTIVATIONS `name`; a `UserError` listing them for another name."""
  return ACTIVATIONS[errors.one_of("activation", name, ACTIVATIONS)]


class MlpBlock(nn.Module):
  """Dense(mlp_dim) -> activation (ACTIVATIONS) -> Dense(width)."""
  mlp_dim: int
  dtype: Any = jnp.float32
  activation_dtype: Any = jnp.float32
  activation: str = "gelu_tanh"

  @nn.compact
  def __call__(self, x):
    """x [B, L, D] -> [B, L, D]."""
    width = x.shape[-1]
    h = Dense((width, self.mlp_dim), ("embed", "mlp"),
              1,
              self.dtype,
              bias_init=nn.initializers.normal(1e-6),
              activation_dtype=self.activation_dtype,
              name="fc1")(x)
    h = activation_fn(self.activation)(h)
    h = nn.with_logical_constraint(h, ("batch", "length", "act_mlp"))
    return Dense((self.mlp_dim, width), ("mlp", "embed"),
                 1,
                 self.dtype,
                 bias_init=nn.initializers.normal(1e-6),
                 activation_dtype=self.activation_dtype,
                 name="fc2")(h)


class EncoderBlock(nn.Module):
  """x + MHSA(LN(x)), then x + MLP(LN(x)) (pre-LN, Xiong et al. 2020)."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  attention: str = "xla"
  activation_dtype: Any = jnp.float32
  activation: str = "gelu_tanh"
  norm_eps: float = NORM_EPS

  @nn.compact
  def __call__(self, x, mask=None):
    """x [B, L, D], mask bool broadcastable to [B, 1, L, L] or None -> [B, L, D]."""
    act = ("batch", "length", "act_embed")
    y = layer_norm("ln_attn", dtype=self.activation_dtype, eps=self.norm_eps)(x)
    y = MultiHeadAttention(self.num_heads,
                           self.dtype,
                           attention=self.attention,
                           activation_dtype=self.activation_dtype,
                           name="attn")(y, y, mask)
    x = nn.with_logical_constraint(x + y, act)
    y = layer_norm("ln_mlp", dtype=self.activation_dtype, eps=self.norm_eps)(x)
    y = MlpBlock(self.mlp_dim, self.dtype, self.activation_dtype, self.activation, name="mlp")(y)
    return nn.with_logical_constraint(x + y, act)


class Encoder(nn.Module):
  """A stack of `depth` EncoderBlocks; `remat` recomputes each block in the backward pass.

  `activation` (ACTIVATIONS) and `norm_eps` (the LayerNorms' epsilon) are every block's.
  """
  depth: int
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  remat: bool = False
  attention: str = "xla"
  activation_dtype: Any = jnp.float32
  activation: str = "gelu_tanh"
  norm_eps: float = NORM_EPS

  @nn.compact
  def __call__(self, x, padding_mask: Optional[jax.Array] = None, causal: bool = False):
    """x [B, L, D], padding_mask bool [B, L] (True = real token) or None -> [B, L, D].

    The residual stream, and so the result, is in `activation_dtype`.

    Padded tokens are dropped as keys; their own outputs are computed but meaningless.
    With `causal`, token i attends to tokens j <= i only (a GPT-style mask, which
    CLIP's text tower uses), so an output never depends on the tokens after it.
    """
    block = nn.remat(EncoderBlock) if self.remat else EncoderBlock
    mask = None if padding_mask is None else padding_mask[:, None, None, :]
    if causal:
      length = x.shape[1]
      lower = jnp.tril(jnp.ones((length, length), bool))[None, None]
      mask = lower if mask is None else mask & lower
    x = nn.with_logical_constraint(x.astype(self.activation_dtype),
                                   ("batch", "length", "act_embed"))
    for i in range(self.depth):
      x = block(self.num_heads,
                self.mlp_dim,
                self.dtype,
                self.attention,
                self.activation_dtype,
                self.activation,
                self.norm_eps,
                name=f"block_{i}")(x, mask)
    return x
