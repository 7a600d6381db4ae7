"""Trainers by name: `config.experiment` picks one.

Each entry is the experiment's `build(config, workdir, mesh)`, which returns
the parts that `jaxmm.train.run` needs (init_params, loss_fn, train_data,
evaluators); `jaxmm.train.train` does the rest.
"""
import functools

from jaxmm.experiments import captioning
from jaxmm.experiments import catlip
from jaxmm.experiments import diffusion
from jaxmm.experiments import image_text
from jaxmm.experiments import supcon

EXPERIMENTS = {
    "image_text": image_text.build,
    "diffusion": diffusion.build,
    "supcon": supcon.build,
    "catlip": catlip.build,
    "cappa": functools.partial(captioning.build, contrastive=False),
    "coca": functools.partial(captioning.build, contrastive=True),
}
