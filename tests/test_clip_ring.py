"""clip_loss(variant="ring") against a float64 NumPy reference, its memory, and its config."""
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from jaxmm import config_loading
from jaxmm import errors
from jaxmm import losses
from jaxmm import parallel
from jaxmm.experiments import image_text
from jaxmm.losses import ring


def reference_value_and_grad(zimg, ztxt, log_scale):
  """Dense CLIP loss in float64 and its analytic gradient w.r.t. (zimg, ztxt, log_scale).

  L = ½·(meanᵢ [LSEⱼ sᵢⱼ − sᵢᵢ] + meanⱼ [LSEᵢ sᵢⱼ − sⱼⱼ]), s = t·zimg·ztxtᵀ,
  t = exp(log_scale); ∂L/∂s = (row softmax + column softmax − 2·I) / (2B).
  """
  scale = np.exp(log_scale)
  logits = scale * zimg @ ztxt.T
  batch = len(logits)
  row_max = logits.max(axis=1, keepdims=True)
  row_lse = row_max + np.log(np.exp(logits - row_max).sum(axis=1, keepdims=True))
  column_max = logits.max(axis=0, keepdims=True)
  column_lse = column_max + np.log(np.exp(logits - column_max).sum(axis=0, keepdims=True))
  diagonal = np.diag(logits)
  value = (np.mean(row_lse[:, 0] - diagonal) + np.mean(column_lse[0] - diagonal)) / 2
  d_logits = (np.exp(logits - row_lse) + np.exp(logits - column_lse) -
              2 * np.eye(batch)) / (2 * batch)
  return value, (scale * d_logits @ ztxt, scale * d_logits.T @ zimg, np.sum(d_logits * logits))


def embeddings(seed, batch=32, dim=8):
  """Unit-norm [batch, dim] image and text rows, each text near its image."""
  rng = np.random.default_rng(seed)
  zimg = rng.normal(size=(batch, dim))
  ztxt = zimg + 0.7 * rng.normal(size=(batch, dim))
  return tuple(z / np.linalg.norm(z, axis=1, keepdims=True) for z in (zimg, ztxt))


MESHES = {"data8": ((8,), "data"), "data2_fsdp4": ((2, 4), ("data", "fsdp"))}


def make_mesh(mesh_name):
  """(mesh, axis_name) of MESHES[mesh_name]; the batch is sharded over every axis."""
  shape, axis_name = MESHES[mesh_name]
  names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
  return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape)), axis_name


def ring_loss(mesh_name, *, inside=False):
  """(zimg [B, D], ztxt [B, D], log_scale) -> (value, grads) of the ring over a mesh.

  `inside`: the gradient is taken within the shard_map (a train step run
  wholly there) instead of around it (the trainer's form).
  """
  mesh, axis_name = make_mesh(mesh_name)
  loss = lambda zi, zt, s: losses.clip_loss(zi, zt, s, axis_name=axis_name, variant="ring")
  rows = (P(axis_name), P(axis_name), P())
  if inside:
    return jax.jit(
        jax.shard_map(jax.value_and_grad(loss, argnums=(0, 1, 2)),
                      mesh=mesh,
                      in_specs=rows,
                      out_specs=(P(), rows)))
  return jax.jit(
      jax.value_and_grad(jax.shard_map(loss, mesh=mesh, in_specs=rows, out_specs=P()),
                         argnums=(0, 1, 2)))


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_ring_fold_brings_each_columns_partials_home(mesh_name):
  # Row LSEs stay on the shard of their image; column LSEs travel with their
  # text block and must end on the shard that holds that text.
  mesh, axis_name = make_mesh(mesh_name)

  def row_and_column_lse(images, texts, own):
    del own
    logits = images @ texts.T
    return jax.nn.logsumexp(logits, axis=1), jax.nn.logsumexp(logits, axis=0)

  fold = jax.jit(
      jax.shard_map(
          lambda x, y: ring.ring_fold(row_and_column_lse, jnp.logaddexp, x, y, axis_name),
          mesh=mesh,
          in_specs=(P(axis_name), P(axis_name)),
          out_specs=(P(axis_name), P(axis_name))))
  zimg, ztxt = embeddings(5)
  logits = 3.0 * zimg @ ztxt.T
  with jax.enable_x64(True):
    rows, columns = fold(jnp.asarray(3.0 * zimg), jnp.asarray(ztxt))
  np.testing.assert_allclose(rows, np.log(np.exp(logits).sum(axis=1)), rtol=1e-12)
  np.testing.assert_allclose(columns, np.log(np.exp(logits).sum(axis=0)), rtol=1e-12)


def test_reference_gradient_matches_its_finite_differences():
  zimg, ztxt = embeddings(0)
  args = (zimg, ztxt, 1.3)
  _, grads = reference_value_and_grad(*args)
  rng = np.random.default_rng(1)
  direction = [rng.normal(size=np.shape(a)) for a in args]
  eps = 1e-6
  plus, _ = reference_value_and_grad(*(a + eps * d for a, d in zip(args, direction)))
  minus, _ = reference_value_and_grad(*(a - eps * d for a, d in zip(args, direction)))
  got = sum(np.sum(g * d) for g, d in zip(grads, direction))
  np.testing.assert_allclose(got, (plus - minus) / (2 * eps), rtol=1e-7)


@pytest.mark.parametrize("inside", [False, True], ids=["grad_outside", "grad_inside"])
@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_ring_value_and_gradient_equal_dense_reference(mesh_name, inside):
  zimg, ztxt = embeddings(2)
  log_scale = losses.CLIP_INIT_LOG_SCALE
  want_value, want_grads = reference_value_and_grad(zimg, ztxt, log_scale)
  with jax.enable_x64(True):
    value, grads = ring_loss(mesh_name, inside=inside)(jnp.asarray(zimg), jnp.asarray(ztxt),
                                                       jnp.asarray(log_scale))
  assert value.dtype == jnp.float64 and all(g.dtype == jnp.float64 for g in grads)
  np.testing.assert_allclose(value, want_value, rtol=1e-12)
  for got, want, name in zip(grads, want_grads, ("zimg", "ztxt", "log_scale")):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13, err_msg=name)


def test_ring_is_stable_at_large_logits_and_reduces_bfloat16_in_float32():
  # A logit scale of 1000 puts logits near ±1000, where exp overflows even in
  # float64: only a log-sum-exp that subtracts its running max stays finite.
  zimg, ztxt = (jnp.asarray(z, jnp.bfloat16) for z in embeddings(3, batch=64, dim=16))
  log_scale = math.log(1000.0)
  value, grads = ring_loss("data8")(zimg, ztxt, jnp.float32(log_scale))
  # The reference sees the rounded bf16 values, so what is left is float32's
  # error. A logit exp(s)·⟨zᵢ, zⱼ⟩ of unit vectors in D dimensions is a D-term
  # dot product, one exp and one product: off by at most (D + 2)·u·exp(s) with
  # u = 2⁻²⁴ (Higham's γ_n), about 1e-3 here. Each cross-entropy term
  # lseᵢ − sᵢᵢ, and each term Σⱼ pᵢⱼ·sᵢⱼ − sᵢᵢ of ∂L/∂log_scale, moves by at most
  # twice a logit's error plus the softmax weights' shift (≤ 0.3 of it, at a
  # near tie), and so do their means: 3 logit errors bound both. Reduced in
  # bfloat16 (u = 2⁻⁸) the bound would be ~12.
  dim = zimg.shape[1]
  logit_error = (dim + 2) * 2.0**-24 * math.exp(log_scale)
  want_value, want_grads = reference_value_and_grad(np.asarray(zimg, np.float64),
                                                    np.asarray(ztxt, np.float64), log_scale)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, want_value, rtol=0, atol=3 * logit_error)
  # The embeddings' gradients come back in their dtype, bfloat16: within its
  # rounding (2⁻⁸) of the largest entry.
  for got, want in zip(grads[:2], want_grads[:2]):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float64),
                               want,
                               rtol=0,
                               atol=2**-8 * np.max(np.abs(want)))
  np.testing.assert_allclose(grads[2], want_grads[2], rtol=0, atol=3 * logit_error)


def compiled_value_and_grad(variant, batch, dim=32):
  """The compiled value and gradient of clip_loss over 8 devices, from shapes alone."""
  mesh, _ = make_mesh("data8")
  loss = jax.shard_map(lambda zi, zt, s: losses.clip_loss(zi, zt, s, axis_name="data",
                                                          variant=variant),
                       mesh=mesh,
                       in_specs=(P("data"), P("data"), P()),
                       out_specs=P())
  z = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(z, z, scalar).compile()


def largest_array(compiled):
  """Element count of the largest array in a compiled (per-device) HLO module."""
  shapes = re.findall(r"\b(?:pred|[a-z]+\d+)\[([\d,]*)\]", compiled.as_text())
  return max(math.prod(int(d) for d in shape.split(",") if d) for shape in shapes)


def test_ring_holds_no_b_by_B_logits_and_about_two_b_by_b_blocks():
  batch = 65536  # compiled, never run: the gather's [b, B] rows would be 2 GiB
  b = batch // 8
  ring_step = compiled_value_and_grad("ring", batch)
  # The check can see [b, B] logits: the gather variant forms them.
  assert largest_array(compiled_value_and_grad("gather", batch)) == b * batch
  assert largest_array(ring_step) <= b * b
  # A recomputed logits block and its cotangent, plus the [b, D] text blocks
  # kept for the backward pass; a third [b, b] block would be a residual kept
  # across the loop.
  temp_blocks = ring_step.memory_analysis().temp_size_in_bytes / (b * b * 4)
  assert temp_blocks < 2.5, temp_blocks


def test_invalid_variant_is_a_one_line_error_listing_the_valid_ones():
  z = jnp.ones((4, 2)) / np.sqrt(2)
  with pytest.raises(ValueError) as e:
    losses.clip_loss(z, z, 0.0, variant="ring_bidirectional")
  message = str(e.value)
  assert "\n" not in message and "variant must be one of ('gather', 'ring')" in message


def test_clip_config_selects_the_ring_and_check_config_rejects_unknown_variants():
  config = config_loading.load_config("configs/clip_shapes.py")
  image_text.check_config(config_loading.apply_overrides(config, ["loss.variant=ring"]))
  with pytest.raises(errors.UserError, match="loss.variant='all_to_all' is not one of 'gather'"):
    image_text.check_config(config_loading.apply_overrides(config, ["loss.variant=all_to_all"]))
  # The experiment's loss built from the config passes blocks around the
  # devices (collective permutes) instead of gathering, with the same value.
  mesh = parallel.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})
  zimg, ztxt = (jnp.asarray(z, jnp.float32) for z in embeddings(4))
  aux = {"log_scale": jnp.float32(losses.CLIP_INIT_LOG_SCALE)}
  compiled = {}
  for variant in losses.CLIP_VARIANTS:
    config.loss.variant = variant
    loss = image_text.make_contrastive_loss(config.loss, mesh)
    compiled[variant] = jax.jit(loss).lower(zimg, ztxt, aux).compile()
  assert "collective-permute" in compiled["ring"].as_text()
  assert "collective-permute" not in compiled["gather"].as_text()
  np.testing.assert_allclose(compiled["ring"](zimg, ztxt, aux),
                             compiled["gather"](zimg, ztxt, aux),
                             rtol=1e-6)
