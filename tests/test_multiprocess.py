"""Multi-process runs for real: local processes with 4 CPU devices each form one cluster.

Each process is `jaxmm train` with --coordinator-address/--num-processes/
--process-id on the loopback interface (gloo collectives), exactly as on
several hosts. Its results must equal a single process with 8 devices.
"""
import glob
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from jaxmm import analysis

from conftest import TINY_OVERRIDES
from conftest import shard_overrides

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 400

# SigLIP with a constant learning rate, so that a run may be continued to a
# later total_steps and still equal an uninterrupted run.
SIGLIP = [o for o in TINY_OVERRIDES if not o.startswith("total_steps")] + [
    "optim.schedule=constant", "optim.warmup_steps=0", "checkpoint_every=2", "log_every=1"
]
# The tiny EDM U-Net of test_diffusion_experiment, with its EMA and sample grid.
EDM = [
    "batch_size=16", "checkpoint_every=2", "log_every=1", "data.image_size=16",
    "model.channels=8", "model.channel_mult=(1, 2)", "model.attn_resolutions=(8,)",
    "model.num_heads=2", "optim.warmup_steps=1", "evals.sample_grid.num_steps=2",
    "evals.sample_grid.sampler=euler"
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ,
              PYTHONUNBUFFERED="1",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _command(config, workdir, data_dir, overrides):
  command = [
      sys.executable, "-m", "jaxmm.commands.cli", "train", "--config", f"configs/{config}",
      "--workdir",
      str(workdir)
  ] + [f"--config.{o}" for o in overrides]
  return command if data_dir is None else command + [f"--config.data.data_dir={data_dir}"]


def _start(command, processes: int, devices: int):
  """`processes` Popen of `command`, joined into one cluster when there are several."""
  port = _free_port()
  started = []
  for i in range(processes):
    cluster = [] if processes == 1 else [
        "--coordinator-address", f"127.0.0.1:{port}", "--num-processes",
        str(processes), "--process-id",
        str(i), "--distributed-timeout", "120"
    ]
    started.append(
        subprocess.Popen(command + cluster,
                         cwd=REPO,
                         env=_env(devices),
                         stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE,
                         text=True))
  return started


def _finish(started):
  """Waits for every process; returns [(returncode, stdout, stderr)]."""
  results = []
  for process in started:
    out, err = process.communicate(timeout=TIMEOUT)
    results.append((process.returncode, out, err))
  return results


def _train(config, workdir, data_dir, overrides, processes, devices):
  results = _finish(_start(_command(config, workdir, data_dir, overrides), processes, devices))
  for code, _, err in results:
    assert code == 0, err[-3000:]
  return results


def _assert_same_trees(a, b, scale=1e-3):
  """a and b have the same paths, and each leaf of a is within `scale` of its largest magnitude
  in b.

  Several processes reduce each gradient over their own devices and then across processes:
  another summation order than one process's. A float32 sum of n terms moves by at most
  n·u·Σ|terms| (u = 2⁻²⁴), tiny against a leaf; but where an element's shards nearly cancel, Adam's
  normalised update of that element can move by a larger share of lr, and the next steps carry
  it. A different batch, a missed reduction or another learning rate moves every element by
  about lr (1e-2 of a leaf's scale or more), far past 1e-3 of it.
  """
  import jax  # pylint: disable=import-outside-toplevel
  paths_a, paths_b = jax.tree.leaves_with_path(a), jax.tree.leaves_with_path(b)
  assert [p for p, _ in paths_a] == [p for p, _ in paths_b]
  for (path, x), (_, y) in zip(paths_a, paths_b):
    y = np.asarray(y)
    np.testing.assert_allclose(x, y, rtol=0, atol=scale * float(np.max(np.abs(y), initial=0)),
                               err_msg=jax.tree_util.keystr(path))


def _column(workdir, name) -> dict:
  """{step: value} of metric `name` in workdir's metrics.jsonl."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {r["step"]: r[name] for r in records if name in r}


def _losses(workdir):
  return _column(workdir, "train/loss")


@pytest.mark.slow  # three `jaxmm train` processes, 3 min of CPU; with the other equalities
def test_two_processes_equal_one_siglip_with_zero_shot(tmp_path, shapes_data_dir):
  overrides = SIGLIP + ["total_steps=4", "eval_every=4"]
  single, multi = tmp_path / "1x8", tmp_path / "2x4"
  _train("siglip_shapes.py", single, shapes_data_dir, overrides, 1, 8)
  results = _train("siglip_shapes.py", multi, shapes_data_dir, overrides, 2, 4)
  # One progress bar and one set of log lines: process 0's.
  assert "[4] train/" in results[0][1] and "[4] train/" not in results[1][1]
  one, two = analysis.load_run(str(single)), analysis.load_run(str(multi))
  assert two.step == 4 and analysis.checkpoint_steps(str(multi)) == [2, 4]
  _assert_same_trees(one.params, two.params)
  _assert_same_trees(one.opt_state, two.opt_state)
  loss_one, loss_two = _losses(single), _losses(multi)
  assert sorted(loss_two) == [1, 2, 3, 4]
  np.testing.assert_allclose([loss_two[s] for s in loss_two], [loss_one[s] for s in loss_two],
                             rtol=1e-5)
  with open(single / "zero_shot.json") as f:
    expected = json.load(f)["4"]
  with open(multi / "zero_shot.json") as f:
    got = json.load(f)["4"]
  assert got.keys() == expected.keys()
  for name in expected:  # every class decided the same way: accuracies equal exactly
    assert got[name] == pytest.approx(expected[name], abs=1e-9), name


@pytest.mark.slow
def test_two_processes_equal_one_diffusion_with_ema_and_grid(tmp_path, shapes_data_dir):
  overrides = EDM + ["total_steps=4", "eval_every=4"]
  single, multi = tmp_path / "1x8", tmp_path / "2x4"
  _train("edm_shapes.py", single, shapes_data_dir, overrides, 1, 8)
  _train("edm_shapes.py", multi, shapes_data_dir, overrides, 2, 4)
  one, two = analysis.load_run(str(single)), analysis.load_run(str(multi))
  _assert_same_trees(one.params, two.params)
  _assert_same_trees(one.ema, two.ema)
  assert sorted(p.name for p in multi.glob("samples*")) == sorted(
      p.name for p in single.glob("samples*")) != []


def _damaged_copy(shards_glob, folder):
  """Copies of the tars of `shards_glob` into `folder` with every fourth image zeroed (same size:
  the tars stay whole, the images no longer decode); returns the copies' glob."""
  folder.mkdir()
  for path in glob.glob(shards_glob):
    payload = bytearray(pathlib.Path(path).read_bytes())
    with tarfile.open(path) as tar:
      images = [m for m in tar.getmembers() if m.name.endswith(".png")]
    for member in images[::4]:
      payload[member.offset_data:member.offset_data + member.size] = bytes(member.size)
    (folder / os.path.basename(path)).write_bytes(bytes(payload))
  return str(folder / "*.tar")


@pytest.mark.slow  # the TFDS test above covers several processes in the default suite
def test_two_processes_equal_one_on_damaged_shards(tmp_path, shapes_data_dir, shapes_shards):
  """On webdataset shards with a quarter of the images undecodable: the same stand-ins, the same
  random-resized crops (on 2 host threads), parameters and zero-shot accuracies, and
  `data/skipped` summed over the processes."""
  damaged = {"wds": _damaged_copy(shapes_shards["wds"], tmp_path / "shards")}
  overrides = SIGLIP + ["total_steps=4", "eval_every=4", "data.max_skipped_fraction=0.5",
                        "data.crop_scale=(0.5, 1.0)", "data.host_threads=2"
                       ] + shard_overrides(damaged, "wds")
  single, multi = tmp_path / "1x8", tmp_path / "2x4"
  _train("siglip_shapes.py", single, None, overrides, 1, 8)
  _train("siglip_shapes.py", multi, None, overrides, 2, 4)
  one, two = analysis.load_run(str(single)), analysis.load_run(str(multi))
  _assert_same_trees(one.params, two.params)
  skipped = [_column(workdir, "data/skipped") for workdir in (single, multi)]
  # 16 examples a step, a quarter damaged: about 4 a step, each step logged.
  assert skipped[0] == skipped[1] and sorted(skipped[0]) == [1, 2, 3, 4] and sum(
      skipped[0].values()) >= 4
  expected, got = _results(single, "zero_shot.json", 4), _results(multi, "zero_shot.json", 4)
  for name in expected:
    assert got[name] == pytest.approx(expected[name], abs=1e-9), name


def _results(workdir, name, step):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)[str(step)]


@pytest.mark.slow
def test_two_processes_equal_one_judge_and_two_sample(tmp_path, shapes_data_dir):
  """The diffusion evaluators, run by 2 x 4 devices, score what 1 x 8 scores: the judge's
  conditional accuracies (to one sample) and FD, and the toy's MMD."""
  judge = tmp_path / "judge"
  _train("siglip_shapes.py", judge, shapes_data_dir, SIGLIP + ["total_steps=2", "data.max_len=48"],
         1, 8)
  judged = EDM + [
      "total_steps=2", "eval_every=2", f"evals.judge.run={judge}", "evals.judge.per_pair=2",
      "evals.judge.num_steps=2", "evals.judge.sampler=euler"
  ]
  toy = [
      "total_steps=2", "eval_every=2", "checkpoint_every=2", "batch_size=64",
      "optim.warmup_steps=1", "evals.two_sample.num=256", "evals.two_sample.num_steps=4"
  ]
  for config, data_dir, overrides, results_file in [
      ("edm_shapes.py", shapes_data_dir, judged, "judge.json"),
      ("edm_toy2d.py", None, toy, "two_sample.json")
  ]:
    single, multi = tmp_path / f"{config}_1x8", tmp_path / f"{config}_2x4"
    _train(config, single, data_dir, overrides, 1, 8)
    _train(config, multi, data_dir, overrides, 2, 4)
    expected, got = _results(single, results_file, 2), _results(multi, results_file, 2)
    assert got.keys() == expected.keys() and expected, results_file
    for name, value in expected.items():
      if "accuracy" in name:
        assert got[name] == pytest.approx(value, abs=1 / 72 + 1e-9), name  # 36 pairs x 2
      else:
        assert got[name] == pytest.approx(value, rel=1e-3, abs=1e-6), name


@pytest.mark.slow
def test_elastic_resume_on_one_process_and_another_mesh(tmp_path, shapes_data_dir):
  """Checkpointed by 2 processes x 4 devices at step 4, continued to step 8 on 1 x 8 devices
  with mesh (8,1,1) and with mesh (2,2,2): both equal an uninterrupted 1 x 8 run."""
  reference, first = tmp_path / "reference", tmp_path / "elastic"
  _train("siglip_shapes.py", reference, shapes_data_dir, SIGLIP + ["total_steps=8"], 1, 8)
  _train("siglip_shapes.py", first, shapes_data_dir, SIGLIP + ["total_steps=4"], 2, 4)
  other_mesh = tmp_path / "elastic_222"
  shutil.copytree(first, other_mesh)
  _train("siglip_shapes.py", first, shapes_data_dir, SIGLIP + ["total_steps=8"], 1, 8)
  _train("siglip_shapes.py", other_mesh, shapes_data_dir,
         SIGLIP + ["total_steps=8", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"], 1, 8)
  expected = analysis.load_run(str(reference))
  for workdir in (first, other_mesh):
    run = analysis.load_run(str(workdir))
    assert run.step == 8
    _assert_same_trees(run.params, expected.params)
    losses, reference_losses = _losses(workdir), _losses(reference)
    np.testing.assert_allclose([losses[s] for s in range(5, 9)],
                               [reference_losses[s] for s in range(5, 9)],
                               rtol=2e-5)


@pytest.mark.slow  # test_train_loop's SIGTERM test covers one process in the default suite
def test_sigterm_on_one_process_stops_all_at_one_saved_step(tmp_path, shapes_data_dir):
  workdir = tmp_path / "run"
  started = _start(
      _command("siglip_shapes.py", workdir, shapes_data_dir,
               SIGLIP + ["total_steps=100000", "checkpoint_every=1000"]), 2, 4)
  deadline = time.time() + TIMEOUT
  for line in started[0].stdout:  # process 0 logs every step
    if re.match(r"^\[3\] train/", line):
      break
    assert time.time() < deadline
  started[1].send_signal(signal.SIGTERM)  # process 1 only, as when one VM is preempted
  results = _finish(started)
  for code, _, err in results:
    assert code == 128 + signal.SIGTERM, err[-3000:]
  steps = analysis.checkpoint_steps(str(workdir))
  assert len(steps) == 1 and 3 < steps[0] < 1000, steps
  for _, _, err in results:  # each process names the step that was saved
    assert f"saving checkpoint {steps[0]};" in err, err[-2000:]


@pytest.mark.parametrize("flags, expected", [
    (["--num-processes", "2", "--process-id", "2", "--coordinator-address", "127.0.0.1:1"],
     "--process-id=2 is not below --num-processes=2"),
    (["--num-processes", "2"], "missing --coordinator-address"),
    (["--num-processes", "2", "--process-id", "0", "--coordinator-address", "localhost"],
     "expected HOST:PORT"),
])
def test_distributed_flags_that_do_not_add_up(tmp_path, shapes_data_dir, flags, expected):
  command = _command("siglip_shapes.py", tmp_path / "run", shapes_data_dir, SIGLIP) + flags
  result = subprocess.run(command, cwd=REPO, env=_env(1), capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("jaxmm train: error: ")
  assert expected in result.stderr
  assert not (tmp_path / "run").exists()


def test_unreachable_coordinator_fails_within_the_timeout(tmp_path, shapes_data_dir):
  command = _command("siglip_shapes.py", tmp_path / "run", shapes_data_dir, SIGLIP) + [
      "--coordinator-address", f"127.0.0.1:{_free_port()}", "--num-processes", "2",
      "--process-id", "1", "--distributed-timeout", "3"
  ]
  start = time.time()
  result = subprocess.run(command, cwd=REPO, env=_env(1), capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("jaxmm train: error: could not reach the coordinator"), last
  assert time.time() - start < 60
