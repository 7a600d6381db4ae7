"""EDM (Karras et al. 2022) on a 2-D Gaussian mixture, where the ideal denoiser is known.

The data are exact samples of `jaxmm.diffusion.mixture_2d()` (3 components,
one of std 0.05), the network a residual MLP, and the evaluator the MMD²
between samples and exact draws (0 in expectation when they agree). A run
of a minute or two on a CPU, to try schedules and samplers on.

  jaxmm train --config configs/edm_toy2d.py --workdir runs/edm_toy2d
"""
import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.experiment = "diffusion"
  config.seed = 0
  config.total_steps = 3000
  config.batch_size = 512
  config.log_every = 100
  config.checkpoint_every = 1000
  config.eval_every = 1000
  config.keep_checkpoints = 3
  config.on_nonfinite = "stop"
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  config.data = dict(name="mixture_2d", shuffle_seed=None, label_keys=())
  config.model = dict(name="mlp_denoiser",
                      width=128,
                      depth=3,
                      mlp_dim=256,
                      embedding_type="positional",
                      num_classes=(),
                      dtype="float32",
                      remat=False)
  config.diffusion = dict(schedule="edm", label_dropout=0.0)
  config.optim = dict(name="adamw",
                      lr=2e-3,
                      weight_decay=0.0,
                      b1=0.9,
                      b2=0.99,
                      eps=1e-8,
                      momentum=0.9,  # SGD and Muon
                      warmup_steps=100,
                      schedule="cosine",
                      grad_clip_norm=1.0)
  config.ema = dict(decays=(), sigma_rels=(0.10,), snapshot_every=0)
  config.evals = dict(
      two_sample=dict(type="two_sample", every=None, num=4000, sampler="heun", num_steps=18))
  return config
