"""Retrieval, linear probe and k-NN on several processes: every process gets one process's results.

This file is also the worker: `python test_representation_multiprocess.py PROCESS_ID
NUM_PROCESSES PORT DATA_DIR OUT OVERRIDES...` evaluates the untrained tiny two-tower
(its initial parameters are the same on every process) on `digits` and writes the
results that this process computed to OUT. Two processes of 4 CPU devices each form
one cluster over gloo, as on two hosts; their files must equal each other and those
of one process with 8 devices.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys
import types

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EVALUATORS = ("retrieval", "linear_probe", "knn")
TIMEOUT = 400


def _worker(process_id, num_processes, port, data_dir, out, overrides):
  """Runs in its own Python: jax must see this process's devices before it starts."""
  # pylint: disable=import-outside-toplevel
  import jax

  from jaxmm import config_loading
  from jaxmm import data
  from jaxmm import evaluators
  from jaxmm import models
  from jaxmm import parallel
  from jaxmm.experiments import image_text
  from jaxmm.parallel import distributed
  from jaxmm.train import model_init

  if num_processes > 1:
    distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)
  config = config_loading.load_config(str(REPO / "configs" / "siglip_shapes.py"))
  config = config_loading.apply_overrides(
      config, overrides + ["data.name=digits", f"data.data_dir={data_dir}", "data.max_len=40"])
  mesh = parallel.make_mesh(config.mesh)
  model = models.get_model(config.model)
  params = jax.device_get(model_init.make_init_variables(model, config)(jax.random.key(0)))
  state = types.SimpleNamespace(
      params=jax.device_put(params["params"], parallel.replicated(mesh)))
  del config.evals.zero_shot
  parts = image_text.evaluator_parts(model, data.get_tokenizer(config.data.tokenizer), config,
                                     mesh, None)
  results = {}
  for _, evaluate in evaluators.build_evaluators(parts):
    results.update(evaluate(state, 0))
  with open(out, "w") as f:
    json.dump(results, f)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run(processes, devices, data_dir, out_dir, overrides):
  """Starts `processes` workers of `devices` CPU devices each; returns each one's results."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  outs = [out_dir / f"{processes}x{devices}_{i}.json" for i in range(processes)]
  started = [
      subprocess.Popen([
          sys.executable, __file__,
          str(i),
          str(processes),
          str(port), data_dir,
          str(out)
      ] + list(overrides),
                       cwd=REPO,
                       env=env,
                       stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE,
                       text=True) for i, out in enumerate(outs)
  ]
  for process in started:
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err[-3000:]
  results = []
  for out in outs:
    with open(out) as f:
      results.append(json.load(f))
  return results


@pytest.mark.slow
def test_two_processes_compute_what_one_does(tmp_path, tiny_overrides):
  from jaxmm import data  # pylint: disable=import-outside-toplevel
  data_dir = str(tmp_path / "tfds")
  data.data_source("digits", "train", data_dir=data_dir)  # built once, before the workers read
  overrides = tiny_overrides + [f"evals.{name}.batch_size=64" for name in EVALUATORS
                                ] + [f"evals.{name}.every=None" for name in EVALUATORS]
  (single,) = _run(1, 8, data_dir, tmp_path, overrides)
  first, second = _run(2, 4, data_dir, tmp_path, overrides)
  assert {key.split("/")[0] for key in single} == set(EVALUATORS)
  assert first == second == single


if __name__ == "__main__":
  _worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5],
          sys.argv[6:])
