"""Diffusion in the EDM form (Karras et al. 2022): schedules, the denoising objective, samplers.

Pure functions of JAX arrays, usable on their own:
  schedules.py         get_schedule("vp" | "ve" | "edm" | "flow"): preconditioning, p_train(σ),
                       λ(σ); schedule_from_config(config.diffusion)
  objective.py         denoiser(raw_net_fn, schedule), denoising_loss(...) -> [B]
  guidance.py          classifier-free guidance: drop_labels, guided_denoiser (D_∅ + w·(D_c − D_∅));
                       autoguidance and σ intervals: extrapolate (D_ref + w·(D − D_ref))
  sigmas.py            σ grids (Karras eq. 5, log-linear)
  samplers.py          sample(denoiser, rng, shape, sampler=...), nfe(...), sample_NAME(...)
  gaussian_mixture.py  exact samples and the ideal denoiser of a Gaussian mixture
  mmd.py               the RBF-kernel MMD² two-sample statistic
"""
from jaxmm.diffusion.gaussian_mixture import GaussianMixture
from jaxmm.diffusion.gaussian_mixture import mixture_2d
from jaxmm.diffusion.guidance import NULL_LABEL
from jaxmm.diffusion.guidance import check_interval
from jaxmm.diffusion.guidance import drop_labels
from jaxmm.diffusion.guidance import extrapolate
from jaxmm.diffusion.guidance import guided_denoiser
from jaxmm.diffusion.mmd import mmd2
from jaxmm.diffusion.objective import denoiser
from jaxmm.diffusion.objective import denoising_loss
from jaxmm.diffusion.samplers import SAMPLERS
from jaxmm.diffusion.samplers import call_sigmas
from jaxmm.diffusion.samplers import nfe
from jaxmm.diffusion.samplers import sample
from jaxmm.diffusion.samplers import sample_ddim
from jaxmm.diffusion.samplers import sample_dpmpp_2m
from jaxmm.diffusion.samplers import sample_euler
from jaxmm.diffusion.samplers import sample_euler_maruyama
from jaxmm.diffusion.samplers import sample_heun
from jaxmm.diffusion.samplers import sample_langevin
from jaxmm.diffusion.samplers import sample_unipc
from jaxmm.diffusion.samplers import to_d
from jaxmm.diffusion.schedules import SCHEDULES
from jaxmm.diffusion.schedules import get_schedule
from jaxmm.diffusion.schedules import schedule_from_config
from jaxmm.diffusion.sigmas import karras_sigmas
from jaxmm.diffusion.sigmas import loglinear_sigmas
