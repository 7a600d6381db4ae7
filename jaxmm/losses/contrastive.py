"""Contrastive losses: CLIP (softmax), SigLIP (sigmoid) and SupCon.

Each loss computes in the wider of its inputs' dtype and float32, so bfloat16
embeddings are reduced in float32 and float64 ones (under x64) stay float64.

With `axis_name` (a mesh-axis name or a tuple of them) a loss is meant to be
called inside `jax.shard_map` on each device's [b, ...] rows of a global batch
of B = n·b rows; it returns on every device the loss of the global batch, and
its gradient w.r.t. the local rows and the scalar parameters is that of the
unsharded loss. The value is a `psum` of per-shard partial sums, so it is
invariant across devices and can be returned with `out_specs=P()`.

Run that `shard_map` with `check_vma=True` (its default). With it JAX tracks
which values vary across devices: a replicated `in_specs=P()` parameter
(log_scale, bias) used with device-varying rows is implicitly broadcast, and
the broadcast transposes into a `psum` of the per-device gradients, while the
`psum` of the loss transposes into a plain copy of the cotangent. The gradient
is then the global one whether `jax.grad` is taken outside the `shard_map` or
inside it (a train step that runs wholly in `shard_map`). With
`check_vma=False` only the outside form is right: inside, the scalars get
their local gradient and the embeddings n times theirs.
"""
import math

import jax
import jax.numpy as jnp

from jaxmm.losses import ring

# Paper defaults: CLIP initialises the logit scale to 1/0.07 (Radford et al.
# 2021, Sec. 2.5); SigLIP initialises t' = log 10 and b = −10 (Zhai et al.
# 2023, Sec. 3.2 and Algorithm 1); SupCon uses τ = 0.07 (Khosla et al. 2020).
CLIP_INIT_LOG_SCALE = math.log(1 / 0.07)
SIGLIP_INIT_LOG_SCALE = math.log(10.0)
SIGLIP_INIT_BIAS = -10.0
SUPCON_TEMPERATURE = 0.07

# How a sharded batch is reduced (see clip_loss and siglip_loss).
CLIP_VARIANTS = ("gather", "ring")
SIGLIP_VARIANTS = ("gather", "ring")
SUPCON_CONTRAST_MODES = ("all", "one")


def _check_option(name, value, valid):
  """Raises a one-line ValueError listing `valid` unless `value` is one of them."""
  if value not in valid:
    raise ValueError(f"{name} must be one of {valid}, got {value!r}")


def _compute_dtype(*arrays):
  return jnp.result_type(jnp.float32, *(a.dtype for a in arrays))


def _matching(rows, cols, col_offset):
  """[rows, cols] bool mask of matching pairs: local row i ↔ column offset + i."""
  return jnp.arange(rows)[:, None] + col_offset == jnp.arange(cols)[None, :]


@jax.custom_vjp
def _row_and_column_lse(logits):
  """[r, c] logits -> ([r] LSE of each row, [c] LSE of each column).

  The gradient is written out so that the backward pass of a ring step forms
  a single [r, c] cotangent block next to the recomputed logits.
  """
  return jax.nn.logsumexp(logits, axis=1), jax.nn.logsumexp(logits, axis=0)


def _row_and_column_lse_fwd(logits):
  row, column = _row_and_column_lse(logits)
  return (row, column), (logits, row, column)


def _row_and_column_lse_bwd(residuals, cotangents):
  # ∂LSEⱼ sᵢⱼ / ∂sᵢⱼ is the row softmax and ∂LSEᵢ sᵢⱼ / ∂sᵢⱼ the column
  # softmax; one elementwise expression gives their weighted sum, where
  # autodiff of two logsumexps would keep both softmaxes as blocks.
  logits, row, column = residuals
  d_row, d_column = cotangents
  return (d_row[:, None] * jnp.exp(logits - row[:, None]) +
          d_column[None, :] * jnp.exp(logits - column[None, :]),)


_row_and_column_lse.defvjp(_row_and_column_lse_fwd, _row_and_column_lse_bwd)


def clip_loss(zimg, ztxt, log_scale, *, axis_name=None, variant="gather"):
  """Symmetric InfoNCE of CLIP (Radford et al. 2021, Fig. 3).

  With logits sᵢⱼ = exp(log_scale) · zimgᵢ · ztxtⱼ ([B, B]), the mean of the
  image→text and text→image cross-entropies with the diagonal as targets:

    L = ½ · ( meanᵢ [LSEⱼ sᵢⱼ − sᵢᵢ] + meanⱼ [LSEᵢ sᵢⱼ − sⱼⱼ] ),

  LSE the log-sum-exp. Each shard adds up the terms of its b rows (row
  log-sum-exps of its images) and its b columns (column log-sum-exps of its
  texts); the per-shard sums are added up and divided by the global 2B.

  `variant` chooses how a sharded batch is reduced (without `axis_name` both
  compute the same [B, B] logits):
    "gather": all-gather both towers' embeddings; a shard forms its images'
      [b, B] logits rows and its texts' [b, B] logits columns at once.
    "ring": text blocks travel around the ring of shards and a shard forms one
      [b, b] block sₖₘ = its images against the texts of shard m at a time
      (see `ring.ring_fold`). Its images' row LSEs are accumulated online on
      the shard; the block's column LSEs (over this shard's images) travel
      with the text block, are accumulated by every shard it visits, and are
      back home after the n-th hop. Each accumulator is a running log-sum-exp
      merged with `logaddexp` (a running max and its rescaled sum-exp, in log
      form), so it is as stable as one LSE over the whole row or column. The
      backward pass recomputes each block: a shard holds about two [b, b]
      blocks (a block and its cotangent) besides the [b, D] text blocks,
      never [b, B] logits, and memory does not grow with the number of shards.

  Args:
    zimg: [b, D] L2-normalised image embeddings (this shard's rows).
    ztxt: [b, D] L2-normalised text embeddings, row i matching zimg row i.
    log_scale: scalar, log of the logit multiplier.
    axis_name: None, or the mesh axis name(s) the batch is sharded over.
    variant: "gather" or "ring".

  Returns:
    Scalar loss over the global batch.
  """
  _check_option("variant", variant, CLIP_VARIANTS)
  dtype = _compute_dtype(zimg, ztxt)
  zimg, ztxt = zimg.astype(dtype), ztxt.astype(dtype)
  scale = jnp.exp(jnp.asarray(log_scale, dtype))
  batch = zimg.shape[0] * ring.num_shards(axis_name)

  def block_lse(images, texts, own):
    del own  # the targets sᵢᵢ are scored apart, from the paired rows
    return _row_and_column_lse(scale * images @ texts.T)

  if variant == "gather":
    # This shard's columns of the [B, B] logits are its texts against all
    # images, i.e. the rows of the text→image problem.
    row_lse = jax.nn.logsumexp(scale * zimg @ ring.gather_rows(ztxt, axis_name).T, axis=1)
    column_lse = jax.nn.logsumexp(scale * ztxt @ ring.gather_rows(zimg, axis_name).T, axis=1)
  else:
    row_lse, column_lse = ring.ring_fold(block_lse, jnp.logaddexp, zimg, ztxt, axis_name)
  matching = scale * jnp.sum(zimg * ztxt, axis=1)  # sᵢᵢ of this shard's pairs
  local = jnp.sum(row_lse + column_lse - 2 * matching)
  return ring.sum_shards(local, axis_name) / (2 * batch)


def siglip_loss(zimg, ztxt, log_scale, bias, *, axis_name=None, variant="ring"):
  """Sigmoid loss of SigLIP (Zhai et al. 2023, Algorithm 1).

  −(1/B) Σᵢ Σⱼ log σ(zᵢⱼ · (exp(log_scale) · zimgᵢ · ztxtⱼ + bias)), zᵢⱼ = +1
  for the matching pair i = j and −1 otherwise.

  `variant` chooses how a sharded batch is reduced (without `axis_name` both
  compute the same [B, B] logits):
    "gather": all-gather the text embeddings; each shard forms its [b, B]
      logits rows at once.
    "ring": text blocks travel around the ring of shards (the paper's chunked
      implementation, Sec. 3.3); a shard forms one [b, b] logits block at a
      time and the backward pass recomputes them, so memory does not grow
      with the number of shards (see `ring.ring_sum`).

  Args:
    zimg: [b, D] L2-normalised image embeddings (this shard's rows).
    ztxt: [b, D] L2-normalised text embeddings, row i matching zimg row i.
    log_scale: scalar, log of the logit multiplier t.
    bias: scalar logit bias b.
    axis_name: None, or the mesh axis name(s) the batch is sharded over.
    variant: "gather" or "ring".

  Returns:
    Scalar loss over the global batch.
  """
  _check_option("variant", variant, SIGLIP_VARIANTS)
  dtype = _compute_dtype(zimg, ztxt)
  zimg, ztxt = zimg.astype(dtype), ztxt.astype(dtype)
  scale = jnp.exp(jnp.asarray(log_scale, dtype))
  bias = jnp.asarray(bias, dtype)
  b = zimg.shape[0]
  batch = b * ring.num_shards(axis_name)

  def neg_log_sigmoid_sum(images, texts, matching):
    logits = scale * images @ texts.T + bias
    signs = 2.0 * matching - 1.0
    return -jnp.sum(jax.nn.log_sigmoid(signs * logits))

  if variant == "gather":
    texts = ring.gather_rows(ztxt, axis_name)
    offset = ring.shard_index(axis_name) * b
    local = neg_log_sigmoid_sum(zimg, texts, _matching(b, batch, offset))
  else:
    # Only a shard's own text block holds its matching pairs; every other
    # block is all negatives (Algorithm 1's loop over neighbours).
    local = ring.ring_sum(
        lambda images, texts, own: neg_log_sigmoid_sum(images, texts, _matching(b, b, 0) & own),
        zimg, ztxt, axis_name)
  return ring.sum_shards(local, axis_name) / batch


def supcon_loss(features,
                labels=None,
                *,
                temperature=SUPCON_TEMPERATURE,
                base_temperature=SUPCON_TEMPERATURE,
                contrast_mode="all",
                axis_name=None):
  """Supervised contrastive loss, L_out of Khosla et al. (2020), eq. 2.

  For anchor a with positives P(a) (all other views whose label equals a's)
  and contrast set A(a) (all views except a itself):

    ℓ(a) = −(τ/τ_base) · (1/|P(a)|) Σ_{p∈P(a)} log( exp(a·p/τ) / Σ_{c∈A(a)} exp(a·c/τ) )

  and the loss is the mean of ℓ over the anchors with |P(a)| ≥ 1; an anchor
  without positives contributes nothing (0 if no anchor has one). labels=None
  gives SimCLR's NT-Xent (positives are the other views of the same sample).
  The anchors are every view (contrast_mode "all") or the first view of each
  sample ("one"); the contrast set is always every view.

  With `axis_name` each shard's anchors are its own samples and the contrast
  set is gathered from all shards; per-anchor sums and positive-anchor counts
  are summed over shards before dividing.

  Args:
    features: [b, V, D] L2-normalised features of V views (this shard's rows).
    labels: [b] integer class labels, or None.
    temperature: τ.
    base_temperature: τ_base, rescales the loss as in the reference code.
    contrast_mode: "all" or "one".
    axis_name: None, or the mesh axis name(s) the batch is sharded over.

  Returns:
    Scalar loss over the global batch.
  """
  _check_option("contrast_mode", contrast_mode, SUPCON_CONTRAST_MODES)
  dtype = _compute_dtype(features)
  features = features.astype(dtype)
  b, views, _ = features.shape
  offset = ring.shard_index(axis_name) * b
  if labels is None:
    labels = offset + jnp.arange(b)  # Each sample is its own class.

  anchor_views = views if contrast_mode == "all" else 1
  anchors = features[:, :anchor_views].reshape(b * anchor_views, -1)
  anchor_labels = jnp.repeat(labels, anchor_views)
  contrast = ring.gather_rows(features, axis_name)  # [B, V, D]
  contrast_labels = jnp.repeat(ring.gather_rows(labels, axis_name), views)
  contrast = contrast.reshape(contrast.shape[0] * views, -1)

  # Anchor (i, v) is global view (offset + i)·V + v, which is excluded from
  # its own contrast set A(a) and so also from its positives.
  anchor_ids = ((offset + jnp.arange(b))[:, None] * views +
                jnp.arange(anchor_views)[None, :]).reshape(-1)
  is_self = anchor_ids[:, None] == jnp.arange(contrast.shape[0])[None, :]
  positive = (anchor_labels[:, None] == contrast_labels[None, :]) & ~is_self

  logits = jnp.where(is_self, -jnp.inf, anchors @ contrast.T / temperature)
  log_prob = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)
  num_positives = jnp.sum(positive, axis=1)
  has_positive = num_positives > 0
  mean_log_prob_pos = (jnp.sum(jnp.where(positive, log_prob, 0.0), axis=1) /
                       jnp.maximum(num_positives, 1))
  local_sum = -(temperature / base_temperature) * jnp.sum(
      jnp.where(has_positive, mean_log_prob_pos, 0.0))
  count = ring.sum_shards(jnp.sum(has_positive).astype(dtype), axis_name)
  return ring.sum_shards(local_sum, axis_name) / jnp.maximum(count, 1)
