"""Sweeps: `jaxmm.sweeps` axes, point names, and `jaxmm sweep` with its launchers and summary.

The sweeps here use a config file written into tmp_path whose get_config()
is the tiny image-text config and whose get_sweep() is the test's. Tests
that do not train replace the Python that runs each point (`--python`) by a
shell script, or only print (`--dry-run`).
"""
import csv
import json
import os
import pathlib
import re
import shlex
import signal
import stat
import subprocess
import sys
import time

import pytest

from jaxmm import analysis
from jaxmm import sweeps
from jaxmm.commands import cli
from jaxmm.errors import UserError
from jaxmm.sweeps import plan

_SWEEP_CONFIG = '''
from jaxmm import config_loading
from jaxmm import sweeps

def get_config(arg="siglip"):
  config = config_loading.load_config(f"configs/{{arg}}_shapes.py")
  return config_loading.apply_overrides(config, {overrides!r})

def get_sweep(arg="siglip"):
  return {points}
'''
_TWO_POINTS = 'sweeps.zipped({"optim.lr": [0.01, 0.003], "seed": [0, 1]})'
_NAMES = ["lr=0.01_seed=0", "lr=0.003_seed=1"]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  """Config paths are relative to the repository, as on the command line."""
  monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])


@pytest.fixture
def sweep_config(tmp_path, tiny_overrides):
  """sweep_config(points=_TWO_POINTS) -> path of a tiny config file whose get_sweep returns them."""

  def write(points=_TWO_POINTS):
    overrides = tiny_overrides + [
        "total_steps=4", "checkpoint_every=2", "log_every=2", "eval_every=4"
    ]
    path = tmp_path / "tiny_sweep.py"
    path.write_text(_SWEEP_CONFIG.format(overrides=overrides, points=points))
    return str(path)

  return write


def _sweep(capfd, *args):
  """Runs `jaxmm sweep ARGS` in this process: (exit status, stdout, stderr)."""
  try:
    cli.main(["sweep", *args])
    status = 0
  except SystemExit as e:
    status = e.code
  out, err = capfd.readouterr()
  return status, out, err


def _fake_python(tmp_path, script):
  """An executable that stands in for Python as --python; it logs its arguments to calls.txt."""
  path = tmp_path / "fake_python"
  path.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls.txt\n{script}\n')
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return str(path)


def _calls(tmp_path):
  calls = tmp_path / "calls.txt"
  return calls.read_text().splitlines() if calls.exists() else []


# jaxmm.sweeps: product and zipped


def _values(points, *keys):
  """The points as tuples of their values, after checking that each has exactly `keys`, in order."""
  assert all(list(point) == list(keys) for point in points), points
  return [tuple(point[key] for key in keys) for point in points]


def test_product_crosses_axes_first_slowest():
  points = sweeps.product({"optim.lr": [1e-3, 3e-4]}, {"seed": [0, 1]})
  assert _values(points, "optim.lr", "seed") == [(1e-3, 0), (1e-3, 1), (3e-4, 0), (3e-4, 1)]
  # Keys of one dict are axes too; keywords are axes after the positional parts.
  assert sweeps.product({"optim.lr": [1e-3, 3e-4], "seed": [0, 1]}) == points
  assert sweeps.product({"optim.lr": [1e-3, 3e-4]}, seed=range(2)) == points


def test_zipped_advances_together_and_nests_in_product():
  paired = sweeps.zipped({"optim.lr": [1e-3, 3e-4], "optim.warmup_steps": [100, 300]})
  assert _values(paired, "optim.lr", "optim.warmup_steps") == [(1e-3, 100), (3e-4, 300)]
  points = sweeps.product(paired, seed=[0, 1])
  assert _values(points, "optim.lr", "optim.warmup_steps",
                 "seed") == [(1e-3, 100, 0), (1e-3, 100, 1), (3e-4, 300, 0), (3e-4, 300, 1)]
  points = sweeps.zipped(sweeps.product(seed=[0, 1]), {"optim.lr": [1.0, 2.0]})
  assert _values(points, "seed", "optim.lr") == [(0, 1.0), (1, 2.0)]


def test_zipped_needs_equal_lengths():
  with pytest.raises(UserError) as e:
    sweeps.zipped({"optim.lr": [1e-3, 3e-4, 1e-4]}, seed=[0, 1])
  assert "'optim.lr' has 3, 'seed' has 2" in str(e.value) and "same number" in str(e.value)


@pytest.mark.parametrize("call,message", [
    (lambda: sweeps.product({"optim.lr": 1e-3}), "'optim.lr' needs a list of values"),
    (lambda: sweeps.product({"model.channel_mult": (1, 2)}), "needs a list of values"),
    (lambda: sweeps.zipped(seed=[]), "'seed' has no values"),
    (lambda: sweeps.product({"seed": [0]}, seed=[1]), "'seed' is set by two axes"),
    (lambda: sweeps.product({3: [0]}), "keys are dotted config keys"),
    (lambda: sweeps.product("seed"), "part 1 is 'seed'"),
])
def test_axis_errors(call, message):
  with pytest.raises(UserError, match=message):
    call()


# Point names


def test_point_names_are_short_readable_and_safe():
  assert plan.point_names([{"optim.lr": 1e-3, "seed": 0}, {}]) == ["lr=0.001_seed=0", "base"]
  # A key keeps as many dotted parts as it takes to tell it from the others.
  widths = {"model.image.width": 32, "model.text.width": 64}
  assert plan.point_names([widths]) == ["image.width=32_text.width=64"]
  unsafe = {"data.data_dir": "/data/a b", "mesh.x": (1, 2)}
  assert plan.point_names([unsafe]) == ["data_dir=data-a-b_x=1-2"]


def test_point_names_fall_back_to_an_index_prefix():
  # 'a/b' and 'a b' would both be 'a-b'.
  assert plan.point_names([{"tag": "a/b"}, {"tag": "a b"}]) == ["0_tag=a-b", "1_tag=a-b"]
  names = plan.point_names([{"tag": "x" * 100}, {"tag": "y"}])
  assert names[0] == ("0_tag=" + "x" * 100)[:plan.MAX_NAME_LENGTH] and names[1] == "1_tag=y"


# jaxmm sweep without training


@pytest.mark.parametrize("spec,names", [
    ("configs/siglip_shapes.py", ["lr=0.001_seed=0", "lr=0.001_seed=1", "lr=0.004_seed=1"]),
    ("configs/siglip_shapes.py:base", ["lr=0.0005_seed=0", "lr=0.002_seed=1"]),
    ("configs/edm_shapes.py:dit", ["label_dropout=0.1_lr=0.0005", "label_dropout=0.2_lr=0.002"]),
])
def test_repository_sweeps_pass_their_arg_and_check_out(spec, names, tmp_path):
  planned = plan.plan(spec, str(tmp_path), [])
  assert len(planned.points) == 6 and set(names) <= {point.name for point in planned.points}


def test_dry_run_prints_the_commands_and_creates_nothing(sweep_config, tmp_path, capfd):
  config, workdir = sweep_config(), tmp_path / "sweep"
  status, out, _ = _sweep(capfd, "--config", config, "--workdir", str(workdir), "--dry-run",
                          "--config.log_every=1")
  assert status == 0
  expected = [
      shlex.join([
          sys.executable, "-m", "jaxmm.commands.cli", "train", "--config", config, "--workdir",
          str(workdir / name), "--config.log_every=1", f"--config.optim.lr={lr}",
          f"--config.seed={seed}"
      ]) for name, lr, seed in zip(_NAMES, [0.01, 0.003], [0, 1])
  ]
  assert out.splitlines() == expected
  assert not workdir.exists()


def test_slurm_dry_run_writes_an_array_job(sweep_config, tmp_path, capfd):
  workdir = tmp_path / "sweep"
  status, out, _ = _sweep(capfd, "--config", sweep_config(), "--workdir", str(workdir),
                          "--launcher", "slurm", "--dry-run", "--slurm-gpus", "8",
                          "--slurm-args=--partition=gpu -A lab")
  assert status == 0
  script = workdir / "sweep.sbatch"
  assert out.splitlines() == [shlex.join(["sbatch", str(script)])]
  commands = (workdir / "sweep_commands.txt").read_text().splitlines()
  assert [shlex.split(c)[shlex.split(c).index("--workdir") + 1] for c in commands
         ] == [str(workdir / name) for name in _NAMES]
  options = [line for line in script.read_text().splitlines() if line.startswith("#SBATCH")]
  for option in ("--array=0-1", "--nodes=1", "--gpus-per-node=8", "--time=24:00:00",
                 "--partition=gpu", "-A lab"):
    assert f"#SBATCH {option}" in options
  assert sorted(os.listdir(workdir)) == ["sweep.json", "sweep.sbatch", "sweep_commands.txt"]
  # Array task 1 runs the second command: run the script with an srun that prints its arguments.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
  (bin_dir / "srun").chmod(0o755)
  env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", PATH=f"{bin_dir}:{os.environ['PATH']}")
  ran = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True)
  assert ran.stdout.splitlines() == ["bash", "-c", commands[1]]


def test_tpu_launcher_needs_tpu_and_zone(sweep_config, tmp_path, capfd):
  status, out, err = _sweep(capfd, "--config", sweep_config(), "--workdir", str(tmp_path / "s"),
                            "--launcher", "tpu", "--zone", "us-central2-b")
  assert status == 2 and not out
  assert err.splitlines() == [
      "jaxmm sweep: error: --launcher tpu needs --tpu NAME and --zone ZONE (the TPU VM or pod "
      "slice)"
  ]


def test_tpu_dry_run_prints_the_launch_of_the_sweep_on_the_workers(sweep_config, tmp_path, capfd):
  config, workdir = sweep_config(), tmp_path / "sweep"
  status, out, _ = _sweep(capfd, "--config", config, "--workdir", str(workdir), "--launcher", "tpu",
                          "--tpu", "v4-32", "--zone", "us-central2-b", "--project", "lab",
                          "--dry-run", "--config.log_every=1")
  assert status == 0
  assert out.splitlines() == [
      shlex.join([
          str(pathlib.Path("tpu/launch.sh").resolve()), "--tpu", "v4-32", "--zone", "us-central2-b",
          "--project", "lab", "--", "python", "-m", "jaxmm.commands.cli", "sweep", "--config",
          config, "--workdir",
          str(workdir), "--config.log_every=1"
      ])
  ]
  assert not workdir.exists()


def test_unknown_key_fails_before_any_point_runs(sweep_config, tmp_path, capfd):
  config = sweep_config('[{"optim.lr": 0.01}, {"optim.lrr": 0.003}]')
  fake = _fake_python(tmp_path, "exit 0")
  status, out, err = _sweep(capfd, "--config", config, "--workdir", str(tmp_path / "sweep"),
                            "--python", fake)
  assert status == 2 and not out
  assert err.splitlines() == [
      "jaxmm sweep: error: sweep point 2 (lrr=0.003): unknown config key 'optim.lrr'; did you "
      "mean 'optim.lr'?"
  ]
  assert not _calls(tmp_path) and not (tmp_path / "sweep").exists()


def test_a_point_with_a_nonfinite_value_fails_before_any_point_runs(sweep_config, tmp_path,
                                                                    capfd):
  config = sweep_config('[{"optim.lr": 0.01}, {"optim.lr": float("nan")}]')
  fake = _fake_python(tmp_path, "exit 0")
  status, out, err = _sweep(capfd, "--config", config, "--workdir", str(tmp_path / "sweep"),
                            "--python", fake)
  assert status == 2 and not out
  assert err.splitlines() == [
      "jaxmm sweep: error: sweep point 2 (lr=nan): optim.lr=nan: nan and inf are not allowed; "
      "set --config.optim.lr to a finite value"
  ]
  assert not _calls(tmp_path) and not (tmp_path / "sweep").exists()


def test_config_without_get_sweep_fails_with_one_line(tmp_path, capfd):
  status, _, err = _sweep(capfd, "--config", "configs/clip_shapes.py", "--workdir",
                          str(tmp_path / "sweep"))
  assert status == 2 and len(err.splitlines()) == 1
  assert "defines no get_sweep(); define get_sweep(arg)" in err


def test_failing_point_is_reported_and_the_others_run(sweep_config, tmp_path, capfd):
  fake = _fake_python(tmp_path, 'case "$*" in *--config.seed=0*) exit 3;; esac')
  status, out, err = _sweep(capfd, "--config", sweep_config(), "--workdir", str(tmp_path / "sweep"),
                            "--python", fake)
  assert len(_calls(tmp_path)) == 2
  assert status == 2
  assert f"[1/2] {_NAMES[0]}: failed with exit status 3" in out
  assert f"[2/2] {_NAMES[1]}: done" in out and "1 ran, 0 skipped" in out
  assert err.splitlines() == [
      f"jaxmm sweep: error: 1 of 2 points failed: {_NAMES[0]} (failed with exit status 3); see "
      "their output above, then run the same command again (finished points are skipped)"
  ]


def test_a_point_stopped_by_sigterm_stops_the_sweep(sweep_config, tmp_path, capfd):
  fake = _fake_python(tmp_path, "exit 143")  # as `jaxmm train` after saving on SIGTERM
  status, _, err = _sweep(capfd, "--config", sweep_config(), "--workdir", str(tmp_path / "sweep"),
                          "--python", fake)
  assert status == 143 and len(_calls(tmp_path)) == 1
  assert f"stopped by SIGTERM while {_NAMES[0]} ran" in err


def test_sigterm_to_the_sweep_reaches_the_running_point(sweep_config, tmp_path):
  # The point saves on SIGTERM and exits 143, as `jaxmm train` does.
  fake = _fake_python(
      tmp_path, f"trap 'kill $!; echo saved >> {tmp_path}/calls.txt; exit 143' TERM\n"
      f"echo started >> {tmp_path}/calls.txt\nsleep 60 &\nwait")
  command = [sys.executable, "-m", "jaxmm.commands.cli", "sweep", "--config", sweep_config()]
  command += ["--workdir", str(tmp_path / "sweep"), "--python", fake]
  sweep_process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while "started" not in _calls(tmp_path) and time.time() < deadline:
    time.sleep(0.1)
  sweep_process.send_signal(signal.SIGTERM)
  _, err = sweep_process.communicate(timeout=60)
  assert sweep_process.returncode == 143, err
  assert _calls(tmp_path)[1:] == ["started", "saved"]  # and no second point
  assert err.splitlines()[-1] == (f"jaxmm sweep: stopped by SIGTERM while {_NAMES[0]} ran; run "
                                  "the same command to resume the sweep")


def test_rerun_refuses_other_overrides_under_a_recorded_name(tmp_path):
  point = plan.Point("a", {"seed": 0}, 4)
  plan.write_record(plan.Sweep("c.py", str(tmp_path), [], [point]))
  changed = plan.Point("a", {"seed": 1}, 4)
  with pytest.raises(UserError, match="records point a with overrides"):
    plan.write_record(plan.Sweep("c.py", str(tmp_path), [], [changed]))


def test_rerun_with_other_command_line_overrides_is_refused(sweep_config, tmp_path, capfd):
  workdir = tmp_path / "sweep"
  args = ["--config", sweep_config(), "--workdir", str(workdir)]
  args += ["--python", _fake_python(tmp_path, "exit 0")]
  assert _sweep(capfd, *args, "--config.log_every=1")[0] == 0
  # The same values written otherwise make the same sweep.
  assert _sweep(capfd, *args, "--config.log_every=1e0")[0] == 0
  assert len(_calls(tmp_path)) == 4
  record = (workdir / "sweep.json").read_text()
  for dry_run in ([], ["--dry-run"]):
    status, out, err = _sweep(capfd, *args, "--config.log_every=2", "--config.seed=5", *dry_run)
    assert status == 2 and not out
    assert err.splitlines() == [
        f"jaxmm sweep: error: {workdir}/sweep.json records this sweep with the overrides "
        "--config.log_every=1e0, but this command gives the overrides --config.log_every=2 "
        "--config.seed=5; its points were trained with the recorded overrides, so give those to "
        "continue the sweep, or another --workdir for a changed sweep"
    ]
  status, _, err = _sweep(capfd, *args)
  assert status == 2
  assert "with the overrides --config.log_every=1e0, but this command gives no overrides;" in err
  assert len(_calls(tmp_path)) == 4 and (workdir / "sweep.json").read_text() == record


# How `jaxmm train` ends on a diverged step (`jaxmm.train.nonfinite.Diverged`).
_DIVERGED = ("training diverged at step 3: non-finite grad_norm=nan, loss=nan; stopped without "
             "saving or evaluating it (checkpoint 2 is the newest and is kept). Lower optim.lr or "
             "raise optim.warmup_steps, or set --config.on_nonfinite=skip to leave such updates "
             "out")


def _ending_python(tmp_path, first, second):
  """A stand-in for `jaxmm train` that writes its config.json, as the real one does before its
  first step, then runs shell code `first` for the first point and `second` for the other."""
  return _fake_python(
      tmp_path, f"""dir=$(echo "$@" | sed 's/.*--workdir \\([^ ]*\\).*/\\1/')
echo '{{"total_steps": 4}}' > "$dir/config.json"
case "$*" in *--config.seed=0*) {first};; *) {second};; esac""")


def test_summarize_tells_diverged_and_failed_points_from_partial_ones(sweep_config, tmp_path,
                                                                      capfd):
  workdir = tmp_path / "sweep"
  fake = _ending_python(
      tmp_path, f"printf '%s\\n' 'jaxmm train: error: {_DIVERGED}' >&2; exit 2",
      "printf 'Traceback (most recent call last):\\nRuntimeError: out of memory; retry\\n' >&2; "
      "exit 1")
  status, _, err = _sweep(capfd, "--config", sweep_config(), "--workdir", str(workdir), "--python",
                          fake)
  assert status == 2
  # The points' output passes through whole.
  assert f"jaxmm train: error: {_DIVERGED}\n" in err and "RuntimeError: out of memory" in err
  assert json.loads((workdir / _NAMES[0] / "sweep_outcome.json").read_text()) == {
      "outcome": "diverged",
      "exit_status": 2,
      "error": _DIVERGED
  }
  status, out, _ = _sweep(capfd, "--summarize", str(workdir))
  assert status == 0
  assert out.splitlines()[:3] == [
      "point            optim.lr  seed  step  status    train/loss  error",
      "lr=0.01_seed=0   0.01      0     -     diverged  -           training diverged at step 3: "
      "non-finite grad_norm=nan, loss=nan",
      "lr=0.003_seed=1  0.003     1     -     failed    -           failed with exit status 1: "
      "RuntimeError: out of memory",
  ]
  with open(workdir / "summary.csv", encoding="utf-8") as f:
    assert [row["status"] for row in csv.DictReader(f)] == ["diverged", "failed"]

  # Run again, both points end well but short of total_steps: partial, and no errors.
  assert _sweep(capfd, "--config", sweep_config(), "--workdir", str(workdir), "--python",
                _ending_python(tmp_path, "exit 0", "exit 0"))[0] == 0
  status, out, _ = _sweep(capfd, "--summarize", str(workdir))
  assert [line.split()[4] for line in out.splitlines()[1:3]] == ["partial", "partial"]
  assert "error" not in out.splitlines()[0]


def test_summarize_prints_and_writes_the_last_values(sweep_config, tmp_path, capfd):
  workdir = tmp_path / "sweep"
  fake = _fake_python(tmp_path, "exit 0")
  assert _sweep(capfd, "--config", sweep_config(), "--workdir", str(workdir), "--python",
                fake)[0] == 0
  # The first point was launched twice: steps 2 and 4 logged, then 4 again after a resume.
  records = [(2, "train/loss", 5.0), (4, "train/loss", 4.0), (4, "eval/zero_shot/shape", 0.25),
             (4, "train/loss", 3.5)]
  point_dir = workdir / _NAMES[0]
  point_dir.mkdir(exist_ok=True)  # the sweep recorded there how the stand-in run ended
  (point_dir / "metrics.jsonl").write_text("".join(
      json.dumps({
          "step": step,
          name: value
      }) + "\n" for step, name, value in records))
  (point_dir / "config.json").write_text(json.dumps({"total_steps": 4}))
  status, out, _ = _sweep(capfd, "--summarize", str(workdir))
  assert status == 0
  assert out.splitlines()[:3] == [
      "point            optim.lr  seed  step  status       train/loss  eval/zero_shot/shape",
      "lr=0.01_seed=0   0.01      0     4     partial      3.5         0.25",
      "lr=0.003_seed=1  0.003     1     -     not started  -           -",
  ]
  with open(workdir / "summary.csv", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  assert rows[0] == [
      "point", "optim.lr", "seed", "step", "status", "train/loss", "eval/zero_shot/shape"
  ]
  assert rows[1:] == [[_NAMES[0], "0.01", "0", "4", "partial", "3.5", "0.25"],
                      [_NAMES[1], "0.003", "1", "", "not started", "", ""]]


def test_summarize_needs_a_sweep(tmp_path, capfd):
  status, _, err = _sweep(capfd, "--summarize", str(tmp_path))
  assert status == 2 and "no sweep.json in" in err


# A real sweep


def _tree(path):
  """Every file under `path` with its size and modification time."""
  return {(p, p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_sweep_trains_points_skips_finished_and_resumes_partial(sweep_config, tmp_path, capfd,
                                                                monkeypatch, shapes_data_dir):
  monkeypatch.delenv("XLA_FLAGS")  # one CPU device in each point's process, as a user's
  config, workdir = sweep_config(), tmp_path / "sweep"
  command = ["--config", config, "--workdir", str(workdir), "--config.model.embed_dim=8"]
  command.append(f"--config.data.data_dir={shapes_data_dir}")
  status, out, err = _sweep(capfd, *command)
  assert status == 0, err[-3000:]
  assert sorted(os.listdir(workdir)) == sorted(["sweep.json"] + _NAMES)
  for name, lr, seed in zip(_NAMES, [0.01, 0.003], [0, 1]):
    run_config = json.loads((workdir / name / "config.json").read_text())
    assert (run_config["optim"]["lr"], run_config["seed"]) == (lr, seed)
    assert run_config["model"]["embed_dim"] == 8 and run_config["total_steps"] == 4
    assert analysis.checkpoint_steps(str(workdir / name)) == [2, 4]
  record = json.loads((workdir / "sweep.json").read_text())
  assert (record["config"], record["arg"]) == (config, None)
  assert record["base_overrides"] == ["model.embed_dim=8", f"data.data_dir={shapes_data_dir}"]
  assert list(record["points"]) == _NAMES
  assert [_values([p], "optim.lr", "seed") for p in record["points"].values()] == [[(0.01, 0)],
                                                                                   [(0.003, 1)]]

  # Preempted before its last checkpoint: the first point resumes, the second is skipped.
  finished = _tree(workdir / _NAMES[1])
  subprocess.run(["rm", "-r", str(workdir / _NAMES[0] / "checkpoints" / "4")], check=True)
  status, out, err = _sweep(capfd, *command)
  assert status == 0, err[-3000:]
  assert f"[2/2] {_NAMES[1]}: finished, skipped" in out and "1 ran, 1 skipped" in out
  assert _tree(workdir / _NAMES[1]) == finished
  assert sorted(os.listdir(workdir / _NAMES[0] / "config_history")) == [
      "launch_001_from_step_0.json", "launch_002_from_step_2.json"
  ]
  assert analysis.checkpoint_steps(str(workdir / _NAMES[0])) == [2, 4]

  status, out, _ = _sweep(capfd, "--summarize", str(workdir))
  assert status == 0
  with open(workdir / "summary.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [row["point"] for row in rows] == _NAMES
  for row in rows:
    lines = (workdir / row["point"] / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    last_loss = [r["train/loss"] for r in logged if "train/loss" in r and r["step"] == 4][-1]
    eval_names = sorted({n for r in logged for n in r if n.startswith("eval/")})
    assert eval_names and set(eval_names) <= set(row)
    for name in eval_names:
      assert float(row[name]) == [r[name] for r in logged if name in r][-1]
    assert (row["step"], row["status"], float(row["train/loss"])) == ("4", "finished", last_loss)
    assert row["point"] in out and f"{last_loss:.4g}" in out


@pytest.mark.slow
def test_a_diverging_point_is_summarized_as_diverged(sweep_config, tmp_path, capfd, monkeypatch,
                                                     shapes_data_dir):
  monkeypatch.delenv("XLA_FLAGS")  # one CPU device in the point's process, as a user's
  workdir = tmp_path / "sweep"
  status, _, err = _sweep(capfd, "--config", sweep_config('[{"optim.lr": 1e6}]'), "--workdir",
                          str(workdir), "--config.eval_every=0",
                          f"--config.data.data_dir={shapes_data_dir}")
  assert status == 2 and "points failed: lr=1000000.0 (failed with exit status 2)" in err
  status, out, _ = _sweep(capfd, "--summarize", str(workdir))
  assert status == 0
  point, lr, _, point_status, _, error = out.splitlines()[1].split(maxsplit=5)
  assert (point, lr, point_status) == ("lr=1000000.0", "1e+06", "diverged")
  assert re.fullmatch(r"training diverged at step \d+: non-finite .*loss=nan.*", error)
