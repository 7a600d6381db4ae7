"""A denoiser's caption: a contrastive run's text tower read two ways (text-to-image).

The caption's tokens go through a text tower (`TextTransformer`, built with
the architecture of a jaxmm image-text run's, whose weights `init_from`
copies in), and reach the denoiser by two routes, as in Imagen (Saharia et
al. 2022, section 2.4) and GLIDE (Nichol et al. 2022, section 2.3):

- the pooled text vector is added to the noise embedding
  (`embeddings.Conditioning`), so it modulates every block;
- the per-token outputs form a context that image features read with
  cross-attention, x + Attn(LN(x), Wc·context), at the resolutions that have
  self-attention (`CrossAttention`).

Classifier-free guidance's null condition ∅ is the empty caption, all
padding (`jaxmm.diffusion.drop_labels` with the pad id). Its pooled vector
is 0, and a learned null token that always joins the context gives its
cross-attention a key to attend to where every caption token is masked.
"""
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmm.models.text import TextTransformer
from jaxmm.models.transformer import Dense, MultiHeadAttention, layer_norm, partitioned


class CaptionEncoder(nn.Module):
  """tokens int [B, L] -> (pooled [B, W], context [B, 1 + L, W], mask bool [B, 1 + L]).

  Attributes:
    text: TextTransformer keyword arguments (vocab_size, width, depth, num_heads, mlp_dim,
      max_len, pad_id, ...); W is text['width']. Its parameters are `text_tower`.
    dtype: operand dtype of the tower's products (float32 accumulation).
  """
  text: Mapping[str, Any]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens):
    # Guidance's null caption is a constant: without the barrier XLA would spend minutes
    # constant-folding the text tower over it when compiling a sampler.
    tokens = jax.lax.optimization_barrier(tokens)
    outputs, pooled = TextTransformer(**self.text, dtype=self.dtype,
                                      name="text_tower")(tokens, return_tokens=True)
    width = outputs.shape[-1]
    null = self.param("null_token", partitioned(nn.initializers.normal(0.02),
                                                (None, None, "embed")), (1, 1, width))
    batch = tokens.shape[0]
    context = jnp.concatenate([jnp.broadcast_to(null, (batch, 1, width)), outputs], axis=1)
    is_token = tokens != self.text.get("pad_id", 0)
    mask = jnp.concatenate([jnp.ones((batch, 1), bool), is_token], axis=1)
    return pooled, context, mask


class CrossAttention(nn.Module):
  """x [B, N, D] -> x + Attn(LN(x), Wc·context) over the context's unmasked tokens.

  context [B, S, W] (W may differ from D: Wc [W, D] projects it), mask bool
  [B, S]. The output projection starts at zero, so the block starts as the
  identity, like the denoisers' other residual branches.
  """
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context, mask):
    width = x.shape[-1]
    keys = Dense((context.shape[-1], width), (None, "embed"), 1, self.dtype,
                 name="context_proj")(context)
    y = MultiHeadAttention(self.num_heads,
                           self.dtype,
                           out_kernel_init=nn.initializers.zeros,
                           name="attn")(layer_norm("ln")(x), keys, mask[:, None, None, :])
    return x + y


def read_condition(text: Mapping[str, Any] | None, dtype, condition):
  """(class_labels, pooled, context) of a denoiser's condition argument, in a compact module.

  text None: `condition` is the class labels (int [B, K] or None) and there is
  no caption; else it is a caption's tokens int [B, L], read by a
  `CaptionEncoder` named 'caption': pooled [B, W] and context = (tokens
  [B, 1 + L, W], mask [B, 1 + L]), and no class labels.
  """
  if text is None:
    return condition, None, None
  pooled, context, mask = CaptionEncoder(text, dtype, name="caption")(condition)
  return None, pooled, (context, mask)
