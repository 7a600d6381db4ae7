"""Contrastive losses against float64 NumPy references, sharded and not."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from jaxmm import losses

# ---------------------------------------------------------------------------
# Independent float64 references, written from the papers' equations.


def _logsumexp(x):
  m = np.max(x)
  return m + np.log(np.sum(np.exp(x - m)))


def clip_reference(zimg, ztxt, log_scale):
  logits = np.exp(log_scale) * zimg @ ztxt.T
  n = len(logits)
  i2t = np.mean([_logsumexp(logits[i]) - logits[i, i] for i in range(n)])
  t2i = np.mean([_logsumexp(logits[:, j]) - logits[j, j] for j in range(n)])
  return (i2t + t2i) / 2


def siglip_reference(zimg, ztxt, log_scale, bias):
  n = len(zimg)
  total = 0.0
  for i in range(n):
    for j in range(n):
      z = 1.0 if i == j else -1.0
      logit = np.exp(log_scale) * zimg[i] @ ztxt[j] + bias
      total += np.logaddexp(0.0, -z * logit)  # −log σ(z·logit)
  return total / n


def supcon_reference(features, labels, temperature, base_temperature, contrast_mode):
  """Khosla et al. (2020) eq. 2 over view-major stacked views, as their code."""
  batch, views, _ = features.shape
  if labels is None:
    labels = np.arange(batch)
  contrast = features.transpose(1, 0, 2).reshape(views * batch, -1)
  contrast_labels = np.tile(labels, views)
  anchors = range(views * batch) if contrast_mode == "all" else range(batch)
  per_anchor = []
  for a in anchors:
    others = [c for c in range(views * batch) if c != a]
    positives = [c for c in others if contrast_labels[c] == contrast_labels[a]]
    if not positives:
      continue
    logits = contrast @ contrast[a] / temperature
    log_denominator = _logsumexp(logits[others])
    mean_log_prob = np.mean([logits[p] - log_denominator for p in positives])
    per_anchor.append(-(temperature / base_temperature) * mean_log_prob)
  return np.mean(per_anchor) if per_anchor else 0.0


# ---------------------------------------------------------------------------
# Inputs and the losses under test, with one signature for the sharded tests.


def _unit_rows(rng, *shape):
  x = rng.normal(size=shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _pair(seed, batch=16, dim=8):
  rng = np.random.default_rng(seed)
  zimg = _unit_rows(rng, batch, dim)
  # Texts correlated with their images so the diagonal matters.
  ztxt = zimg + 0.7 * rng.normal(size=(batch, dim))
  return zimg, ztxt / np.linalg.norm(ztxt, axis=-1, keepdims=True)


LABELS = np.array([0, 1, 2, 0, 1, 3, 0, 2, 4, 1, 2, 0, 3, 5, 1, 2])


def _clip(zimg, ztxt, log_scale, bias, **kw):
  del bias
  return losses.clip_loss(zimg, ztxt, log_scale, **kw)


def _siglip(variant):
  return lambda zimg, ztxt, log_scale, bias, **kw: losses.siglip_loss(
      zimg, ztxt, log_scale, bias, variant=variant, **kw)


def _supcon(contrast_mode):
  # The two "towers" are two views of the same samples; the scalars set the
  # temperature so that they too get a gradient.
  def loss(zimg, ztxt, log_scale, bias, labels=None, **kw):
    features = jnp.stack([zimg, ztxt], axis=1)
    temperature = 0.1 * jnp.exp(log_scale - bias)
    return losses.supcon_loss(features,
                              labels,
                              temperature=temperature,
                              base_temperature=0.1,
                              contrast_mode=contrast_mode,
                              **kw)

  return loss


SHARDED_LOSSES = {
    "clip": (_clip, None),
    "siglip_gather": (_siglip("gather"), None),
    "siglip_ring": (_siglip("ring"), None),
    "supcon_labels_all": (_supcon("all"), LABELS),
    "supcon_simclr_one": (_supcon("one"), None),
}

MESHES = {
    "data8": ((8,), ("data",), "data"),
    "data2_fsdp4": ((2, 4), ("data", "fsdp"), ("data", "fsdp")),
}


def _mesh(name):
  shape, names, axis_name = MESHES[name]
  mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))
  return mesh, axis_name


# ---------------------------------------------------------------------------
# Values against the references.

# Jitted once per signature: op-by-op dispatch would compile every primitive.
clip_loss = jax.jit(losses.clip_loss)
siglip_loss = jax.jit(losses.siglip_loss, static_argnames="variant")
supcon_loss = jax.jit(losses.supcon_loss, static_argnames="contrast_mode")


def test_clip_matches_reference():
  zimg, ztxt = _pair(0)
  got = clip_loss(jnp.asarray(zimg, jnp.float32), jnp.asarray(ztxt, jnp.float32),
                  losses.CLIP_INIT_LOG_SCALE)
  want = clip_reference(zimg, ztxt, losses.CLIP_INIT_LOG_SCALE)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_siglip_matches_reference_for_both_variants():
  zimg, ztxt = _pair(1)
  want = siglip_reference(zimg, ztxt, losses.SIGLIP_INIT_LOG_SCALE, losses.SIGLIP_INIT_BIAS)
  for variant in losses.SIGLIP_VARIANTS:
    got = siglip_loss(jnp.asarray(zimg, jnp.float32),
                      jnp.asarray(ztxt, jnp.float32),
                      losses.SIGLIP_INIT_LOG_SCALE,
                      losses.SIGLIP_INIT_BIAS,
                      variant=variant)
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=variant)


@pytest.mark.parametrize(
    "labels,views,contrast_mode,temperature",
    [
        (None, 2, "all", 0.07),  # SimCLR / NT-Xent.
        (None, 3, "one", 0.5),
        (LABELS, 2, "all", 0.07),  # SupCon.
        (LABELS, 3, "one", 0.2),
        (LABELS, 1, "all", 0.1),  # Classes 3, 4, 5 have a lone anchor.
    ])
def test_supcon_matches_reference(labels, views, contrast_mode, temperature):
  features = _unit_rows(np.random.default_rng(2), len(LABELS), views, 8)
  got = supcon_loss(jnp.asarray(features, jnp.float32),
                    None if labels is None else jnp.asarray(labels),
                    temperature=temperature,
                    base_temperature=0.07,
                    contrast_mode=contrast_mode)
  want = supcon_reference(features, labels, temperature, 0.07, contrast_mode)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_supcon_without_any_positive_is_zero_with_finite_gradient():
  features = jnp.asarray(_unit_rows(np.random.default_rng(3), 8, 1, 4), jnp.float32)
  labels = jnp.arange(8)
  value, grad = jax.value_and_grad(supcon_loss)(features, labels)
  assert value == 0.0
  assert np.all(np.isfinite(grad))


def test_supcon_anchors_without_positives_get_no_gradient_of_their_own():
  # With one view, anchor 8 (lone class 4) has no positives; its feature still
  # appears in others' denominators, so its gradient is finite and non-zero.
  features = jnp.asarray(_unit_rows(np.random.default_rng(4), 16, 1, 8), jnp.float32)
  grad = jax.grad(supcon_loss)(features, jnp.asarray(LABELS))
  assert np.all(np.isfinite(grad))
  assert np.any(grad[8] != 0.0)


def test_bfloat16_inputs_are_reduced_in_float32():
  zimg, ztxt = _pair(5, batch=64, dim=16)
  zimg16, ztxt16 = (jnp.asarray(x, jnp.bfloat16) for x in (zimg, ztxt))
  # The reference sees exactly the rounded bf16 values, so the only error
  # left is the reduction's: float32 (~1e-6) passes, bfloat16 (~1e-2) fails.
  zimg_r, ztxt_r = (np.asarray(x, np.float64) for x in (zimg16, ztxt16))
  cases = [
      (clip_loss(zimg16, ztxt16, losses.CLIP_INIT_LOG_SCALE),
       clip_reference(zimg_r, ztxt_r, losses.CLIP_INIT_LOG_SCALE)),
      (siglip_loss(zimg16, ztxt16, losses.SIGLIP_INIT_LOG_SCALE, losses.SIGLIP_INIT_BIAS),
       siglip_reference(zimg_r, ztxt_r, losses.SIGLIP_INIT_LOG_SCALE, losses.SIGLIP_INIT_BIAS)),
      (supcon_loss(jnp.stack([zimg16, ztxt16], 1)),
       supcon_reference(np.stack([zimg_r, ztxt_r], 1), None, 0.07, 0.07, "all")),
  ]
  for got, want in cases:
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_float64_inputs_stay_float64_under_x64():
  zimg, ztxt = _pair(6)
  features = np.stack([zimg, ztxt], 1)
  with jax.enable_x64(True):
    cases = [
        (clip_loss(jnp.asarray(zimg), jnp.asarray(ztxt), 1.7), clip_reference(zimg, ztxt, 1.7)),
        (siglip_loss(jnp.asarray(zimg), jnp.asarray(ztxt), 2.0,
                     -3.0), siglip_reference(zimg, ztxt, 2.0, -3.0)),
        (supcon_loss(jnp.asarray(features),
                     jnp.asarray(LABELS)), supcon_reference(features, LABELS, 0.07, 0.07, "all")),
    ]
    for got, want in cases:
      assert got.dtype == jnp.float64
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", ["clip", "siglip_ring", "supcon_labels_all"])
def test_gradient_matches_reference_finite_differences(name):
  loss, labels = SHARDED_LOSSES[name]
  references = {
      "clip":
          lambda zi, zt, s, b: clip_reference(zi, zt, s),
      "siglip_ring":
          siglip_reference,
      "supcon_labels_all":
          lambda zi, zt, s, b: supcon_reference(np.stack([zi, zt], 1), LABELS, 0.1 * np.exp(s - b),
                                                0.1, "all"),
  }
  reference = references[name]
  kw = {} if labels is None else {"labels": jnp.asarray(labels)}
  zimg, ztxt = _pair(7)
  args = (zimg, ztxt, 0.3, -0.2)
  with jax.enable_x64(True):
    grads = jax.jit(jax.grad(functools.partial(loss, **kw),
                             argnums=(0, 1, 2, 3)))(*(jnp.asarray(a) for a in args))
  # Directional derivative along a random direction of all four arguments.
  rng = np.random.default_rng(8)
  direction = [rng.normal(size=np.shape(a)) for a in args]
  eps = 1e-6
  plus = reference(*(a + eps * d for a, d in zip(args, direction)))
  minus = reference(*(a - eps * d for a, d in zip(args, direction)))
  want = (plus - minus) / (2 * eps)
  got = sum(np.sum(np.asarray(g) * d) for g, d in zip(grads, direction))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_invalid_options_raise():
  z = jnp.ones((4, 2)) / np.sqrt(2)
  with pytest.raises(ValueError, match="variant"):
    siglip_loss(z, z, 0.0, 0.0, variant="all_to_all")
  with pytest.raises(ValueError, match="contrast_mode"):
    supcon_loss(z[:, None], contrast_mode="two")


# ---------------------------------------------------------------------------
# Sharded == unsharded, in value and gradient.


def _sharded(loss, labels, mesh, axis_name, **shard_map_kw):
  """The loss over a batch sharded along `axis_name`, as a trainer calls it."""
  row = P(axis_name)
  if labels is None:
    fn = lambda zi, zt, s, b: loss(zi, zt, s, b, axis_name=axis_name)
    extra = ()
  else:
    fn = lambda zi, zt, s, b, y: loss(zi, zt, s, b, labels=y, axis_name=axis_name)
    extra = (row,)
  return jax.shard_map(fn, mesh=mesh, in_specs=(row, row, P(), P()) + extra, **shard_map_kw)


def _assert_trees_close(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mesh_name", list(MESHES))
@pytest.mark.parametrize("name", list(SHARDED_LOSSES))
def test_sharded_value_and_gradient_equal_unsharded(name, mesh_name):
  loss, labels = SHARDED_LOSSES[name]
  mesh, axis_name = _mesh(mesh_name)
  extra = () if labels is None else (jnp.asarray(labels),)
  grad_args = (0, 1, 2, 3)
  with jax.enable_x64(True):
    args = tuple(jnp.asarray(a) for a in (*_pair(9), 0.4, -1.5)) + extra
    want = jax.jit(
        jax.value_and_grad(lambda *a: loss(*a[:4], **({
            "labels": a[4]
        } if extra else {})),
                           argnums=grad_args))(*args)
    # The trainer's form: jax.grad of a function that wraps shard_map, with
    # the scalars replicated (in_specs P()) and the loss returned replicated.
    sharded = _sharded(loss, labels, mesh, axis_name, out_specs=P())
    got = jax.jit(jax.value_and_grad(sharded, argnums=grad_args))(*args)
  _assert_trees_close(got, want)


@pytest.mark.parametrize("name", list(SHARDED_LOSSES))
def test_gradient_taken_inside_shard_map_is_global(name):
  # A train step that runs wholly inside shard_map differentiates there; with
  # check_vma=True the replicated scalars' gradients are psummed by JAX.
  loss, labels = SHARDED_LOSSES[name]
  mesh, axis_name = _mesh("data2_fsdp4")
  extra = () if labels is None else (jnp.asarray(labels),)
  with jax.enable_x64(True):
    args = tuple(jnp.asarray(a) for a in (*_pair(10), 0.4, -1.5)) + extra
    want = jax.jit(
        jax.value_and_grad(lambda *a: loss(*a[:4], **({
            "labels": a[4]
        } if extra else {})),
                           argnums=(0, 1, 2, 3)))(*args)
    row = P(axis_name)
    inner = jax.value_and_grad(
        lambda *a: loss(*a[:4], axis_name=axis_name, **({
            "labels": a[4]
        } if extra else {})),
        argnums=(0, 1, 2, 3))
    got = jax.jit(
        jax.shard_map(inner,
                      mesh=mesh,
                      in_specs=(row, row, P(), P()) + (row,) * len(extra),
                      out_specs=(P(), (row, row, P(), P())),
                      check_vma=True))(*args)
  _assert_trees_close(got, want)


def test_every_device_returns_the_global_loss():
  mesh, axis_name = _mesh("data8")
  zimg, ztxt = _pair(11)
  per_device = jax.jit(
      jax.shard_map(
          lambda zi, zt, s, b: losses.siglip_loss(zi, zt, s, b, axis_name=axis_name)[None],
          mesh=mesh,
          in_specs=(P(axis_name),) * 2 + (P(), P()),
          out_specs=P(axis_name)))(jnp.asarray(zimg, jnp.float32), jnp.asarray(ztxt, jnp.float32),
                                   1.0, -2.0)
  assert per_device.shape == (8,)
  np.testing.assert_allclose(per_device, siglip_reference(zimg, ztxt, 1.0, -2.0), rtol=1e-5)


def test_ring_needs_much_less_memory_than_gather():
  # Value and gradient at global B = 4096 on 8 devices: gather holds [b, B]
  # logits rows (and their cotangents), ring one recomputed [b, b] block.
  mesh, axis_name = _mesh("data8")
  z = jax.ShapeDtypeStruct((4096, 32), jnp.float32)
  s = jax.ShapeDtypeStruct((), jnp.float32)

  def temp_bytes(variant):
    sharded = _sharded(_siglip(variant), None, mesh, axis_name, out_specs=P())
    compiled = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2, 3))).lower(z, z, s,
                                                                                s).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  block_bytes = 512 * 512 * 4
  ring, gather = temp_bytes("ring"), temp_bytes("gather")
  assert ring < gather / 4, (ring, gather)
  assert ring < 4 * block_bytes, (ring, block_bytes)
