"""The denoisers' conditioning: noise level and class labels -> one vector per example.

The noise level arrives as the preconditioning's c_noise (Karras et al. 2022,
Table 1: ¼·ln σ for EDM, 999·t for VP), is embedded with sinusoids, and each
of K integer labels (e.g. shape and colour) adds a learned vector; a two-layer
SiLU MLP then mixes them, as in DDPM++ / ADM (`map_layer0`, `map_layer1` of
Karras et al.'s networks) and DiT's timestep embedder. A label of -1 is
"dropped": it selects an extra learned row per label type, the null token of
classifier-free guidance (Ho & Salimans 2022).
"""
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import errors
from jaxmm.models.transformer import Dense, partitioned

EMBEDDING_TYPES = ("positional", "fourier")


def check_conditioning(num_classes: Sequence[int], embedding_type: str) -> None:
  """Raises a UserError naming `model.num_classes` or `model.embedding_type` if one is invalid."""
  errors.one_of("model.embedding_type", embedding_type, EMBEDDING_TYPES)
  if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in num_classes):
    raise errors.UserError(f"model.num_classes={tuple(num_classes)!r} must hold one class count "
                           "> 0 per label type, e.g. (6, 8), or be () for no labels")


def positional_embedding(noise_labels: jax.Array, features: int, max_period=10000.0) -> jax.Array:
  """[B] -> [B, features] float32: cos and sin of c_noise at frequencies 1 ... 1/max_period.

  The sinusoidal code of Vaswani et al. (2017), section 3.5, applied to the
  noise level as in DDPM (Ho et al. 2020) and DiT; frequencies are geometric
  from 1 down to (nearly) 1/max_period, so ¼·ln σ ∈ [-1.5, 1.2] and 999·t ∈
  [0, 999] both land on several well-resolved scales.
  """
  half = features // 2
  freqs = np.exp(-math.log(max_period) * np.arange(half) / half).astype(np.float32)
  angles = noise_labels.astype(jnp.float32)[:, None] * freqs
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def fourier_embedding(noise_labels: jax.Array, features: int, scale=16.0) -> jax.Array:
  """[B] -> [B, features] float32: random Fourier features (Tancik et al. 2020) of c_noise.

  As in NCSN++ (Song et al. 2021): frequencies f ~ N(0, scale²), drawn once and
  never trained; here they come from a fixed numpy seed, so they are a constant
  of the model rather than a variable to checkpoint.
  """
  freqs = np.random.default_rng(0).normal(size=features // 2) * scale
  angles = noise_labels.astype(jnp.float32)[:, None] * (2 * np.pi * freqs).astype(np.float32)
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  """x·(1 + scale) + shift, the adaptive normalisation of FiLM / adaLN (Perez et al. 2018)."""
  return x * (1 + scale) + shift


def zero_modulations(c: jax.Array, num: int, width: int, dtype, name: str) -> list[jax.Array]:
  """num vectors (shifts, scales, gates) regressed from c, all 0 at initialisation.

  adaLN-Zero (Peebles & Xie 2023, section 3.2). c is [B, 1, E] (or with more
  unit axes, to broadcast against the activations); each result is
  [B, 1, width]. Called inside a compact module, it adds that module's Dense
  `name`, whose kernel [E, num, width] has width on the residual stream
  ('embed') and the conditioning axis on 'mlp': in DiT these kernels hold a
  third of a block's parameters, so both axes must shard.

  Why the unit axis: XLA:CPU (jax 0.10.2) cannot run the bf16 kernel gradient
  of [B, E] x [E, num, width] ("Unsupported element type for DotThunk"); with
  c of rank 3 it compiles to a dot that it runs.
  """
  out = Dense((c.shape[-1], num, width), ("mlp", None, "embed"),
              1,
              dtype,
              kernel_init=nn.initializers.zeros,
              name=name)(c)
  return [out[..., i, :] for i in range(num)]


class LabelEmbedding(nn.Module):
  """Σ_k table_k[y_k]: one learned [num_classes[k] + 1, features] table per label type.

  Row num_classes[k] is the null token that a dropped label (-1) selects.
  Labels outside [-1, num_classes[k]) are a caller's bug and are clipped.
  """
  num_classes: Sequence[int]
  features: int

  @nn.compact
  def __call__(self, class_labels: jax.Array) -> jax.Array:
    """class_labels int [B, K] -> [B, features] float32."""
    if class_labels.shape[-1] != len(self.num_classes):
      raise ValueError(f"class_labels has {class_labels.shape[-1]} labels per example, "
                       f"num_classes={tuple(self.num_classes)} expects {len(self.num_classes)}")
    total = 0.0
    for k, n in enumerate(self.num_classes):
      # Class rows are left unsharded: their counts (6, 8, 1001, ...) rarely divide a mesh axis.
      table = self.param(f"table_{k}", partitioned(nn.initializers.normal(1.0), (None, "embed")),
                         (n + 1, self.features))
      labels = class_labels[:, k]
      total = total + jnp.take(table, jnp.where(labels < 0, n, labels), axis=0, mode="clip")
    return total


class Conditioning(nn.Module):
  """c = SiLU(fc1(SiLU(fc0(e(c_noise) + Σ_k E_k[y_k] + W·text)))), one vector per example.

  Attributes:
    features: width of c.
    noise_features: width of the sinusoidal noise embedding e and of the label embeddings.
    num_classes: class count of each label type; () for an unconditional model.
    embedding_type: 'positional' (DDPM++, ADM, DiT) or 'fourier' (NCSN++).
    dtype: operand dtype of the two products (float32 accumulation).
  """
  features: int
  noise_features: int
  num_classes: Sequence[int] = ()
  embedding_type: str = "positional"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self,
               noise_labels: jax.Array,
               class_labels: Optional[jax.Array] = None,
               text: Optional[jax.Array] = None):
    """noise_labels float [B], class_labels int [B, K] or None -> c [B, features] float32.

    With num_classes set, class_labels None drops every label (the unconditional
    branch of classifier-free guidance). text [B, W], a caption's pooled text
    vector (`caption_conditioning`), is projected and added to the noise embedding.
    """
    check_conditioning(self.num_classes, self.embedding_type)
    embed = positional_embedding if self.embedding_type == "positional" else fourier_embedding
    e = embed(noise_labels, self.noise_features)
    if self.num_classes:
      if class_labels is None:
        class_labels = jnp.full((e.shape[0], len(self.num_classes)), -1, jnp.int32)
      e = e + LabelEmbedding(self.num_classes, e.shape[-1], name="labels")(class_labels)
    elif class_labels is not None:
      raise ValueError("class_labels given to a model without labels (num_classes=())")
    if text is not None:
      e = e + Dense((text.shape[-1], e.shape[-1]), (None, "embed"), 1, self.dtype,
                    name="text")(text)
    h = Dense((e.shape[-1], self.features), ("embed", "mlp"), 1, self.dtype, name="fc0")(e)
    h = nn.with_logical_constraint(nn.silu(h), ("batch", "act_mlp"))
    c = Dense((self.features, self.features), ("mlp", "embed"), 1, self.dtype, name="fc1")(h)
    return nn.with_logical_constraint(nn.silu(c), ("batch", "act_embed"))
