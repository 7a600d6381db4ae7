"""FLIP's patch dropout: kept token count, random distinct subsets, no effect at evaluation,
the training FLOP count, and the error for a bad ratio."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import parallel
from jaxmm.errors import UserError
from jaxmm.experiments import image_text
from jaxmm.models import get_model, model_flops_per_example
from jaxmm.models.patch_dropout import drop_patches, kept_count
from jaxmm.train import model_init
from test_models import BATCH, MAX_LEN, batch, tiny_config as tiny_model_config


def two_tower_config(ratio, pool="gap"):
  """test_models' tiny two-tower (16x16 images in 4x4 patches: 16 tokens) with patch dropout."""
  config = tiny_model_config()
  config.image.update(patch_dropout=ratio, pool=pool)
  return config


def init(ratio, pool="gap"):
  model = get_model(two_tower_config(ratio, pool))
  # Jitted: one compilation instead of one per operation of an op-by-op call.
  return model, nn.unbox(jax.jit(model.init)(jax.random.key(0), *batch()))["params"]


@pytest.mark.parametrize("pool,extra", [("gap", 0), ("cls", 1), ("map", 0)])
def test_encoder_sees_the_kept_tokens_in_training_only(pool, extra):
  model, params = init(0.5, pool)

  def encoder_length(train=False, rngs=None):
    apply = functools.partial(model.apply,
                              capture_intermediates=True,
                              mutable=["intermediates"],
                              train=train)
    (zimg, _, _), state = jax.jit(apply)({"params": params}, *batch(), rngs=rngs)
    assert zimg.shape == (BATCH, 16) and np.all(np.isfinite(zimg))
    return state["intermediates"]["image_tower"]["encoder"]["__call__"][0].shape[1]

  assert encoder_length(train=True, rngs={"patch_dropout": jax.random.key(1)}) == 8 + extra
  assert encoder_length() == 16 + extra


def test_kept_patches_are_distinct_originals_that_vary_with_the_rng():
  n, ratio = 16, 0.75
  ids = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[None, :, None], (BATCH, n, 2))
  kept = np.asarray(drop_patches(ids, jax.random.key(0), ratio))
  assert kept.shape == (BATCH, 4, 2)
  for row in kept[:, :, 0]:
    assert len(set(row)) == len(row) and set(row) <= set(range(n))
  np.testing.assert_array_equal(kept[:, :, 0], kept[:, :, 1])  # whole tokens move together
  other = np.asarray(drop_patches(ids, jax.random.key(1), ratio))
  assert not np.array_equal(kept, other)
  assert len({tuple(row) for row in kept[:, :, 0]}) > 1  # each example draws its own subset


def test_training_output_depends_on_the_rng():
  model, params = init(0.5)
  apply = jax.jit(functools.partial(model.apply, train=True))
  train = lambda seed: apply({"params": params}, *batch(),
                             rngs={"patch_dropout": jax.random.key(seed)})[0]
  assert not np.allclose(train(0), train(1))


def test_evaluation_equals_the_model_without_dropout():
  model, params = init(0.5)
  plain, _ = init(0.0)
  got = jax.jit(model.apply)({"params": params}, *batch())
  want = jax.jit(plain.apply)({"params": params}, *batch())
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_training_flops_follow_the_kept_tokens():
  # 32x32 images, 4x4 patches: N = 64 tokens; ratio 0.75 keeps L = 16. D = 32, M = 64, depth 2.
  config = two_tower_config(0.75)
  n, kept, d, m, e, depth = 64, 16, 32, 64, 16, 2
  stem = 2 * n * (4 * 4 * 3) * d

  def encoder(length):
    return depth * (8 * length * d * d + 4 * length * length * d + 4 * length * d * m)

  text_and_heads = encoder(MAX_LEN) + 2 * (d + d) * e
  flops = lambda **kw: model_flops_per_example(config, image_size=32, **kw)
  assert flops() == stem + encoder(n) + text_and_heads
  assert flops(train=True) == stem + encoder(kept) + text_and_heads
  config.image.patch_dropout = 0.0
  assert flops(train=True) == stem + encoder(n) + text_and_heads


def test_kept_count_floors_without_rounding_error():
  assert kept_count(10, 0.9) == 1  # (1 − 0.9)·10 is 0.9999999999999998 in floating point
  assert kept_count(16, 0.5) == 8 and kept_count(16, 0.0) == 16 and kept_count(5, 0.5) == 2


# 0.99 keeps ⌊0.01·4⌋ = 0 of the tiny config's 4 patches (and ⌊0.16⌋ of init's 16).
@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, 0.99])
def test_bad_ratio_fails_with_one_line_naming_the_key(ratio, tiny_config):
  config = tiny_config("siglip", f"model.image.patch_dropout={ratio}")
  with pytest.raises(UserError, match=r"model\.image\.patch_dropout=") as error:
    image_text.check_config(config)
  assert "\n" not in str(error.value)
  with pytest.raises(UserError):
    init(ratio)


def test_the_training_loss_draws_patches_from_the_step_rng(tiny_config):
  config = tiny_config("siglip", "model.image.patch_dropout=0.5", "model.image.patch_size=4")
  model = get_model(config.model)
  mesh = parallel.make_mesh(config.mesh)
  params = nn.unbox(jax.jit(model_init.make_init_variables(model, config))(
      jax.random.key(0)))["params"]
  images = jax.random.normal(jax.random.key(1), (16, 16, 16, 3))
  batch = {"image": images, "tokens": jnp.ones((16, 8), jnp.int32)}
  loss_fn = jax.jit(image_text.make_loss_fn(model, config.loss, mesh))
  with jax.set_mesh(mesh):
    losses = [float(loss_fn(params, {}, batch, jax.random.key(seed))[0]) for seed in (0, 0, 1)]
  assert losses[0] == losses[1] != losses[2]
