"""This process's share of an experiment's data, as its config describes it.

Every experiment reads its training stream and its eval splits the same way:
`config.data` names the dataset, `config.batch_size` the global batch, and
each process takes its rows of every global batch (`jaxmm.data`). The 2-D
toy `data.name='mixture_2d'` is a stream of exact samples of
`jaxmm.diffusion.mixture_2d()` (`data.MixtureStream`), a pure function of the step.
"""
import jax
import ml_collections

from jaxmm import data
from jaxmm import diffusion


def shuffle_seed(config: ml_collections.ConfigDict) -> int:
  """data.shuffle_seed, or the run's seed when it is None."""
  return config.seed if config.data.shuffle_seed is None else config.data.shuffle_seed


def train_data(config: ml_collections.ConfigDict, need_text: bool = True):
  """The checkpointable iterator over this process's rows of the training batches.

  need_text=False reads images (and labels) only, for datasets without captions.
  """
  rows = dict(global_batch_size=config.batch_size,
              seed=shuffle_seed(config),
              process_index=jax.process_index(),
              process_count=jax.process_count())
  if config.data.name == data.MIXTURE_2D:
    return data.MixtureStream(diffusion.mixture_2d(), **rows)
  return data.train_iterator(config.data, need_text=need_text, **rows)


def eval_batches(config: ml_collections.ConfigDict, split: str, batch_size: int):
  """A pass over `split` in this process's rows of global batches of `batch_size`."""
  return data.eval_batches(config.data,
                           split=split,
                           batch_size=batch_size,
                           process_index=jax.process_index(),
                           process_count=jax.process_count())
