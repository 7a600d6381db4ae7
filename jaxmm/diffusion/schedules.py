"""Diffusion objectives in the EDM form (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models", Table 1).

Every schedule here trains a denoiser D(x; σ) of x = x0 + σ·n, n ~ N(0, I),
wrapped around a raw network F as (eq. 7)

    D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)),

with σ drawn from a training distribution p_train(σ) and the loss
λ(σ)·‖D(x; σ) − x0‖² (eq. 8). A schedule gives `precondition(sigma) ->
(c_skip, c_out, c_in, c_noise)`, `sample_sigma(rng, shape)` (p_train) and
`loss_weight(sigma)` (λ), plus `sigma_min` and `sigma_max`, the range its
sampler uses (Table 1, "Sampling"). The scaled variable x_t = s(t)·x of VP
and flow never appears: their c_in is s(t), so the network still sees x_t.

Flow matching / rectified flow ("flow") in this form. With the convention

    x_t = (1 − t)·x0 + t·ε,   v = ε − x0 (the network's target),

write x_t = (1 − t)·(x0 + σ·ε) with σ = t/(1 − t), i.e. s(t) = 1 − t = 1/(1 + σ)
and t = σ/(1 + σ). The network sees x_t = x/(1 + σ), so c_in = 1/(1 + σ). From
x0 = x_t − t·v = x/(1 + σ) − σ/(1 + σ)·v, the denoiser with F = v is

    c_skip = 1/(1 + σ),   c_out = −σ/(1 + σ).

Then D − x0 = c_out·(F − v), so λ(σ) = 1/c_out² = ((1 + σ)/σ)² gives
λ·‖D − x0‖² = ‖F − v‖², the flow-matching loss. Training draws t from the
logit-normal distribution of Esser et al. (2024, Sec. 3.1, "rf/lognorm(0.00, 1.00)"):
logit(t) = log(t/(1 − t)) = log σ, so it is log σ ~ N(P_mean, P_std²), the same
form as EDM's p_train. c_noise = t ∈ [0, 1); a network whose time embedding
expects [0, 1000] scales it itself.
"""
from collections.abc import Mapping
import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxmm import errors


def _check_range(schedule, lo, hi):
  errors.positive(f"{schedule}.sigma_min", lo)
  if not hi > lo:
    raise errors.UserError(f"{schedule}.sigma_max={hi!r} must be > sigma_min={lo!r}")


@dataclasses.dataclass(frozen=True)
class VP:
  """Variance preserving (Song et al. 2021), Table 1 column "VP".

  σ(t) = sqrt(exp(½β_d·t² + β_min·t) − 1), trained on
  t ~ U(ε_t, 1) and sampled from σ(1) ≈ 152 down to σ(ε_s) ≈ 0.0105.
  """
  beta_d: float = 19.9
  beta_min: float = 0.1
  M: int = 1000
  epsilon_t: float = 1e-5
  epsilon_s: float = 1e-3

  def __post_init__(self):
    errors.positive("vp.beta_d", self.beta_d)
    errors.non_negative("vp.beta_min", self.beta_min)
    errors.positive("vp.epsilon_t", self.epsilon_t)
    errors.positive("vp.epsilon_s", self.epsilon_s)

  def sigma(self, t):
    return jnp.sqrt(jnp.expm1(0.5 * self.beta_d * t**2 + self.beta_min * t))

  def sigma_inv(self, sigma):
    """t such that σ(t) = sigma (the positive root of the quadratic in t)."""
    return (jnp.sqrt(self.beta_min**2 + 2 * self.beta_d * jnp.log1p(sigma**2)) -
            self.beta_min) / self.beta_d

  @property
  def sigma_min(self):
    return math.sqrt(
        math.expm1(0.5 * self.beta_d * self.epsilon_s**2 + self.beta_min * self.epsilon_s))

  @property
  def sigma_max(self):
    return math.sqrt(math.expm1(0.5 * self.beta_d + self.beta_min))

  def precondition(self, sigma):
    c_skip = jnp.ones_like(sigma)
    c_out = -sigma
    c_in = 1 / jnp.sqrt(sigma**2 + 1)
    c_noise = (self.M - 1) * self.sigma_inv(sigma)
    return c_skip, c_out, c_in, c_noise

  def sample_sigma(self, rng, shape, dtype=jnp.float32):
    t = jax.random.uniform(rng, shape, dtype, minval=self.epsilon_t, maxval=1.0)
    return self.sigma(t)

  def loss_weight(self, sigma):
    return 1 / sigma**2


@dataclasses.dataclass(frozen=True)
class VE:
  """Variance exploding (Song et al. 2021), Table 1 column "VE".

  σ(t) = sqrt(t); trained on log σ ~ U(log σ_min, log σ_max), sampled over the
  same range.
  """
  sigma_min: float = 0.02
  sigma_max: float = 100.0

  def __post_init__(self):
    _check_range("ve", self.sigma_min, self.sigma_max)

  def precondition(self, sigma):
    c_skip = jnp.ones_like(sigma)
    c_out = sigma
    c_in = jnp.ones_like(sigma)
    c_noise = jnp.log(0.5 * sigma)
    return c_skip, c_out, c_in, c_noise

  def sample_sigma(self, rng, shape, dtype=jnp.float32):
    log_sigma = jax.random.uniform(rng,
                                   shape,
                                   dtype,
                                   minval=math.log(self.sigma_min),
                                   maxval=math.log(self.sigma_max))
    return jnp.exp(log_sigma)

  def loss_weight(self, sigma):
    return 1 / sigma**2


@dataclasses.dataclass(frozen=True)
class EDM:
  """Karras et al. (2022), Table 1 column "Ours" (eqs. 7 and 8, Sec. 5).

  Trained on log σ ~ N(P_mean, P_std²) with λ(σ) = 1/c_out(σ)², which gives
  the network's target unit variance at every σ; sampled over [0.002, 80].
  """
  sigma_data: float = 0.5
  P_mean: float = -1.2
  P_std: float = 1.2
  sigma_min: float = 0.002
  sigma_max: float = 80.0

  def __post_init__(self):
    errors.positive("edm.sigma_data", self.sigma_data)
    errors.positive("edm.P_std", self.P_std)
    _check_range("edm", self.sigma_min, self.sigma_max)

  def precondition(self, sigma):
    sd2 = self.sigma_data**2
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * self.sigma_data / jnp.sqrt(sigma**2 + sd2)
    c_in = 1 / jnp.sqrt(sigma**2 + sd2)
    c_noise = 0.25 * jnp.log(sigma)
    return c_skip, c_out, c_in, c_noise

  def sample_sigma(self, rng, shape, dtype=jnp.float32):
    return jnp.exp(self.P_mean + self.P_std * jax.random.normal(rng, shape, dtype))

  def loss_weight(self, sigma):
    return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data)**2


@dataclasses.dataclass(frozen=True)
class Flow:
  """Rectified flow / flow matching, x_t = (1 − t)·x0 + t·ε, v = ε − x0 (module docstring).

  Trained on logit(t) = log σ ~ N(P_mean, P_std²) (Esser et al. 2024, Sec. 3.1);
  sampled over σ ∈ [1e-3, 1e3], t ∈ [1/1001, 1000/1001], a range symmetric in
  logit(t) that reaches 6.9 standard deviations of the default p_train.
  """
  P_mean: float = 0.0
  P_std: float = 1.0
  sigma_min: float = 1e-3
  sigma_max: float = 1e3

  def __post_init__(self):
    errors.positive("flow.P_std", self.P_std)
    _check_range("flow", self.sigma_min, self.sigma_max)

  def precondition(self, sigma):
    c_skip = 1 / (1 + sigma)
    c_out = -sigma / (1 + sigma)
    c_in = 1 / (1 + sigma)
    c_noise = sigma / (1 + sigma)  # t
    return c_skip, c_out, c_in, c_noise

  def sample_sigma(self, rng, shape, dtype=jnp.float32):
    return jnp.exp(self.P_mean + self.P_std * jax.random.normal(rng, shape, dtype))

  def loss_weight(self, sigma):
    return ((1 + sigma) / sigma)**2


SCHEDULES = {"vp": VP, "ve": VE, "edm": EDM, "flow": Flow}


def get_schedule(name, **kw):
  """The schedule `name` ∈ SCHEDULES with its hyperparameters overridden by `kw`.

  Defaults are those of Karras et al. (2022), Table 1: VP β_d = 19.9,
  β_min = 0.1, M = 1000, ε_t = 1e-5 (ε_s = 1e-3 for sampling); VE σ ∈ [0.02, 100];
  EDM σ_data = 0.5, P_mean = −1.2, P_std = 1.2, σ ∈ [0.002, 80].
  """
  cls = SCHEDULES[errors.one_of("schedule", name, SCHEDULES)]
  fields = [f.name for f in dataclasses.fields(cls)]
  for key in kw:
    errors.one_of(f"{name} schedule argument", key, fields)
  return cls(**kw)


def schedule_from_config(section: Mapping):
  """The schedule of a config's `diffusion` section: `schedule` (a name in SCHEDULES) with the
  hyperparameters in `schedule_args` (the defaults where a run was saved without that key).

  Training, sampling and a restored run's denoiser all build it here, so that a
  run trained with, e.g., another σ_data is denoised with its own preconditioning.
  """
  name, schedule_args = section["schedule"], section.get("schedule_args") or {}
  cls = SCHEDULES[errors.one_of("diffusion.schedule", name, SCHEDULES)]
  foreign = sorted(set(schedule_args) - {f.name for f in dataclasses.fields(cls)})
  if foreign:
    raise errors.UserError(f"diffusion.schedule_args has {', '.join(foreign)}, which the {name!r} "
                           f"schedule does not take; start from configs/{name}_shapes.py rather "
                           "than overriding diffusion.schedule, or remove those arguments")
  return get_schedule(name, **schedule_args)
