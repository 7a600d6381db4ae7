"""Collectives over the batch axes that the contrastive losses share.

Every helper takes `axis_name`, which is None (the whole batch is local), one
mesh-axis name, or a tuple of names over which the batch is sharded together
(`('data', 'fsdp')`). With a tuple, shards are numbered row-major over the
names, which is the order in which `P(('data', 'fsdp'))` lays out the rows, so
shard k holds global rows [k·b, (k+1)·b). With None every helper is the
identity of a single shard, so each loss is written once for both cases.
"""
import jax


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

  `y`'s blocks travel around the ring of shards with `ppermute`, so a shard
  holds one [b, ...] block of `y` at a time and `block_fn` sees one block pair
  (typically a [b, b] logits block) at a time, never the [b, B] row. Step 0 is
  the shard's own block (`own=True`, where the matching pairs are), steps
  1…n−1 are foreign blocks.

  Reverse-mode AD through a loop keeps every step's residuals, which would be
  n blocks of [b, b]; the foreign-block function is therefore wrapped in
  `jax.checkpoint` so that the backward pass keeps only each step's incoming
  [b, ...] block of `y` and recomputes the logits block from it.

  Args:
    block_fn: (x [b, ...], y_block [b, ...], own: bool) -> scalar.
    x: [b, ...] this shard's stationary rows.
    y: [b, ...] this shard's rows of the passed operand.
    axis_name: None, a mesh-axis name or a tuple of them.

  Returns:
    This shard's partial sum (a scalar); sum it over shards for the total.
  """
  total = block_fn(x, y, True)
  n = num_shards(axis_name)
  if n == 1:
    return total
  foreign_block = jax.checkpoint(lambda x, y_block: block_fn(x, y_block, False))
  shift = [(k, (k + 1) % n) for k in range(n)]

  def step(_, carry):
    y_block, total = carry
    y_block = jax.lax.ppermute(y_block, axis_name, shift)
    return y_block, total + foreign_block(x, y_block)

  # The carry starts from the own block's value, which already varies across
  # shards, so no constant carry needs a `pcast` to device-varying.
  _, total = jax.lax.fori_loop(1, n, step, (y, total))
  return total
