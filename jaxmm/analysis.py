"""Restore any run for a notebook: its config, parameters, model functions and metrics.

  run = jaxmm.analysis.load_run("runs/siglip_shapes")          # the latest checkpoint
  run.config.model, run.step, run.params["image_tower"]...     # host numpy arrays
  run.embed_images(images), run.embed_texts(["a red circle"])  # image-text runs
  run.denoiser(x, sigma, labels), run.sample(num=48)            # diffusion runs
  run.caption(images, beam=3)                                   # captioning runs (CapPa, CoCa)
  run.metrics()["train/loss"]                                   # what the loop logged
  run.posthoc_ema(0.05)                                         # EDM2's post-hoc EMA

Without a mesh, arrays come back whole in host memory, whatever mesh trained
the run. With `mesh=` (e.g. `jaxmm.parallel.make_mesh({'data': 2, 'fsdp': 2,
'tensor': 2})`) orbax reads them straight into their shards on that mesh, placed
by the model's logical axis names and `parallel.DEFAULT_RULES` as the train
loop places them, and the run's model functions run on that mesh.

This module is the public face of `jaxmm.runs`, which does the reading
(`restore`, `run_files`) and the sampling (`sampling`).
"""
import contextlib
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jaxmm import data
from jaxmm import diffusion
from jaxmm import errors
from jaxmm import models
from jaxmm import parallel
from jaxmm.data import preprocess
from jaxmm.models import decoding
from jaxmm.runs import posthoc
from jaxmm.runs import restore
from jaxmm.runs import run_files
from jaxmm.runs import sampling
from jaxmm.runs.run_files import (NoRun, checkpoint_steps, latest_metrics, read_metrics,
                                  run_summary)

__all__ = [
    "EMBED_BATCH_SIZE", "NoRun", "Run", "checkpoint_steps", "latest_metrics", "load_run",
    "read_metrics", "run_summary"
]

# Images and texts per model call in `Run.embed_images` / `Run.embed_texts` (default).
EMBED_BATCH_SIZE = 256
# What each experiment's runs offer, named in the error for a function asked of the wrong kind.
_FUNCTIONS = {
    "image_text": "run.embed_images, run.embed_texts",
    "diffusion": "run.denoiser, run.sample",
    "catlip": "run.embed_images",
    "cappa": "run.caption, run.embed_images",
    "coca": "run.caption, run.embed_images, run.embed_texts",
}
# The experiments whose runs caption images.
CAPTIONING = ("cappa", "coca")


def load_run(workdir: str,
             step: int | None = None,
             *,
             mesh: jax.sharding.Mesh | None = None) -> "Run":
  """The run in `workdir` at checkpoint `step` (an int; default: the latest), as a `Run`.

  Without `mesh`, every array is host numpy. With `mesh`, arrays are jax Arrays
  sharded on it as the train loop shards them, read by orbax straight into
  their shards (`jaxmm.runs.restore`). Prints nothing on success.

  A run may still be training: a checkpoint rotated out while it is read is
  replaced by the newest one. A damaged checkpoint is passed over for the
  newest older one, with a warning (`run_files.read_checkpoint`).

  Raises:
    NoRun (a `UserError` and a FileNotFoundError): `workdir` is not a run's
      workdir, has no complete checkpoint, or none at `step`; the message
      names the steps saved, or the runs nearby.
    UserError: checkpoint `step` is damaged, or every checkpoint is.
    TypeError: `step` is not an int or None.
  """
  config, state, position = restore.restore_run(workdir, step, mesh)
  return Run(config=config,
             step=int(state["step"]),
             params=state["params"],
             opt_state=state["opt_state"],
             ema=state.get("ema", {}),
             model_state=state.get("model_state", {}),
             data_position=position,
             workdir=workdir,
             mesh=mesh)


@dataclasses.dataclass(frozen=True)
class Run:
  """A restored run: its arrays (host numpy, or jax Arrays sharded on `mesh`) and functions of
  its model, rebuilt from the saved config (`jaxmm.models.get_model(config.model)`).

  Image-text runs offer `embed_images` and `embed_texts`, CatLIP runs
  `embed_images`, diffusion runs `denoiser` and `sample`, captioning runs
  `caption` and `embed_images` (CoCa also `embed_texts`); asked of another
  kind of run, each fails naming the ones that run offers. `metrics()` is the logged metrics' table.
  """
  config: ml_collections.ConfigDict = dataclasses.field(repr=False)
  step: int
  params: Any = dataclasses.field(repr=False)  # pytree of arrays
  opt_state: Any = dataclasses.field(repr=False)  # pytree of arrays
  ema: dict[str, Any] = dataclasses.field(repr=False)  # name -> params-shaped pytree; {} if none
  model_state: dict[str, Any] = dataclasses.field(repr=False)  # e.g. {'batch_stats': ...}; {}
  data_position: dict = dataclasses.field(repr=False)
  workdir: str
  mesh: jax.sharding.Mesh | None = dataclasses.field(default=None, repr=False)

  @functools.cached_property
  def model(self) -> nn.Module:
    """The run's Flax module, rebuilt from `config.model`."""
    return models.get_model(self.config.model)

  def metrics(self) -> dict[str, np.ndarray]:
    """The logged metrics as columns {'step': [R], name: [R]}: `read_metrics(run.workdir)`."""
    return run_files.read_metrics(self.workdir)

  def posthoc_ema(self,
                  sigma_rel: float,
                  *,
                  step: int | None = None,
                  profiles: list[str] | None = None) -> Any:
    """The params of the power EMA with `sigma_rel` at `step` (default: the latest snapshot),
    reconstructed from the run's EMA snapshots up to it (EDM2 Sec. 3.2, Algorithm 3:
    `jaxmm.runs.posthoc.reconstruct`), like `params`: host numpy, or on the run's mesh.

    `profiles` limits the snapshots' averages used (default: every power EMA).
    Raises `UserError` for σ_rel outside (0, 0.28), a run without snapshots, or
    a step before the second snapshot.
    """
    return posthoc.reconstruct(self.workdir,
                               self.config,
                               sigma_rel,
                               self.params,
                               step=step,
                               profiles=profiles)

  def _require(self, function: str, *experiments: str) -> None:
    """Raises a UserError naming what this run offers unless it is a run of `experiments`."""
    if self.config.experiment not in experiments:
      offers = _FUNCTIONS.get(self.config.experiment, "none of the model functions")
      experiment = " or ".join(map(repr, experiments))
      raise errors.UserError(f"run.{function} needs an experiment={experiment} run, but "
                             f"{self.workdir!r} is an experiment={self.config.experiment!r} run; "
                             f"it offers {offers}")

  @contextlib.contextmanager
  def _on_mesh(self):
    """The mesh and the logical-axis rules that model calls trace under, as in the train step."""
    if self.mesh is None:
      yield
      return
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(parallel.DEFAULT_RULES):
      yield

  # Image-text runs.

  @functools.cached_property
  def _encoders(self) -> dict[str, Any]:
    """'image': jit(params, images [b, S, S, 3]) -> [b, E]; 'text': jit(params, tokens [b, L])."""
    model = self.model
    return {
        "image": jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image)),
        "text": jax.jit(lambda p, t: model.apply({"params": p}, t, method=model.encode_text)),
    }

  def _embed(self, tower: str, inputs: np.ndarray, batch_size: int, encode=None) -> np.ndarray:
    """`tower`'s embeddings [N, E] of inputs [N, ...] (or those of `encode`, a jitted
    (params, inputs) -> [n, ...]), in batches of `batch_size` (rounded up to split over the
    mesh's batch axes) with the last one padded: compiled once, and an input's embedding is the
    same bits whatever else is embedded with it."""
    errors.integer_at_least("batch_size", batch_size, 1)
    if not len(inputs):
      raise errors.UserError(f"run.embed_{tower}s got no {tower}s (N = 0)")
    shards = 1 if self.mesh is None else parallel.batch_shards(self.mesh)
    num = len(inputs)
    size = -(-batch_size // shards) * shards
    inputs = np.concatenate([inputs, np.repeat(inputs[:1], -num % size, axis=0)])
    params = self.params if self.mesh is not None else jax.device_put(self.params)
    outputs = []
    with self._on_mesh():
      for start in range(0, len(inputs), size):
        batch = inputs[start:start + size]
        if self.mesh is not None:
          batch = parallel.shard_whole_batch(batch, self.mesh)
        outputs.append(parallel.to_host((encode or self._encoders[tower])(params, batch)))
    return np.concatenate(outputs)[:num]

  def embed_images(self, images, *, batch_size: int = EMBED_BATCH_SIZE) -> np.ndarray:
    """Unit-norm float32 embeddings [N, E] of images [N, S, S, 3].

    S is the run's data.image_size. uint8 images are normalised as the run's
    input pipeline does (`jaxmm.data.preprocess.normalize` with the run's
    data.image_mean and data.image_std; [-1, 1] without them); float images
    are taken as already normalised (`.resize` makes size S). The image tower
    sees `batch_size` images at a time, so any N fits.
    """
    self._require("embed_images", "image_text", "catlip", *CAPTIONING)
    return self._embed("image", self._model_images(images, "embed_images"), batch_size)

  def _model_images(self, images, function: str) -> np.ndarray:
    """uint8 images [N, S, S, 3] normalised as the run's pipeline does, float ones as they are;
    a `UserError` naming run.`function` for another shape or dtype."""
    images = np.asarray(images)
    size = self.config.data.image_size
    if (images.ndim != 4 or images.shape[1:] != (size, size, 3) or
        not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating))):
      raise errors.UserError(f"run.{function} takes uint8 images [N, {size}, {size}, 3], or "
                             "float ones normalised as the run's pipeline does, not "
                             f"{images.dtype} {list(images.shape)}; "
                             f"jaxmm.data.preprocess.resize makes images of size {size}")
    if images.dtype == np.uint8:
      images = preprocess.normalize(images, self.config.data.get("image_mean"),
                                    self.config.data.get("image_std"))
    return images

  def embed_texts(self, texts, *, batch_size: int = EMBED_BATCH_SIZE) -> np.ndarray:
    """Unit-norm float32 embeddings [N, E] of N texts (a list of str), tokenised as in training
    (the run's data.tokenizer, cut to data.max_len), `batch_size` at a time."""
    self._require("embed_texts", "image_text", "coca")
    if isinstance(texts, (str, bytes)):
      raise errors.UserError(f"run.embed_texts takes a list of texts, not one text; pass "
                             f"[{texts!r}]")
    return self._embed("text", data.tokenize(self.config.data, list(texts)), batch_size)

  # Diffusion runs.

  @functools.cached_property
  def _denoise(self):
    """jit(params, x, sigma, labels, guidance, interval) -> D_w(x; σ) in the run's own
    preconditioning (its config's schedule and schedule_args); guidance as
    `sampling.guidance_argument` gives it, traced."""
    model, schedule = self.model, diffusion.schedule_from_config(self.config.diffusion)

    def denoise(params, x, sigma, labels, guidance, interval):
      return sampling.denoiser(model, schedule, params, labels, guidance,
                               interval=interval)(x, sigma)

    return jax.jit(denoise)

  def denoiser(self,
               x,
               sigma,
               labels=None,
               guidance: float = 1.0,
               ema: str | None = None,
               guidance_interval=None) -> np.ndarray:
    """D(x; σ), float32 numpy [B, ...]: the preconditioned denoiser's estimate of the clean x.

    Args:
      x: noisy examples [B, ...] (images [B, S, S, 3] on the data's [-1, 1]
        scale plus noise of std sigma).
      sigma: the noise level, a scalar or [B].
      labels: int [B, K] (K = len(model.num_classes); -1 drops a label), or
        None for the unconditional denoiser.
      guidance: the classifier-free guidance scale w of
        D_∅ + w·(D_c − D_∅) (`jaxmm.diffusion.guided_denoiser`); 1 is the
        conditional denoiser.
      ema: a parameter average's name, 'none' for the raw parameters;
        default: the run's first average.
      guidance_interval: (lo, hi): guidance only where lo < σ <= hi, the
        conditional denoiser elsewhere; default: every σ.
    """
    self._require("denoiser", "diffusion")
    x = np.asarray(x, np.float32)
    sigma = np.broadcast_to(np.asarray(sigma, np.float32), x.shape[:1])
    if labels is not None:
      labels = np.asarray(labels, np.int32)
      expected = (len(x), len(self.config.model.num_classes))
      if labels.shape != expected:
        raise errors.UserError(f"run.denoiser: labels must be int {list(expected)} (one per "
                               f"example and label key {tuple(self.config.data.label_keys)}), "
                               f"not {list(labels.shape)}")
    interval = diffusion.check_interval(guidance_interval, "guidance_interval")
    params = sampling.choose_params(self, ema)
    with self._on_mesh():
      return parallel.to_host(
          self._denoise(params, x, sigma, labels, sampling.guidance_argument(labels, guidance),
                        interval))

  @functools.cached_property
  def _sampler(self):
    """The run's `jaxmm.runs.sampling.make_sampler`, kept so that each setting compiles once."""
    return sampling.make_sampler(self.model, self.config)

  @functools.cached_property
  def _guided_samplers(self) -> dict:
    """Guide model config (JSON) -> `make_sampler` of this run guided by such a model."""
    return {}

  def _sampler_with(self, guide: "Run | None"):
    """The sampler of this run, autoguided by runs with `guide`'s model when one is given."""
    if guide is None:
      return self._sampler
    key = guide.config.model.to_json()
    if key not in self._guided_samplers:
      self._guided_samplers[key] = sampling.make_sampler(self.model, self.config, guide.model)
    return self._guided_samplers[key]

  def sample(self,
             num: int = 64,
             labels=None,
             sampler: str = "heun",
             num_steps: int = 18,
             guidance: float = 1.0,
             seed: int = 0,
             ema: str | None = None,
             guide: "Run | None" = None,
             guide_ema: str | None = None,
             guidance_interval=None,
             prompts=None) -> np.ndarray:
    """float32 samples [num, ...] (images on the data's [-1, 1] scale), as `jaxmm sample` draws
    them: `jaxmm.runs.sampling.sample_run`, so the same seed gives the same samples.

    `labels` are K-tuples cycled to `num` (default: the class grid, one row
    per class of the first label); a text-to-image run takes `prompts`, a list
    of captions cycled to `num`, instead; `sampler` and `num_steps` are those of
    `jaxmm.diffusion.sample`; `guidance`, `ema` and `guidance_interval` as in
    `denoiser`. With `guide`, another run of the same data, labels and schedule
    (`load_run(dir, step)`), guidance is autoguidance
    D_guide + w·(D_main − D_guide) with the guide's average `guide_ema`
    (default: its first). Compiled once per (num, sampler, num_steps) for
    this run, and once more for guidance other than 1, an interval, a guide.
    """
    self._require("sample", "diffusion")
    with self._on_mesh():
      images, _ = sampling.sample_run(self,
                                      ema=ema,
                                      num=num,
                                      sampler=sampler,
                                      num_steps=num_steps,
                                      guidance=guidance,
                                      labels=labels,
                                      seed=seed,
                                      compiled=self._sampler_with(guide),
                                      guide=guide,
                                      guide_ema=guide_ema,
                                      guidance_interval=guidance_interval,
                                      prompts=prompts)
    return images

  # Captioning runs.

  @functools.cached_property
  def _captioners(self) -> dict[int, Any]:
    """beam -> jit(params, images [b, S, S, 3]) -> caption tokens [b, L], filled by `caption`."""
    return {}

  def caption(self, images, *, beam: int = 1,
              batch_size: int = EMBED_BATCH_SIZE) -> list[str]:
    """The captions [N] of images [N, S, S, 3] (uint8, or float as in `embed_images`): beam
    search with `beam` prefixes per image (1: greedy) up to the decoder's max_len tokens
    (`jaxmm.models.decoding`), `batch_size` images at a time, detokenised by the run's
    data.tokenizer. Compiled once per beam for this run."""
    self._require("caption", *CAPTIONING)
    errors.integer_at_least("beam", beam, 1)
    images = self._model_images(images, "caption")
    if not len(images):
      raise errors.UserError("run.caption got no images (N = 0)")
    if beam not in self._captioners:
      self._captioners[beam] = jax.jit(
          functools.partial(decoding.caption_images, self.model, beam=beam))
    tokens = self._embed("image", images, batch_size, self._captioners[beam])
    tokenizer = data.get_tokenizer(self.config.data.tokenizer)
    return [tokenizer.decode(row) for row in tokens]
