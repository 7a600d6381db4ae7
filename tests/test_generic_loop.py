"""The generic loop on its own: a toy loss and a toy iterator, against a float64 NumPy trainer.

`jaxmm.train.run` knows nothing of any experiment: given init_variables, a
loss, a resumable iterator and (every, evaluator) pairs it must train exactly what plain
SGD on those batches trains, log the interval means, save the input position
with each checkpoint, call the evaluators, and resume where it stopped.
"""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmm import parallel
from jaxmm import train

BATCH, DIM, LR, TOTAL = 16, 4, 0.05, 6
TRUE_W = np.arange(1.0, DIM + 1)


class ToyBatches:
  """Batches of a fixed, seeded regression problem y = x·TRUE_W + noise, resumable."""

  def __init__(self):
    rng = np.random.default_rng(0)
    self.x = rng.normal(size=(10 * BATCH, DIM)).astype(np.float32)
    self.y = (self.x @ TRUE_W + 0.1 * rng.normal(size=10 * BATCH)).astype(np.float32)
    self.position = 0

  def __next__(self) -> dict:
    rows = slice(self.position * BATCH, (self.position + 1) * BATCH)
    self.position += 1
    return {"x": self.x[rows], "y": self.y[rows]}

  def get_state(self) -> dict:
    return {"position": self.position}

  def set_state(self, state: dict) -> None:
    self.position = state["position"]


def init_variables(rng):
  return nn.Dense(1).init(rng, jnp.zeros((1, DIM)))


def loss_fn(params, model_state, batch, rng):
  del rng
  prediction = nn.Dense(1).apply({"params": params}, batch["x"])[:, 0]
  error = prediction - batch["y"]
  return jnp.mean(error**2), {"mean_error": jnp.mean(error)}, model_state


def toy_config(total_steps=TOTAL) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      dict(experiment="toy",
           seed=0,
           total_steps=total_steps,
           batch_size=BATCH,
           log_every=2,
           checkpoint_every=2,
           keep_checkpoints=10,
           eval_every=3,
           on_nonfinite="stop",
           mesh=dict(data=-1, fsdp=1, tensor=1),
           ema=dict(decays=(), sigma_rels=()),
           optim=dict(name="sgd",
                      lr=LR,
                      momentum=0.0,
                      weight_decay=0.0,
                      b1=0.9,
                      b2=0.999,
                      eps=1e-8,
                      warmup_steps=0,
                      schedule="constant",
                      grad_clip_norm=None)))


def numpy_sgd(w, b, steps):
  """float64 SGD on the same batches: [(w, b, loss, mean error)] after each step."""
  batches, out = ToyBatches(), []
  for _ in range(steps):
    batch = next(batches)
    x, y = batch["x"].astype(np.float64), batch["y"].astype(np.float64)
    error = x @ w + b - y
    out.append((w, b, np.mean(error**2), np.mean(error)))
    w, b = w - LR * 2 * x.T @ error / BATCH, b - LR * 2 * np.mean(error)
  return [(w, b)] + out


def run(workdir, total_steps=TOTAL, calls=None, every_two=None):
  """Trains the toy; with `calls`, an evaluator every eval_every=3 steps records its steps there,
  and one every 2 steps in `every_two`."""
  config = toy_config(total_steps)
  evaluate = lambda state, step: calls.append(step) or {"w0": float(state.params["kernel"][0, 0])}
  record = lambda state, step: every_two.append(step) or {"b": float(state.params["bias"][0])}
  return train.run(config,
                   str(workdir),
                   mesh=parallel.make_mesh(config.mesh),
                   init_variables=init_variables,
                   loss_fn=loss_fn,
                   train_data=ToyBatches(),
                   evaluators=[(config.eval_every, evaluate),
                               (2, record)] if calls is not None else [])


def test_loop_trains_what_plain_sgd_trains_and_logs_interval_means(tmp_path):
  calls, every_two = [], []
  state = run(tmp_path / "run", calls=calls, every_two=every_two)
  init = jax.device_get(init_variables(train.init_rng(0))["params"])
  trajectory = numpy_sgd(init["kernel"][:, 0].astype(np.float64),
                         float(init["bias"][0]), TOTAL)
  (w, b), per_step = trajectory[0], trajectory[1:]
  # float32 against float64: 6 steps of a 16-row, 4-dim regression, each
  # moving w by ~lr·|grad| ≤ 1; float32 keeps ~1e-7 relative per operation.
  np.testing.assert_allclose(np.asarray(state.params["kernel"])[:, 0], w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(state.params["bias"])[0], b, rtol=1e-5, atol=1e-6)
  assert int(state.step) == TOTAL
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  logged = {r["step"]: r for r in rows if "train/loss" in r}
  assert sorted(logged) == [2, 4, 6]
  for step in (2, 4, 6):  # the mean over the two steps of each interval
    interval = per_step[step - 2:step]
    np.testing.assert_allclose(logged[step]["train/loss"], np.mean([s[2] for s in interval]),
                               rtol=1e-5)
    np.testing.assert_allclose(logged[step]["train/mean_error"],
                               np.mean([s[3] for s in interval]),
                               rtol=1e-4,
                               atol=1e-6)
  assert calls == [3, 6] and every_two == [2, 4, 6]  # each at its own frequency
  evals = {r["step"]: r["eval/w0"] for r in rows if "eval/w0" in r}
  assert sorted(evals) == [3, 6]
  assert sorted(r["step"] for r in rows if "eval/b" in r) == [2, 4, 6]
  np.testing.assert_allclose(evals[6], w[0], rtol=1e-5)


def test_loop_saves_the_input_position_and_resumes_exactly(tmp_path):
  straight = run(tmp_path / "straight")
  run(tmp_path / "resumed", total_steps=4)
  checkpoint = tmp_path / "resumed" / "checkpoints" / "4" / "data"
  assert json.loads(next(checkpoint.glob("*")).read_text()) == {"position": 4}
  resumed = run(tmp_path / "resumed")
  assert int(resumed.step) == TOTAL
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.params),
               jax.device_get(straight.params))
