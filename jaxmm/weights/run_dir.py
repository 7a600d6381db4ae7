"""A jaxmm run directory holding parameters trained elsewhere, and a model's parameter shapes.

`write_run` writes what `jaxmm train` would have written had it trained those
parameters, with the same code the train loop saves with: config.json and the
config history (`jaxmm.train.workdir`), and one checkpoint, step 0
(`jaxmm.runs.checkpoints`), whose state holds the parameters, the optimizer
state and averages that config.optim and config.ema start from them, and
whose input position is a fresh run's. `load_run`, `init_from`, the
evaluators and `jaxmm filter` read it as any run, and `jaxmm train` with the
same config and --workdir resumes it: fine-tuning.
"""
import json
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from jaxmm import config_loading
from jaxmm import models
from jaxmm.runs import checkpoints
from jaxmm.train import model_init
from jaxmm.train import optim
from jaxmm.train import state as state_lib
from jaxmm.train import workdir as workdir_lib

# What `jaxmm.data.train_iterator`'s get_state() says before the first batch.
FIRST_INPUT_POSITION = {"next_index": 0}


def abstract_params(config: ml_collections.ConfigDict) -> Any:
  """The parameters of the model `config.model` builds, as ShapeDtypeStructs (nothing computed)."""
  init_variables = model_init.make_init_variables(models.get_model(config.model), config)
  variables = jax.eval_shape(lambda rng: nn.unbox(init_variables(rng)), jax.random.key(0))
  return variables["params"]


def write_run(workdir: str, config: ml_collections.ConfigDict, params: Any) -> None:
  """Writes `params` (a tree of arrays shaped as `abstract_params(config)`) as a run of `config`
  in `workdir` (a new or empty folder)."""
  abstract = abstract_params(config)
  shapes = jax.tree.map(lambda a: tuple(a.shape), params)
  if shapes != jax.tree.map(lambda a: tuple(a.shape), abstract):
    raise ValueError("the parameters are not those of config.model's model")
  tx, _ = optim.make_optimizer(config.optim, config.total_steps)
  state = state_lib.first_state(jax.device_put(params), {}, tx, config.ema)
  workdir = workdir_lib.make_workdir(workdir)
  with workdir_lib.WorkdirLock(workdir):
    manager = checkpoints.make_manager(workdir, max_to_keep=config.keep_checkpoints)
    try:
      checkpoints.save(manager, 0, state, FIRST_INPUT_POSITION,
                       json.loads(config_loading.config_to_json(config)))
      checkpoints.finish(manager)
    finally:
      manager.close()
    workdir_lib.record_launch(workdir, config, 0)
