"""Class-conditional diffusion on the bundled shapes dataset, shared by edm_shapes.py,
flow_shapes.py, vp_shapes.py and ve_shapes.py, which differ only in the schedule.

The model is conditioned on the shape and colour labels and trained with
classifier-free guidance's label dropout; 8 (shape, colour) pairs never occur
in training (jaxmm.data.shapes.HELD_OUT_PAIRS), so samples of them test
composition.

Variants (the `ARG` of `--config configs/NAME.py:ARG`):
  unet: a small DDPM++-style U-Net (the default) on 2×2 pixel patches, sized
        for a 2-core CPU: 1900 Muon steps of batch 64 take under 10 minutes there.
  dit:  a DiT of similar cost (patch 4, adaLN-Zero blocks).
"""
import dataclasses

import ml_collections

from jaxmm import diffusion

MODELS = {
    # Folding 2×2 patches into channels costs 0.6× the step of a channels-16
    # U-Net on the pixels, with 4× its parameters, and learns the shape
    # condition in fewer steps (README, Diffusion). Resolutions 16, 8, 4.
    "unet":
        dict(name="unet",
             channels=32,
             channel_mult=(1, 2, 2),
             num_blocks=1,
             attn_resolutions=(4,),
             num_heads=4,
             embedding_type="positional",
             dropout=0.0,
             patch_size=2),
    "dit":
        dict(name="dit",
             patch_size=4,
             width=128,
             depth=4,
             num_heads=4,
             mlp_dim=512,
             embedding_type="positional"),
}

# The optimizer and its learning rate per model. The U-Net learns shape fastest
# with Muon at AdamW's 8e-3 (README, Diffusion): 1900 Muon steps beat 2100 AdamW
# steps in the same time. The DiT, tuned with AdamW at 1e-3, scores better on
# every judge metric with Muon at that lr over the same 1900 steps.
OPTIMIZERS = {"unet": ("muon", 8e-3), "dit": ("muon", 1e-3)}

# Where EDM's training noise sits, ln σ ~ N(P_mean, P_std²): shape is decided at
# high noise, and Table 1's P_mean = -1.2 (median σ 0.30) leaves it to few
# examples. +0.4 (median σ 1.5) triples shape accuracy after 1200 steps, and
# P_std 0.8 (Table 1: 1.2) spends fewer examples on the extremes.
EDM_NOISE = {"P_mean": 0.4, "P_std": 0.8}


def get_config(arg: str, *, schedule: str) -> ml_collections.ConfigDict:
  """The config of variant `arg` (a model in MODELS) trained with `schedule`."""
  if arg not in MODELS:
    raise ValueError(f"unknown config variant {arg!r}; valid: {sorted(MODELS)}")
  config = ml_collections.ConfigDict()
  config.experiment = "diffusion"
  config.seed = 0
  config.total_steps = 1900
  config.batch_size = 64
  config.log_every = 100
  config.checkpoint_every = 700
  config.eval_every = 1900
  config.keep_checkpoints = 3
  config.on_nonfinite = "stop"
  config.mesh = dict(data=-1, fsdp=1, tensor=1)

  config.data = dict(
      name="shapes",
      data_dir=None,
      source="tfds",  # or "wds", "parquet" (jaxmm.data.shards)
      files=None,
      eval_files=None,
      max_skipped_fraction=0.01,
      train_split="train",
      eval_split="test",
      image_key="image",
      text_key=None,  # images and labels only
      cache=True,
      image_size=32,
      augment=False,
      shuffle_seed=None,
      label_keys=("shape", "colour"),
      # Weighted sources (jaxmm.data.source_mixture); None: this one source.
      mixture=None)

  config.model = dict(MODELS[arg], num_classes=(6, 8), dtype="float32", remat=False)

  # The objective (jaxmm.diffusion.get_schedule) with its hyperparameters, each
  # overridable (--config.diffusion.schedule_args.P_mean=-0.4), and classifier-free
  # guidance's label dropout (Ho & Salimans 2022 use 0.1-0.2).
  schedule_args = dataclasses.asdict(diffusion.get_schedule(schedule))
  if schedule == "edm":
    schedule_args.update(EDM_NOISE)
  config.diffusion = dict(schedule=schedule, schedule_args=schedule_args, label_dropout=0.1)

  optimizer, lr = OPTIMIZERS[arg]
  config.optim = dict(
      name=optimizer,
      lr=lr,
      weight_decay=0.0,
      b1=0.9,
      b2=0.99,
      eps=1e-8,
      momentum=0.95,  # Muon (and SGD)
      warmup_steps=100,
      schedule="cosine",
      grad_clip_norm=1.0)

  # Sampling and evaluation use the first average. EDM2's power EMA adapts its
  # length to the run (σ_rel = 0.10 of the training time). snapshot_every=N snapshots the
  # power EMAs every N steps, from which `jaxmm ema` reconstructs any other σ_rel.
  config.ema = dict(decays=(), sigma_rels=(0.10,), snapshot_every=0)

  # Evaluators (config.evals.NAME = dict(type=TYPE, every=N, ...); every=None: every
  # eval_every steps): a grid of every (shape, colour) pair, and a judge: a trained
  # image-text run (`make train` writes runs/siglip_shapes) that scores samples of every
  # pair for conditional accuracy and FD. None: no judge. from_sigmas: noise levels from
  # which test images are also denoised and judged, e.g. (0.3, 1.0). guide.run: autoguidance
  # by that run (e.g. configs/edm_shapes.py:guide) instead of classifier-free guidance;
  # guidance_interval: (lo, hi) to guide only where lo < σ <= hi (docs/guidance.md).
  config.evals = dict(
      sample_grid=dict(type="sample_grid",
                       every=None,
                       rows=6,
                       per_row=8,
                       sampler="heun",
                       num_steps=18,
                       guidance=2.0),
      judge=dict(type="judge",
                 every=None,
                 run=None,
                 per_pair=10,
                 sampler="heun",
                 num_steps=18,
                 guidance=2.0,
                 guide=dict(run=None, step=None, ema=None),
                 guidance_interval=None,
                 from_sigmas=()))
  return config
