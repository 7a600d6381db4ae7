"""Workdirs, sweep folders and data dirs in a bucket (`gs://`).

A fake `gs://` filesystem serves a local folder to fsspec, which is what
etils.epath uses for buckets when TensorFlow is absent; tensorboardX gets a
writer for it. Orbax's bucket backend talks to Cloud Storage through
tensorstore's own driver, which cannot be faked in-process, so orbax is given the
local folder behind the fake bucket: the checkpoints land in the same place, and
every other file of the run goes through the `gs://` paths under test.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time

from etils import epath
from fsspec.registry import _registry as fsspec_registry
from fsspec.implementations import local
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboardX import record_writer

from jaxmm import analysis
from jaxmm.commands import cli
from jaxmm.commands import sample
from jaxmm.data import sources
from jaxmm import storage
from jaxmm.sweeps import plan
from jaxmm.runs import checkpoints

from conftest import cli_error_line

BUCKET = "gs://bucket"
SIGLIP_CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "siglip_shapes.py")


class FakeBucketFileSystem(local.LocalFileSystem):
  """fsspec's local filesystem, serving `gs://NAME/...` from the folder `root/NAME/...`."""
  protocol = ("gs", "gcs")
  root = None  # set by the `bucket` fixture; fsspec and epath cache filesystem instances

  @classmethod
  def local_path(cls, path) -> str:
    path = os.fspath(path)
    return os.path.join(cls.root, path[len("gs://"):]) if path.startswith("gs://") else path

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    if path.startswith("gs://"):
      return cls.local_path(path).rstrip("/")
    return super()._strip_protocol(path)


class FakeEventWriterFactory:
  """tensorboardX's writer factory for `gs://` (its own needs the Cloud Storage client)."""

  def open(self, path):
    path = FakeBucketFileSystem.local_path(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, "wb")  # pylint: disable=consider-using-with

  def directory_check(self, path):
    del path


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """The local folder that holds the objects of the fake bucket `gs://bucket`."""
  monkeypatch.setattr(FakeBucketFileSystem, "root", str(tmp_path / "objects"))
  for protocol in FakeBucketFileSystem.protocol:
    monkeypatch.setitem(fsspec_registry, protocol, FakeBucketFileSystem)
  monkeypatch.setitem(record_writer.REGISTERED_FACTORIES, "gs", FakeEventWriterFactory())
  manager_cls = ocp.CheckpointManager
  monkeypatch.setattr(
      checkpoints.ocp, "CheckpointManager",
      lambda directory, **kw: manager_cls(FakeBucketFileSystem.local_path(directory), **kw))
  root = tmp_path / "objects" / "bucket"
  root.mkdir(parents=True)
  return root


def test_the_fake_bucket_is_not_local(bucket):
  path = f"{BUCKET}/a/b.txt"
  assert not storage.is_local(path) and storage.absolute(path) == path
  storage.write_text(path, "one\n")
  storage.append_text(path, "two\n")
  assert (bucket / "a" / "b.txt").read_text() == "one\ntwo\n"
  assert storage.files_under(f"{BUCKET}/a") == [path]
  storage.move(f"{BUCKET}/a", f"{BUCKET}/c")
  assert storage.list_dir(BUCKET) == ["c"] and storage.read_text(f"{BUCKET}/c/b.txt") == "one\ntwo\n"


def test_train_resume_inspect_and_load_a_run_in_a_bucket(bucket, shapes_data_dir, tiny_overrides,
                                                          capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a stray local "gs:" folder would appear here
  workdir = f"{BUCKET}/runs/siglip"
  command = [
      "train", "--config", SIGLIP_CONFIG, "--workdir", workdir,
      f"--config.data.data_dir={shapes_data_dir}", "--config.log_every=1",
      "--config.checkpoint_every=2", "--config.eval_every=2"
  ] + [f"--config.{o}" for o in tiny_overrides]
  cli.main(command + ["--config.total_steps=2"])
  cli.main(command + ["--config.total_steps=4"])  # resumes from step 2

  run_dir = bucket / "runs" / "siglip"
  assert sorted(os.listdir(run_dir / "config_history")) == [
      "launch_001_from_step_0.json", "launch_002_from_step_2.json"
  ]
  assert json.loads((run_dir / "config.json").read_text())["total_steps"] == 4
  logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in logged if "train/loss" in r] == [1, 2, 3, 4]
  assert set(json.loads((run_dir / "zero_shot.json").read_text())) == {"2", "4"}
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir))
  assert not os.path.exists(tmp_path / "gs:") and "jaxmm.lock" not in os.listdir(run_dir)

  run = analysis.load_run(workdir)
  assert run.step == 4
  assert np.isfinite(run.metrics()["train/loss"]).all() and len(run.metrics()["step"]) == 4
  capsys.readouterr()
  cli.main(["inspect", "--run", workdir, "--json"])
  summary = json.loads(capsys.readouterr().out)
  assert summary["step"] == 4 and summary["steps"] == [2, 4]


def test_a_damaged_checkpoint_in_a_bucket_is_set_aside(bucket):
  step_dir = f"{BUCKET}/run/{checkpoints.CHECKPOINT_DIR}/3"
  storage.write_text(f"{step_dir}/state/_METADATA", "{not json")
  storage.write_text(f"{step_dir}/data/metadata", "{}")

  class Manager:
    directory = epath.Path(f"{BUCKET}/run/{checkpoints.CHECKPOINT_DIR}")

    def reload(self):
      pass

  target = checkpoints.set_aside(Manager(), 3, ValueError("cannot decode"))
  assert target == f"{BUCKET}/run/{checkpoints.DAMAGED_DIR}/3"
  assert (bucket / "run" / checkpoints.DAMAGED_DIR / "3" / "state" / "_METADATA").exists()
  assert not (bucket / "run" / checkpoints.CHECKPOINT_DIR / "3").exists()
  assert checkpoints.damaged_file(target, ValueError("?")) == f"{target}/state/_METADATA"


def test_sample_files_in_a_bucket(bucket):
  images = np.linspace(-1, 1, 4 * 8 * 8 * 3, dtype=np.float32).reshape(4, 8, 8, 3)
  config = type("Config", (), {"model": type("Model", (), {"num_classes": (4,)})})
  sample.write_samples(f"{BUCKET}/out/grid.png", images, None, config)
  sample.write_samples(f"{BUCKET}/out/samples.npz", images, np.arange(4), config)
  assert (bucket / "out" / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with np.load(bucket / "out" / "samples.npz") as saved:
    np.testing.assert_array_equal(saved["images"], images)
    np.testing.assert_array_equal(saved["labels"], np.arange(4))


def test_a_sweep_in_a_bucket_plans_records_and_summarizes(bucket, capsys):
  workdir = f"{BUCKET}/sweeps/lr"
  cli.main(["sweep", "--config", SIGLIP_CONFIG, "--workdir", workdir, "--dry-run"])
  assert f"--workdir {workdir}/" in capsys.readouterr().out
  sweep = plan.plan(SIGLIP_CONFIG, workdir, [])
  plan.write_record(sweep)
  first = sweep.points[0].name
  storage.write_text(f"{workdir}/{first}/config.json", json.dumps({"total_steps": 10}))
  storage.write_text(f"{workdir}/{first}/metrics.jsonl", '{"step": 5, "train/loss": 0.25}\n')
  cli.main(["sweep", "--summarize", workdir])
  summary = (bucket / "sweeps" / "lr" / "summary.csv").read_text().splitlines()
  assert len(summary) == 1 + len(sweep.points) and summary[1].startswith(first)
  assert summary[1].split(",")[-1] == "0.25"
  with pytest.raises(SystemExit):
    cli.main(["sweep", "--config", SIGLIP_CONFIG, "--workdir", workdir, "--launcher", "slurm"])
  assert "shared filesystem" in capsys.readouterr().err


def test_a_bundled_dataset_is_copied_to_a_bucket_data_dir(bucket, monkeypatch):
  built = []

  class TinyBuilder:
    name = "tiny"

    def __init__(self, data_dir):
      self.data_dir = os.path.join(data_dir, "tiny", "1.0.0")

    def download_and_prepare(self):
      built.append(self.data_dir)
      os.makedirs(self.data_dir)
      for name, text in [("dataset_info.json", "{}"), ("tiny-train.array_record-00000", "x")]:
        with open(os.path.join(self.data_dir, name), "w") as f:
          f.write(text)

  data_dir = sources.resolve_data_dir(f"{BUCKET}/tfds")
  assert data_dir == f"{BUCKET}/tfds"
  sources._build_bundled(TinyBuilder, data_dir)  # pylint: disable=protected-access
  assert sorted(os.listdir(bucket / "tfds" / "tiny" / "1.0.0")) == [
      "dataset_info.json", "tiny-train.array_record-00000"
  ]
  assert built and not built[0].startswith("gs://")
  assert sources._prepared_datasets(data_dir) == {"tiny": ["tiny:1.0.0"]}  # pylint: disable=protected-access


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
@pytest.mark.parametrize("command", [
    ["train", "--config", SIGLIP_CONFIG, "--workdir", "gs://nonexistent-bucket/run"],
    ["inspect", "--run", "gs://nonexistent-bucket/run"],
])
def test_a_bucket_without_the_gcs_extra_is_one_line(command):
  result = subprocess.run([sys.executable, "-m", "jaxmm.commands.cli"] + command,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.splitlines() == [
      f"jaxmm {command[0]}: error: gs://nonexistent-bucket: reading a bucket needs a package "
      "that is missing (ImportError: Please install gcsfs to access Google Storage); install "
      "jaxmm's [gcs] extra: pip install 'jaxmm[gcs]'"
  ]


class HttpError(Exception):
  """gcsfs's error for an HTTP status other than 404: the status is its `code`."""

  def __init__(self, message, code):
    super().__init__(message)
    self.code = code


@pytest.fixture
def failing_bucket(bucket, monkeypatch):
  """fail(name, error=None): every read of gs://NAME raises `error`, or with None never ends
  (as gcsfs's, which retries for a minute without a network); the first read of a bucket may
  take 1 s."""
  monkeypatch.setattr(storage, "PROBE_TIMEOUT_S", 1)
  monkeypatch.setattr(storage, "_NETWORK_CHECK_S", 0.2)
  info = FakeBucketFileSystem.info
  stop_hanging = threading.Event()

  def fail(name, error=None):

    def failing_info(self, path, **kwargs):
      if os.fspath(path).startswith(f"gs://{name}"):
        if error is not None:
          raise error
        stop_hanging.wait()
      return info(self, path, **kwargs)

    monkeypatch.setattr(FakeBucketFileSystem, "info", failing_info)

  yield fail
  stop_hanging.set()


def _resolves(monkeypatch, answer):
  """Host names resolve to `answer` (a list), or fail as without a network (answer None)."""

  def getaddrinfo(host, *args, **kwargs):
    del args, kwargs
    if answer is None:
      raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return answer

  monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("command", ["train", "inspect"])
def test_a_bucket_without_a_network_is_one_line_within_seconds(failing_bucket, capsys,
                                                               monkeypatch, command):
  failing_bucket("offline")
  _resolves(monkeypatch, None)
  workdir = f"gs://offline/{command}"
  args = (["train", "--config", SIGLIP_CONFIG, "--workdir", workdir]
          if command == "train" else ["inspect", "--run", workdir])
  start = time.monotonic()
  line = cli_error_line(capsys, args)
  assert line == (f"jaxmm {command}: error: gs://offline: this machine has no network connection "
                  "to Cloud Storage (storage.googleapis.com: Name or service not known)")
  assert time.monotonic() - start < 10


def test_a_bucket_that_does_not_answer_points_to_the_credentials(failing_bucket, capsys,
                                                                 monkeypatch):
  failing_bucket("silent")
  _resolves(monkeypatch, [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 443))])
  line = cli_error_line(capsys, ["inspect", "--run", "gs://silent/run"])
  assert line == ("jaxmm inspect: error: gs://silent gave no answer within 1 s; check the "
                  "credentials (run `gcloud auth application-default login`, or set "
                  "GOOGLE_APPLICATION_CREDENTIALS to a service account key) and any proxy settings")


def test_a_bucket_that_refuses_access_names_the_credentials(failing_bucket, capsys):
  failing_bucket(
      "private",
      HttpError("Anonymous caller does not have storage.objects.get access to the Google Cloud "
                "Storage object., 401", 401))
  line = cli_error_line(capsys, ["inspect", "--run", "gs://private/run"])
  assert line == ("jaxmm inspect: error: gs://private refused access (HttpError: Anonymous caller "
                  "does not have storage.objects.get access to the Google Cloud Storage object., "
                  "401); check the credentials (run `gcloud auth application-default login`, or "
                  "set GOOGLE_APPLICATION_CREDENTIALS to a service account key), for an account "
                  "that may use the bucket")
