"""Collectives over the batch axes that the contrastive losses share.

Every helper takes `axis_name`, which is None (the whole batch is local), one
mesh-axis name, or a tuple of names over which the batch is sharded together
(`('data', 'fsdp')`). With a tuple, shards are numbered row-major over the
names, which is the order in which `P(('data', 'fsdp'))` lays out the rows, so
shard k holds global rows [k·b, (k+1)·b). With None every helper is the
identity of a single shard, so each loss is written once for both cases.
"""
import jax
import jax.numpy as jnp


def num_shards(axis_name):
  """Number of shards the batch is split into (1 when `axis_name` is None)."""
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def shard_index(axis_name):
  """This shard's position k in the global batch (0 when unsharded)."""
  return 0 if axis_name is None else jax.lax.axis_index(axis_name)


def gather_rows(x, axis_name):
  """[b, ...] local rows -> [B, ...] global rows, in global order."""
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def sum_shards(x, axis_name):
  """Sum of `x` over all shards, returned on every shard."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def ring_sum(block_fn, x, y, axis_name):
  """Σₖ block_fn(x, yₖ, own=(k == 0)) over the blocks yₖ of every shard.

  A `ring_fold` whose only partial is a scalar that stays on the shard.

  Args:
    block_fn: (x [b, ...], y_block [b, ...], own: bool) -> scalar.
    x: [b, ...] this shard's stationary rows.
    y: [b, ...] this shard's rows of the passed operand.
    axis_name: None, a mesh-axis name or a tuple of them.

  Returns:
    This shard's partial sum (a scalar); sum it over shards for the total.
  """
  total, _ = ring_fold(lambda x, y_block, own: (block_fn(x, y_block, own), ()), jnp.add, x, y,
                       axis_name)
  return total


def ring_fold(block_fn, combine, x, y, axis_name):
  """Folds block_fn(x, yₖ, own=(k == 0)) with `combine` over the blocks yₖ of every shard.

  `y`'s blocks travel around the ring of shards with `ppermute`, so a shard
  holds one [b, ...] block of `y` at a time and `block_fn` sees one block pair
  (typically a [b, b] logits block) at a time, never the [b, B] row. Step 0 is
  the shard's own block (`own` true, where the matching pairs are), steps
  1…n−1 are foreign blocks; `own` is a traced boolean when sharded.

  `block_fn` returns two pytrees of partials: `stay` belongs to `x`'s rows
  (e.g. each row's log-sum-exp over the block's columns) and is folded on
  this shard; `travel` belongs to the block's rows of `y` (e.g. each column's
  log-sum-exp over `x`'s rows), so it travels with the block and is folded by
  every shard the block visits. Each step ends with a hop, so after n steps
  every block, and the `travel` partials of its rows, are back home.
  `combine(a, b)` is applied leaf by leaf and must be associative and
  commutative (a sum, a `logaddexp`).

  Reverse-mode AD through a loop keeps every step's residuals, which would be
  n blocks of [b, b]; the block function is therefore wrapped in
  `jax.checkpoint` so that the backward pass keeps only each step's incoming
  [b, ...] block of `y` (and the small partials) and recomputes the logits
  block from it. The own block is step 0 of the same loop rather than computed
  before it: outside a loop XLA may merge (CSE) its recomputation with the
  forward computation and keep the forward [b, b] block alive through the
  whole backward loop, a third block. That costs one extra hop of the
  [b, ...] block.

  Args:
    block_fn: (x [b, ...], y_block [b, ...], own: bool) -> (stay, travel).
    combine: (partial, partial) -> partial, for the leaves of stay and travel.
    x: [b, ...] this shard's stationary rows.
    y: [b, ...] this shard's rows of the passed operand.
    axis_name: None, a mesh-axis name or a tuple of them.

  Returns:
    (stay, travel): `stay` folded over all blocks for `x`'s rows, `travel`
    folded over all shards' `x` for this shard's own rows of `y`.
  """
  n = num_shards(axis_name)
  if n == 1:
    return block_fn(x, y, True)
  block = jax.checkpoint(block_fn)
  shift = [(k, (k + 1) % n) for k in range(n)]

  def step(i, carry):
    y_block, partials = carry
    own = i == 0
    new = block(x, y_block, own)
    # Step 0 starts the fold, so the carry's initial placeholders never count.
    partials = jax.tree.map(lambda acc, part: jnp.where(own, part, combine(acc, part)), partials,
                            new)
    stay, travel = partials
    y_block, travel = jax.lax.ppermute((y_block, travel), axis_name, shift)
    return y_block, (stay, travel)

  # The placeholders must be device-varying like the partials that replace
  # them, or the loop's carry would change type.
  axes = axis_name if isinstance(axis_name, tuple) else (axis_name,)
  placeholders = jax.tree.map(
      lambda s: jax.lax.pcast(jnp.zeros(s.shape, s.dtype), axes, to="varying"),
      jax.eval_shape(block_fn, x, y, True))
  _, partials = jax.lax.fori_loop(0, n, step, (y, placeholders))
  return partials
