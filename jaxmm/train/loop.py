"""The generic training loop that every experiment runs.

An experiment supplies what differs (how parameters are initialised, the
loss, the input iterator, the evaluators); the loop owns the rest: optimizer,
sharded state, resume, the compiled step, metrics, checkpoints, evaluation,
progress, and a final checkpoint on SIGTERM (preemption).
"""
from collections.abc import Callable, Mapping, Sequence
import json
import logging
import os
import signal
from typing import Any, Protocol

import jax
import ml_collections
import tqdm

from jaxmm import config_loading
from jaxmm import parallel
from jaxmm.train import checkpoints
from jaxmm.train.metrics import MetricWriter, mean_metrics
from jaxmm.train.optim import make_optimizer
from jaxmm.train.state import TrainState, abstract_state, init_state, state_shardings
from jaxmm.train.step import LossFn, compile_train_step, make_train_step

log = logging.getLogger("jaxmm")

# evaluator(params, step) -> {metric name: value}
Evaluator = Callable[[Any, int], Mapping[str, float]]


class ResumableIterator(Protocol):
  """Host-local batches; the position round-trips through get_state/set_state."""

  def __next__(self) -> dict:
    ...

  def get_state(self) -> dict:
    ...

  def set_state(self, state: dict) -> None:
    ...


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config_loading.config_to_json(config))


def init_rng(seed: int) -> jax.Array:
  """Parameter initialisation draws from a stream of its own (steps use fold_in(seed, step))."""
  return jax.random.fold_in(jax.random.key(seed), -1 % 2**31)


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def build_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               init_params: Callable[[jax.Array], Any], loss_fn: LossFn):
  """The optimizer, the train state's shardings and the compiled train step of `config`.

  Returns:
    (tx, shardings, train_step): what `init_state` / `abstract_state` need to
    create or restore the state, and train_step(state, global batch) -> (state, metrics).
  """
  tx, schedule = make_optimizer(config.optim, config.total_steps)
  shardings = state_shardings(init_params, tx, mesh)
  train_step = compile_train_step(make_train_step(loss_fn, tx, schedule, config.seed), mesh,
                                  shardings)
  return tx, shardings, train_step


def run(config: ml_collections.ConfigDict,
        workdir: str,
        *,
        mesh: jax.sharding.Mesh,
        init_params: Callable[[jax.Array], Any],
        loss_fn: LossFn,
        train_data: ResumableIterator,
        evaluators: Sequence[Evaluator] = ()) -> TrainState:
  """Trains `config.total_steps` steps in `workdir`, resuming from its latest checkpoint.

  Args:
    init_params: rng -> parameters with logical axis names (e.g. a flax `init`).
    loss_fn: (params, global batch, rng) -> (loss, metrics); traced once.
    train_data: host-local batches, resumable.
    evaluators: called every `config.eval_every` steps and at the end.

  Returns:
    The final train state.
  """
  parallel.check_batch_size(config.batch_size, mesh)
  os.makedirs(workdir, exist_ok=True)
  write_config(config, workdir)
  log.info("mesh: %s", parallel.describe(mesh))

  tx, shardings, train_step = build_step(config, mesh, init_params, loss_fn)
  manager = checkpoints.make_manager(workdir, max_to_keep=config.keep_checkpoints)
  latest = manager.latest_step()
  if latest is None:
    state = init_state(init_params, tx, shardings, init_rng(config.seed))
  else:
    log.info("resuming from checkpoint %d in %s", latest, workdir)
    state, position = checkpoints.restore(manager, latest,
                                          abstract_state(init_params, tx, shardings))
    train_data.set_state(position)

  def save(step):
    checkpoints.save(manager, step, state, train_data.get_state(),
                     json.loads(config_loading.config_to_json(config)))

  def evaluate(step):
    for evaluator in evaluators:
      writer.write_scalars(step, evaluator(state.params, step), prefix="eval/")

  writer = MetricWriter(workdir)
  start = int(state.step)
  history = []
  bar = tqdm.tqdm(total=config.total_steps,
                  initial=start,
                  unit="step",
                  dynamic_ncols=True,
                  disable=jax.process_index() != 0,
                  smoothing=0.1)
  try:
    with _Preemption() as preemption:
      for step in range(start + 1, config.total_steps + 1):
        batch = parallel.global_batch(next(train_data), mesh)
        state, metrics = train_step(state, batch)
        history.append(metrics)
        bar.update(1)
        if step % config.log_every == 0 or step == config.total_steps:
          scalars = mean_metrics(history)
          history = []
          bar.set_postfix(loss=f"{scalars['loss']:.4f}")
          writer.write_scalars(step, scalars, prefix="train/")
        if step % config.checkpoint_every == 0 or step == config.total_steps:
          save(step)
        if config.eval_every and (step % config.eval_every == 0 or step == config.total_steps):
          evaluate(step)
        if preemption.requested:
          log.warning("SIGTERM: saving checkpoint %d and stopping", step)
          if manager.latest_step() != step:
            save(step)
          break
  finally:
    # A crash (an exception) still completes the checkpoint being written.
    bar.close()
    manager.wait_until_finished()
    manager.close()
    writer.close()
  return state
