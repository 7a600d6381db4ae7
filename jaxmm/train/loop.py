"""The generic training loop that every experiment runs.

An experiment supplies what differs (how parameters are initialised, the
loss, the input iterator, the evaluators); the loop owns the rest: config
checks, the workdir lock, optimizer, sharded state (a new run's parameter
subtrees copied from another run, `init_from`), resume from the newest
intact checkpoint, the compiled step, metrics, checkpoints, evaluation,
progress, and what happens on faults: a non-finite step (`nonfinite`), a
failed save, SIGTERM or Ctrl-C (`stop_signals`).
"""
from collections.abc import Callable, Mapping, Sequence
import contextlib
import json
import logging
from typing import Any, Protocol

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tqdm

from jaxmm import config_loading
from jaxmm import errors
from jaxmm.errors import Interrupted
from jaxmm import parallel
from jaxmm.runs import checkpoints
from jaxmm.runs import ema_snapshots
from jaxmm.train import compatibility
from jaxmm.train import ema as ema_lib
from jaxmm.train import init_from
from jaxmm.train import nonfinite
from jaxmm.train import workdir as workdir_lib
from jaxmm.train.metrics import MetricWriter, mean_metrics
from jaxmm.train.optim import check_optim_config, make_optimizer
from jaxmm.train.state import (InitVariables, TrainState, abstract_state, init_state,
                               state_shardings)
from jaxmm.train.step import LossFn, compile_train_step, make_train_step
from jaxmm.train.stop_signals import AgreedStop, StopSignals

log = logging.getLogger("jaxmm")

# evaluator(state, step) -> {metric name: value}; it gets the whole state (params, ema, ...)
Evaluator = Callable[[Any, int], Mapping[str, float]]
# (every, evaluator): called at every multiple of `every` steps and at the last step
# (`jaxmm.evaluators.build_evaluators` makes them from config.evals).
ScheduledEvaluator = tuple[int, Evaluator]


class ResumableIterator(Protocol):
  """Host-local batches; the position round-trips through get_state/set_state.

  An iterator may also have `metrics()`: counts (e.g. {'skipped': n}) over the
  batches since its last call, which the loop logs under `data/` at every
  log step, summed over processes.
  """

  def __next__(self) -> dict:
    ...

  def get_state(self) -> dict:
    ...

  def set_state(self, state: dict) -> None:
    ...


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises `UserError` for a bad value of a key the loop reads, before anything is built."""
  for key in ("total_steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
    errors.integer_at_least(key, config[key], 1)
  errors.integer_at_least("eval_every", config.eval_every, 0)
  errors.one_of("on_nonfinite", config.on_nonfinite, nonfinite.POLICIES)
  ema_lib.check_config(config.ema)
  check_optim_config(config.optim, config.total_steps)


def data_metrics(train_data: ResumableIterator) -> dict[str, int]:
  """`train_data.metrics()`, summed over processes; {} for an iterator without `metrics`."""
  counts = train_data.metrics() if hasattr(train_data, "metrics") else {}
  if counts and jax.process_count() > 1:  # every process logs at the same steps
    totals = multihost_utils.process_allgather(np.array(list(counts.values()), np.int64))
    counts = dict(zip(counts, np.sum(totals, axis=0).tolist()))
  return counts


def init_rng(seed: int) -> jax.Array:
  """Parameter initialisation draws from a stream of its own (steps use fold_in(seed, step))."""
  return jax.random.fold_in(jax.random.key(seed), -1 % 2**31)


def build_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               init_variables: InitVariables, loss_fn: LossFn):
  """The optimizer, the train state's shardings and the compiled train step of `config`.

  Returns:
    (tx, shardings, train_step): what `init_state` / `abstract_state` need to
    create or restore the state, and train_step(state, global batch) -> (state, metrics).
  """
  tx, schedule = make_optimizer(config.optim, config.total_steps)
  shardings = state_shardings(init_variables, tx, config.ema, mesh)
  train_step = compile_train_step(
      make_train_step(loss_fn, tx, schedule, config.seed, config.ema,
                      config.on_nonfinite == "skip"), mesh, shardings)
  return tx, shardings, train_step


def train(config: ml_collections.ConfigDict, workdir: str,
          build: Callable[[ml_collections.ConfigDict, str, jax.sharding.Mesh], dict]) -> TrainState:
  """Checks `config`, makes its mesh, builds the experiment's parts with `build` and runs them.

  `build(config, workdir, mesh)` returns the keyword arguments of `run`
  (init_variables, loss_fn, train_data, evaluators). The loop's own checks come
  first, so a bad value fails before any data or model is built.
  """
  check_config(config)
  workdir_lib.make_workdir(workdir)
  mesh = parallel.make_mesh(config.mesh)
  parallel.check_batch_size(config.batch_size, mesh)
  return run(config, workdir, mesh=mesh, **build(config, workdir, mesh))


def _restore_newest_intact(manager, target: TrainState, config: ml_collections.ConfigDict):
  """(state, input position) of the newest checkpoint that reads back, or None if there is none.

  Damaged checkpoints are set aside on the way (`checkpoints.set_aside`); a
  checkpoint that the current config cannot resume is a `UserError`. Whether a
  failed restore met a damaged checkpoint is decided by reading its files back
  (`checkpoints.unreadable`): orbax's errors name no cause reliably, and any
  other failure keeps its own error.
  """
  current = json.loads(config_loading.config_to_json(config))
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      saved_config = checkpoints.restore_config(manager, step)
      changes = compatibility.config_changes(saved_config, current)
      compatibility.check_resumable(checkpoints.state_metadata(manager, step), target, changes,
                                    step)
      state, position = checkpoints.restore(manager, step, target)
    except errors.UserError:
      raise
    except Exception:  # pylint: disable=broad-except
      damage = checkpoints.unreadable(manager, step)
      if damage is None:
        raise
      checkpoints.set_aside(manager, step, damage)
      continue
    compatibility.warn_changes(changes, step)
    log.info("resuming from checkpoint %d", step)
    return state, position
  return None


def run(config: ml_collections.ConfigDict,
        workdir: str,
        *,
        mesh: jax.sharding.Mesh,
        init_variables: InitVariables,
        loss_fn: LossFn,
        train_data: ResumableIterator,
        evaluators: Sequence[ScheduledEvaluator] = ()) -> TrainState:
  """Trains `config.total_steps` steps in `workdir`, resuming from its newest intact checkpoint.

  Args:
    init_variables: rng -> {'params': ..., other collections} with logical axis
      names (a flax `init`); the other collections become `state.model_state`.
    loss_fn: (params, model_state, global batch, rng) -> (loss, metrics,
      model_state); traced once.
    train_data: host-local batches, resumable; its `metrics()`, if any, are
      logged under `data/` (`data_metrics`).
    evaluators: (every, evaluator(state, step) -> metrics) pairs: each
      evaluator is called every `every` steps and at the last step; its
      metrics are logged under 'eval/'.

  Returns:
    The final train state.

  Raises:
    UserError: a bad config, a busy workdir, a checkpoint the config cannot
      resume, or divergence under on_nonfinite='stop' (`nonfinite.Diverged`).
    Interrupted: SIGTERM or SIGINT stopped the run after saving the current step.
  """
  check_config(config)
  parallel.check_batch_size(config.batch_size, mesh)
  workdir = workdir_lib.make_workdir(workdir)
  # Process 0 speaks for the run: with several processes on a shared file
  # system the others would find its lock taken.
  with workdir_lib.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    return _train(config, workdir, mesh, init_variables, loss_fn, train_data, evaluators)


def _train(config, workdir, mesh, init_variables, loss_fn, train_data, evaluators) -> TrainState:
  log.info("mesh: %s", parallel.describe(mesh))
  tx, shardings, train_step = build_step(config, mesh, init_variables, loss_fn)
  manager = checkpoints.make_manager(workdir, max_to_keep=config.keep_checkpoints)
  snapshot_every = ema_lib.snapshot_every(config.ema)
  # Every manager that writes; a snapshot's manager keeps every step.
  managers = [manager] + ([ema_snapshots.make_manager(workdir)] if snapshot_every else [])
  target = abstract_state(init_variables, tx, config.ema, shardings)
  resumed = _restore_newest_intact(manager, target, config)
  if resumed is None:
    state = init_state(init_variables, tx, config.ema, shardings, init_rng(config.seed))
    state = init_from.apply(state, config.get("init_from"), shardings)
  else:
    state, position = resumed
    train_data.set_state(position)
  start = int(state.step)
  if jax.process_index() == 0:
    workdir_lib.record_launch(workdir, config, start)

  writer = MetricWriter(workdir)
  pending = []  # (step, device metrics) not yet checked for finiteness
  interval = []  # host metrics of the finite steps since the last log

  def check_pending():
    """Fetches the pending metrics (one transfer) and applies the non-finite policy."""
    if pending:
      host = jax.device_get([metrics for _, metrics in pending])
      interval.extend(
          nonfinite.finite_steps([step for step, _ in pending], host, config.on_nonfinite,
                                 manager.latest_step()))
      pending.clear()

  def log_interval(step):
    """Logs the mean metrics of the finite steps since the last log (none: nothing)."""
    check_pending()
    if interval:
      scalars = mean_metrics(interval)
      if config.on_nonfinite == "skip":
        scalars["skipped_steps"] = int(state.skipped_steps)
      bar.set_postfix(loss=f"{scalars['loss']:.4f}")
      writer.write_scalars(step, scalars, prefix="train/")
    interval.clear()
    writer.write_scalars(step, data_metrics(train_data), prefix="data/")

  def save(step):
    check_pending()  # never write a non-finite state
    checkpoints.save(manager, step, state, train_data.get_state(),
                     json.loads(config_loading.config_to_json(config)))

  def snapshot(step):
    check_pending()
    ema_snapshots.save(managers[1], step,
                       {name: state.ema[name] for name in ema_lib.power_sigma_rels(config.ema)})

  def evaluate(step, last):
    """Runs the evaluators due at `step`: those whose `every` divides it, all at the last."""
    due = [evaluator for every, evaluator in evaluators if last or step % every == 0]
    if due:
      check_pending()  # never evaluate a non-finite model
    for evaluator in due:
      writer.write_scalars(step, evaluator(state, step), prefix="eval/")

  bar = tqdm.tqdm(total=config.total_steps,
                  initial=start,
                  unit="step",
                  dynamic_ncols=True,
                  disable=jax.process_index() != 0,
                  smoothing=0.1)
  with StopSignals() as signals:
    stop = AgreedStop(signals)
    try:
      for step in range(start + 1, config.total_steps + 1):
        batch = parallel.global_batch(next(train_data), mesh)
        state, metrics = train_step(state, batch)
        pending.append((step, metrics))
        bar.update(1)
        for writer_manager in managers:
          checkpoints.raise_if_save_failed(writer_manager)
        last = step == config.total_steps
        if step % config.log_every == 0 or last:
          log_interval(step)
        if step % config.checkpoint_every == 0 or last:
          save(step)
        if snapshot_every and (step % snapshot_every == 0 or last):
          snapshot(step)
        evaluate(step, last)
        signum = stop.poll()
        if signum is not None:
          log_interval(step)  # the steps since the last log, which a resume will not repeat
          if manager.latest_step() != step:
            save(step)
          raise Interrupted(signum, step)
    finally:
      # Whatever ends the loop, the checkpoint being written is completed (or
      # its error raised) before the process moves on.
      bar.close()
      writer.close()
      with contextlib.ExitStack() as closing:
        for writer_manager in managers:
          closing.callback(writer_manager.close)
        for writer_manager in managers:
          checkpoints.finish(writer_manager)
  return state
