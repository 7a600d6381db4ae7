"""The TPU and GKE scripts in tpu/: what --dry-run prints, what a real run runs, and their errors.

gcloud and xpk are replaced by a fake that records each call (and, for
`tpu-vm ssh`, runs the remote command in a fake worker home), so nothing here
needs a cloud account.
"""
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU = REPO / "tpu"
SCRIPTS = sorted(TPU.glob("*.sh"))

# Records `NAME ARGS...` as one shell-quoted line. queued-resources describe
# prints the next state from $FAKE_STATES. When a test sets $FAKE_HOME (a
# worker's home), tpu-vm scp copies a local file there and tpu-vm ssh runs
# --command with bash there, with $FAKE_REMOTE_BIN first on the PATH.
_FAKE_CLOUD = f"""#!{sys.executable}
import os, pathlib, shlex, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as calls:
  calls.write(shlex.join([os.path.basename(sys.argv[0])] + args) + "\\n")
if args[:4] == ["compute", "tpus", "queued-resources", "describe"]:
  states = pathlib.Path(os.environ["FAKE_STATES"])
  first, *rest = states.read_text().split()
  states.write_text(" ".join(rest))
  print(first)
elif "FAKE_HOME" not in os.environ:
  pass
elif args[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
  shutil.copy(args[4], pathlib.Path(os.environ["FAKE_HOME"], args[5].split(":", 1)[1]))
elif args[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
  command = next(a for a in args if a.startswith("--command="))[len("--command="):]
  env = dict(os.environ, HOME=os.environ["FAKE_HOME"],
             PATH=os.environ["FAKE_REMOTE_BIN"] + os.pathsep + os.environ["PATH"])
  sys.exit(subprocess.call(["bash", "-c", command], cwd=env["HOME"], env=env))
"""

# Stands in for a program on a worker: writes its pid and argv to $HOME/NAME.json,
# prints a line, then sleeps when $FAKE_SLEEP is set.
_RECORDER = f"""#!{sys.executable}
import json, os, sys, time
name = os.path.basename(sys.argv[0])
path = os.path.join(os.environ["HOME"], name + ".json")
with open(path + ".tmp", "w") as f:
  json.dump({{"pid": os.getpid(), "argv": sys.argv[1:]}}, f)
os.replace(path + ".tmp", path)
print(name, "started")
sys.stdout.flush()
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
"""


def _write_program(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(0o755)


@pytest.fixture(autouse=True)
def cloud(tmp_path, monkeypatch):
  """Fake gcloud and xpk first on the PATH, for every test; returns the recorded calls' reader."""
  fake_bin = tmp_path / "bin"
  for name in ("gcloud", "xpk"):
    _write_program(fake_bin / name, _FAKE_CLOUD)
  calls = tmp_path / "calls.txt"
  calls.write_text("")
  monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
  monkeypatch.setenv("FAKE_CALLS", str(calls))
  monkeypatch.setenv("FAKE_REMOTE_BIN", str(tmp_path / "remote_bin"))
  monkeypatch.setenv("FAKE_STATES", str(tmp_path / "states.txt"))
  monkeypatch.delenv("FAKE_HOME", raising=False)
  return lambda: calls.read_text().splitlines()


@pytest.fixture
def worker_home(tmp_path, monkeypatch):
  """A fake worker's home, in which the fake gcloud runs `tpu-vm ssh` commands."""
  home = tmp_path / "worker_home"
  home.mkdir()
  monkeypatch.setenv("FAKE_HOME", str(home))
  return home


def _run(script, *args, timeout=60):
  """Runs tpu/SCRIPT ARGS in its own process group, which is killed if it outlives `timeout`."""
  with subprocess.Popen([str(TPU / script), *args], cwd=REPO, stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        start_new_session=True) as process:
    try:
      stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, signal.SIGKILL)
      raise
  return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _dry_run(script, *args):
  """The lines `script --dry-run ARGS` prints (xpk.sh: after the subcommand), checking success."""
  result = _run(script, "--dry-run", *args) if script != "xpk.sh" else _run(
      script, args[0], "--dry-run", *args[1:])
  assert result.returncode == 0, result.stderr
  return result.stdout.splitlines()


def _error(script, *args):
  """The one line a failing call prints, after checking exit status 2 and no other output."""
  result = _run(script, *args)
  assert result.returncode == 2, (result.stdout, result.stderr)
  assert result.stdout == ""
  lines = result.stderr.splitlines()
  assert len(lines) == 1, lines
  return lines[0]


def _remote_command(line):
  """The shell command a printed `gcloud ... tpu-vm ssh ... --command=C` line runs on the workers."""
  words = shlex.split(line)
  return next(w for w in words if w.startswith("--command="))[len("--command="):]


# --- create.sh


def test_create_v4_8_single_host():
  assert _dry_run("create.sh", "--tpu", "jaxmm-v4", "--zone", "us-central2-b",
                  "--accelerator-type", "v4-8") == [
                      "gcloud compute tpus queued-resources create jaxmm-v4 --node-id=jaxmm-v4"
                      " --accelerator-type=v4-8 --runtime-version=tpu-ubuntu2204-base"
                      " --zone=us-central2-b",
                      "gcloud compute tpus queued-resources describe jaxmm-v4 --zone=us-central2-b"
                      " '--format=value(state.state)'",
                  ]


def test_create_v5litepod_32_spot_in_a_project():
  assert _dry_run("create.sh", "--tpu=pod", "--zone=us-west4-a", "--project=my-proj",
                  "--accelerator-type=v5litepod-32", "--spot") == [
                      "gcloud compute tpus queued-resources create pod --node-id=pod"
                      " --accelerator-type=v5litepod-32 --runtime-version=v2-alpha-tpuv5-lite"
                      " --zone=us-west4-a --project=my-proj --spot",
                      "gcloud compute tpus queued-resources describe pod --zone=us-west4-a"
                      " --project=my-proj '--format=value(state.state)'",
                  ]


def test_create_reserved_with_a_runtime_version():
  line = _dry_run("create.sh", "--tpu", "t", "--zone", "z", "--accelerator-type", "v6e-16",
                  "--runtime-version", "my-runtime", "--reserved")[0]
  assert line.endswith("--accelerator-type=v6e-16 --runtime-version=my-runtime --zone=z --reserved")


def test_create_waits_until_active_and_runs_what_dry_run_prints(cloud, tmp_path):
  args = ("--tpu", "t", "--zone", "z", "--accelerator-type", "v4-8", "--poll-seconds", "1")
  printed = _dry_run("create.sh", *args)
  (tmp_path / "states.txt").write_text("WAITING_FOR_RESOURCES PROVISIONING ACTIVE")
  result = _run("create.sh", *args)
  assert result.returncode == 0, result.stderr
  assert cloud() == printed[:1] + printed[1:] * 3
  assert "t is PROVISIONING" in result.stderr and "t is ACTIVE" in result.stderr


def test_create_fails_when_the_request_fails(cloud, tmp_path):
  (tmp_path / "states.txt").write_text("WAITING_FOR_RESOURCES FAILED")
  result = _run("create.sh", "--tpu", "t", "--zone", "z", "--accelerator-type", "v4-8",
                "--poll-seconds", "1")
  assert result.returncode == 2
  assert "create.sh: error: queued resource t is FAILED" in result.stderr
  assert len(cloud()) == 3


# --- setup.sh


def test_setup_copies_head_to_all_workers_and_installs_with_the_constraints():
  pack, copy, install = _dry_run("setup.sh", "--tpu", "pod", "--zone", "us-west4-a", "--project",
                                 "my-proj")
  archive = shlex.split(pack)[-2][len("--output="):]
  assert pack == f"git -C {REPO} archive --format=tar.gz --output={archive} HEAD"
  assert archive.endswith("/jaxmm.tar.gz")
  assert copy == (f"gcloud compute tpus tpu-vm scp {archive} pod:jaxmm.tar.gz --zone=us-west4-a"
                  " --project=my-proj --worker=all")
  assert install.startswith("gcloud compute tpus tpu-vm ssh pod --zone=us-west4-a"
                            " --project=my-proj --worker=all '--command=")
  remote = _remote_command(install)
  assert remote.startswith("mkdir -p ~/jaxmm && cd ~/jaxmm && set -e; ")
  assert "uv venv --seed --python 3.11 .venv" in remote
  assert ".venv/bin/pip install --quiet -c constraints.txt 'jax[tpu]' -e '.[gcs]'" in remote


def test_setup_unpacks_head_on_a_worker_keeping_its_venv(cloud, worker_home, tmp_path):
  checkout = worker_home / "jaxmm"
  (checkout / "stale.py").parent.mkdir()
  (checkout / "stale.py").write_text("")
  _write_program(checkout / ".venv" / "bin" / "python", "#!/bin/sh\n")
  _write_program(checkout / ".venv" / "bin" / "pip", _RECORDER)
  _write_program(tmp_path / "remote_bin" / "python3", _RECORDER)
  result = _run("setup.sh", "--tpu", "t", "--zone", "z")
  assert result.returncode == 0, result.stderr
  assert [c.split()[:5] for c in cloud()] == [["gcloud", "compute", "tpus", "tpu-vm", "scp"],
                                              ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
  assert (checkout / "setup.py").is_file() and (checkout / "constraints.txt").is_file()
  assert not (checkout / "stale.py").exists()
  assert json.loads((worker_home / "pip.json").read_text())["argv"] == [
      "install", "--quiet", "-c", "constraints.txt", "jax[tpu]", "-e", ".[gcs]"
  ]
  assert json.loads((worker_home / "python3.json").read_text())["argv"][:3] == ["-m", "pip", "install"]


# --- launch.sh


def test_launch_runs_a_command_with_spaces_on_all_workers():
  [line] = _dry_run("launch.sh", "--tpu", "t", "--zone", "z", "--project", "p", "--run-name", "r1",
                    "--", "bash", "-c", "echo hello world")
  assert line.startswith("gcloud compute tpus tpu-vm ssh t --zone=z --project=p --worker=all '--command=")
  remote = _remote_command(line)
  assert remote.endswith("ln -sfn r1.log logs/latest.log && "
                         "{ nohup bash -c 'echo hello world' > logs/r1.log 2>&1 < /dev/null & }")
  start = remote[remote.index("nohup "):]
  assert shlex.split(start)[:4] == ["nohup", "bash", "-c", "echo hello world"]


def test_launch_config_form_is_jaxmm_train_with_overrides():
  [line] = _dry_run("launch.sh", "--tpu", "pod", "--zone", "us-west4-a", "--run-name", "b16",
                    "--config", "configs/siglip_shapes.py:base", "--workdir", "gs://bucket/runs/b16",
                    "--config.optim.lr=3e-4", "--config.mesh.fsdp", "4")
  assert ("{ nohup jaxmm train --config configs/siglip_shapes.py:base --workdir gs://bucket/runs/b16"
          " --config.optim.lr=3e-4 --config.mesh.fsdp=4 > logs/b16.log 2>&1 < /dev/null & }"
         ) == _remote_command(line).split(" && ")[-1]


def test_launch_warns_about_a_workdir_that_is_not_shared():
  result = _run("launch.sh", "--tpu", "t", "--zone", "z", "--config", "c.py", "--workdir", "runs/x",
                "--dry-run")
  assert result.returncode == 0
  assert "warning: --workdir runs/x is on each worker's own disk" in result.stderr


def _wait_for(path, seconds=20):
  deadline = time.monotonic() + seconds
  while not (path.exists() and path.read_text()):
    assert time.monotonic() < deadline, f"{path} was not written"
    time.sleep(0.1)
  time.sleep(0.1)  # the writer may still be flushing
  return path.read_text()


@pytest.mark.parametrize("form", ["command", "config"])
def test_launch_starts_detached_on_a_worker_with_the_exact_words(worker_home, monkeypatch, form):
  home = worker_home
  venv_bin = home / "jaxmm" / ".venv" / "bin"
  (venv_bin / "activate").parent.mkdir(parents=True)
  (venv_bin / "activate").write_text(f'PATH="{venv_bin}:$PATH"\n')
  _write_program(venv_bin / "jaxmm", _RECORDER)
  monkeypatch.setenv("FAKE_SLEEP", "300")  # still running when launch.sh has returned
  if form == "command":
    words = ["jaxmm", "train", "hello world", "it's", "$HOME", "--config.optim.lr=3e-4"]
    args = ["--", *words]
  else:
    words = ["jaxmm", "train", "--config", "configs/siglip_shapes.py:base", "--workdir", "gs://b/run",
             "--config.optim.lr=3e-4"]
    args = words[2:]
  result = _run("launch.sh", "--tpu", "t", "--zone", "z", "--run-name", "r1", *args, timeout=30)
  assert result.returncode == 0, result.stderr
  recorded = json.loads(_wait_for(home / "jaxmm.json"))
  try:
    assert recorded["argv"] == words[1:]
    assert _wait_for(home / "jaxmm" / "logs" / "latest.log") == "jaxmm started\n"
    assert os.readlink(home / "jaxmm" / "logs" / "latest.log") == "r1.log"
  finally:
    os.kill(recorded["pid"], signal.SIGKILL)


def test_launch_on_a_worker_without_setup_says_so(worker_home):
  result = _run("launch.sh", "--tpu", "t", "--zone", "z", "--", "true")
  assert result.returncode == 1
  assert "jaxmm is not installed; run tpu/setup.sh" in result.stderr


def test_launch_refuses_two_commands():
  assert _error("launch.sh", "--tpu", "t", "--zone", "z", "--config", "c.py", "--workdir", "w",
                "--", "ls") == ("launch.sh: error: give either --config FILE --workdir DIR or "
                                "-- COMMAND..., not both")


# --- logs.sh, sync.sh, delete.sh


def test_logs_follows_every_worker_or_one():
  [every] = _dry_run("logs.sh", "--tpu", "t", "--zone", "z")
  assert "--worker=all" in shlex.split(every)
  assert _remote_command(every) == ("mkdir -p ~/jaxmm && cd ~/jaxmm && tail -n 100 -F logs/latest.log"
                                    ' | sed -u "s/^/[$(hostname)] /"')
  [one] = _dry_run("logs.sh", "--tpu", "t", "--zone", "z", "--worker", "3", "--run-name", "r1")
  assert "--worker=3" in shlex.split(one) and "logs/r1.log" in _remote_command(one)


def test_sync_either_direction():
  assert _dry_run("sync.sh", "gs://bucket/runs/b16", "runs/b16") == [
      "gcloud storage rsync -r gs://bucket/runs/b16 runs/b16"
  ]
  assert _dry_run("sync.sh", "--project", "p", "runs/my run", "gs://bucket/runs/b16") == [
      "gcloud storage rsync -r 'runs/my run' gs://bucket/runs/b16 --project=p"
  ]
  assert "one of SOURCE and DESTINATION must be a gs:// path" in _error("sync.sh", "a", "b")


def test_delete_asks_unless_yes(cloud):
  printed = _dry_run("delete.sh", "--tpu", "t", "--zone", "z", "--project", "p")
  assert printed == ["gcloud compute tpus queued-resources delete t --zone=z --project=p --force --quiet"]
  assert "pass --yes" in _error("delete.sh", "--tpu", "t", "--zone", "z", "--project", "p")
  assert cloud() == []
  assert _run("delete.sh", "--tpu", "t", "--zone", "z", "--project", "p", "--yes").returncode == 0
  assert cloud() == printed


# --- xpk.sh


def test_xpk_cluster_create():
  assert _dry_run("xpk.sh", "cluster-create", "--cluster", "c1", "--tpu-type", "v5litepod-32",
                  "--num-slices", "2", "--spot", "--zone", "us-west4-a", "--project", "p") == [
                      "xpk cluster create --cluster=c1 --tpu-type=v5litepod-32 --num-slices=2 --spot"
                      " --zone=us-west4-a --project=p"
                  ]
  line = _dry_run("xpk.sh", "cluster-create", "--cluster", "c1", "--tpu-type", "v4-8",
                  "--reservation", "my-res")[0]
  assert line == "xpk cluster create --cluster=c1 --tpu-type=v4-8 --num-slices=1 --reservation=my-res"


def test_xpk_workload_with_max_restarts_and_an_image():
  [line] = _dry_run("xpk.sh", "workload-create", "--cluster", "c1", "--workload", "siglip-b16",
                    "--tpu-type", "v5litepod-32", "--num-slices", "2", "--max-restarts", "10",
                    "--docker-image", "gcr.io/p/jaxmm:1", "--zone", "us-west4-a", "--config",
                    "configs/siglip_shapes.py:base", "--workdir", "gs://bucket/runs/b16",
                    "--config.optim.lr=3e-4")
  assert line == ("xpk workload create --cluster=c1 --workload=siglip-b16 --tpu-type=v5litepod-32"
                  " --num-slices=2 --max-restarts=10 --docker-image=gcr.io/p/jaxmm:1"
                  " --zone=us-west4-a '--command=jaxmm train --config configs/siglip_shapes.py:base"
                  " --workdir gs://bucket/runs/b16 --config.optim.lr=3e-4'")


def test_xpk_workload_on_a_base_image_layers_head_and_installs():
  pack, unpack, create = _dry_run("xpk.sh", "workload-create", "--cluster", "c1", "--workload", "w",
                                  "--tpu-type", "v4-8", "--max-restarts", "5", "--base-docker-image",
                                  "python:3.11", "--", "jaxmm", "train", "--config", "c.py:x y")
  archive = shlex.split(pack)[-2][len("--output="):]
  script_dir = str(pathlib.Path(archive).parent / "jaxmm")
  assert pack == f"git -C {REPO} archive --format=tar.gz --output={archive} HEAD"
  assert unpack == f"tar -xzf {archive} -C {script_dir}"
  words = shlex.split(create)
  assert words[:8] == ["xpk", "workload", "create", "--cluster=c1", "--workload=w", "--tpu-type=v4-8",
                       "--num-slices=1", "--max-restarts=5"]
  assert words[8:10] == ["--base-docker-image=python:3.11", f"--script-dir={script_dir}"]
  assert words[10] == ("--command=pip install --quiet -c constraints.txt 'jax[tpu]' -e '.[gcs]' && "
                       "jaxmm train --config 'c.py:x y'")


def test_xpk_list_and_delete(cloud):
  assert _dry_run("xpk.sh", "workload-list", "--cluster", "c1") == ["xpk workload list --cluster=c1"]
  assert _dry_run("xpk.sh", "workload-delete", "--cluster", "c1", "--workload", "w") == [
      "xpk workload delete --cluster=c1 --workload=w --force"
  ]
  assert "pass --yes" in _error("xpk.sh", "cluster-delete", "--cluster", "c1")
  assert _run("xpk.sh", "cluster-delete", "--cluster", "c1", "--zone", "z", "--yes").returncode == 0
  assert cloud() == ["xpk cluster delete --cluster=c1 --zone=z --force"]


@pytest.mark.parametrize("args,message", [
    (["cluster-create", "--cluster", "c", "--tpu-type", "v4-8"],
     "xpk.sh cluster-create: error: give one of --on-demand, --spot, --flex or --reservation"),
    (["cluster-create", "--cluster", "c", "--tpu-type", "v4-8", "--spot", "--on-demand"],
     "xpk.sh cluster-create: error: give one of --on-demand, --spot, --flex or --reservation"),
    (["workload-create", "--cluster", "c", "--workload", "w", "--tpu-type", "v4-8", "--", "ls"],
     "xpk.sh workload-create: error: give one of --docker-image IMAGE"),
    (["workload-create", "--cluster", "c", "--workload", "w", "--tpu-type", "v4-8", "--docker-image",
      "i", "--config", "c.py", "--workdir", "runs/x"],
     "xpk.sh workload-create: error: --workdir must be a gs:// path"),
    (["workload-create", "--cluster", "c", "--workload", "w", "--tpu-type", "v4-8", "--docker-image",
      "i"], "xpk.sh workload-create: error: missing the command"),
    (["cluster-launch"], "xpk.sh: error: unknown subcommand 'cluster-launch'"),
    ([], "xpk.sh: error: missing the subcommand"),
])
def test_xpk_errors(args, message):
  assert _error("xpk.sh", *args).startswith(message)


# --- every script


@pytest.mark.parametrize("script,args,flag", [
    ("create.sh", ["--zone", "z", "--accelerator-type", "v4-8"], "tpu"),
    ("create.sh", ["--tpu", "t", "--accelerator-type", "v4-8"], "zone"),
    ("create.sh", ["--tpu", "t", "--zone", "z"], "accelerator-type"),
    ("setup.sh", ["--zone", "z"], "tpu"),
    ("setup.sh", ["--tpu", "t"], "zone"),
    ("launch.sh", ["--zone", "z", "--", "ls"], "tpu"),
    ("launch.sh", ["--tpu", "t", "--", "ls"], "zone"),
    ("logs.sh", ["--zone", "z"], "tpu"),
    ("delete.sh", ["--tpu", "t"], "zone"),
    ("xpk.sh", ["workload-create", "--cluster", "c", "--tpu-type", "v4-8"], "workload"),
    ("xpk.sh", ["workload-list"], "cluster"),
    ("xpk.sh", ["cluster-delete", "--yes"], "cluster"),
])
def test_a_missing_required_flag_is_one_line(script, args, flag):
  name = script if script != "xpk.sh" else f"xpk.sh {args[0]}"
  assert _error(script, *args, "--dry-run") == (
      f"{name}: error: missing required flag --{flag} (see --help)")


@pytest.mark.parametrize("script,args,message", [
    ("create.sh", ["--tpu", "t", "--zone", "z", "--accelerator-type", "v4-8", "--spot", "--reserved"],
     "create.sh: error: --spot and --reserved exclude each other"),
    ("create.sh", ["--tpu", "t", "--zone", "z", "--accelerator-type", "tpu9-8"],
     "create.sh: error: no default --runtime-version for --accelerator-type tpu9-8; give one"),
    ("create.sh", ["--tpu", "t", "--zone", "z", "--accelerator-type", "v4-8", "--config.x=1"],
     "create.sh: error: unknown flag --config.x (see --help)"),
    ("setup.sh", ["--tpu", "t", "--zone", "z", "--worker", "0"],
     "setup.sh: error: unknown flag --worker (see --help)"),
    ("setup.sh", ["--tpu", "t", "--zone"], "setup.sh: error: --zone needs a value"),
    ("launch.sh", ["--tpu", "t", "--zone", "z"], "launch.sh: error: missing the command"),
    ("launch.sh", ["--tpu", "t", "--zone", "z", "--run-name", "a b", "--", "ls"],
     "launch.sh: error: --run-name may hold only"),
    ("launch.sh", ["--tpu", "t", "--zone", "z", "--workdir", "gs://b/r", "--", "ls"],
     "launch.sh: error: --workdir and --config.KEY=VALUE need --config FILE[:ARG]"),
    ("launch.sh", ["--tpu", "t", "--zone", "z", "ls"], "launch.sh: error: unexpected argument 'ls'"),
    ("logs.sh", ["--tpu", "t", "--zone", "z", "--worker", "first"], "logs.sh: error: --worker must be"),
    ("sync.sh", ["gs://b/r"], "sync.sh: error: give SOURCE and DESTINATION (see --help)"),
])
def test_bad_input_is_one_line(script, args, message):
  assert _error(script, *args, "--dry-run").startswith(message)


@pytest.mark.parametrize("script", [s.name for s in SCRIPTS if s.name != "common.sh"])
def test_help(script):
  result = _run(script, "--help")
  assert result.returncode == 0 and result.stderr == ""
  assert result.stdout.startswith(f"usage: tpu/{script}")
  assert "--dry-run" in result.stdout


def _shellcheck():
  beside_python = pathlib.Path(sys.executable).parent / "shellcheck"
  return str(beside_python) if beside_python.exists() else shutil.which("shellcheck")


def test_shellcheck_finds_nothing():
  shellcheck = _shellcheck()
  assert shellcheck, "shellcheck is missing: pip install -c constraints.txt -e '.[test]' provides it"
  assert {s.name for s in SCRIPTS} >= {"common.sh", "create.sh", "setup.sh", "launch.sh", "logs.sh",
                                       "sync.sh", "delete.sh", "xpk.sh"}
  result = subprocess.run([shellcheck, *map(str, SCRIPTS)], cwd=REPO, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stdout + result.stderr


def test_the_scripts_print_what_python_would_quote():
  """The dry-run printer quotes as shlex.quote does, so every printed line splits back exactly."""
  words = ["plain", "", "a b", "it's", "$HOME", "--config.optim.lr=3e-4", "x;y", "~/f", "é"]
  [line] = _dry_run("launch.sh", "--tpu", "t", "--zone", "z", "--run-name", "r", "--", *words)
  start = _remote_command(line).split(" && ")[-1]
  assert re.fullmatch(r"\{ nohup (.*) > logs/r\.log 2>&1 < /dev/null & \}", start)
  assert start[len("{ nohup "):-len(" > logs/r.log 2>&1 < /dev/null & }")] == shlex.join(words)
  assert line == shlex.join(shlex.split(line))
