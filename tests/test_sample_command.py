"""`jaxmm sample` checks its flags and --out before sampling; labels of an unconditional run."""
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import cli_error_line
from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import errors
from jaxmm import train
from jaxmm.commands import cli
from jaxmm.experiments import diffusion as diffusion_experiment

REPO = pathlib.Path(__file__).resolve().parents[1]
JAXMM = (sys.executable, "-m", "jaxmm.commands.cli")
TIMEOUT = 120
# The 2-D toy (configs/edm_toy2d.py) with a small MLP: its steps compile and run in moments.
TOY_OVERRIDES = ("batch_size=16", "eval_every=0", "optim.warmup_steps=0", "model.width=16",
                 "model.depth=1", "model.mlp_dim=16")


def toy_config(*overrides):
  """configs/edm_toy2d.py with TOY_OVERRIDES and `overrides`."""
  config = config_loading.load_config(str(REPO / "configs" / "edm_toy2d.py"))
  return config_loading.apply_overrides(config, list(TOY_OVERRIDES) + list(overrides))


def _run(command, **kwargs) -> subprocess.CompletedProcess:
  """`command` in a child process on one CPU device; its stdout and stderr as text."""
  return subprocess.run(command,
                        cwd=REPO,
                        env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
                        capture_output=True,
                        text=True,
                        timeout=TIMEOUT,
                        check=False,
                        **kwargs)


def _last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


def on_read_only_mount(folder, *args) -> subprocess.CompletedProcess:
  """`jaxmm ARGS` with an empty read-only file system mounted at `folder`, in a user and mount
  namespace of its own (nothing outside sees the mount); skips the test where that is refused."""
  unshare = shutil.which("unshare")
  if unshare is None:
    pytest.skip("needs unshare (util-linux)")
  script = 'mount -t tmpfs -o ro none "$1" || exit 99; shift; exec "$@"'
  result = _run([unshare, "-rm", "sh", "-c", script, "sh", str(folder), *JAXMM, *args])
  if result.returncode == 99 or "unshare: " in result.stderr:
    pytest.skip(f"user and mount namespaces are not allowed here: {result.stderr.strip()}")
  return result


def without_write_permission(folder, *args) -> subprocess.CompletedProcess:
  """`jaxmm ARGS` once `folder` is read-only to its owner; as root, with the capabilities that
  override file permissions dropped (setpriv), since root could write there anyway."""
  os.chmod(folder, 0o555)
  prefix = []
  if os.geteuid() == 0:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
      pytest.skip("as root, needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
  return _run([*prefix, *JAXMM, *args])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_guidance_must_be_finite(capsys, tmp_path, value):
  with pytest.raises(SystemExit) as e:
    cli.main(["sample", "--run", str(tmp_path), f"--guidance={value}", "--out", "x.png"])
  assert e.value.code == 2
  line = _last_line(capsys.readouterr().err)
  assert line == f"jaxmm sample: error: argument --guidance: {value} is not a finite number; " \
                 "give a finite one"


@pytest.mark.parametrize("out,expected", [
    ("file/x.png", "{tmp}/file is a file, not a folder; give a path in a folder"),
    ("folder.npz", "--out {tmp}/folder.npz is a folder; give a file name"),
])
def test_out_that_cannot_be_a_file_fails_before_the_run_is_read(capsys, tmp_path, out, expected):
  (tmp_path / "file").write_text("")
  (tmp_path / "folder.npz").mkdir()
  # No run at --run: had --out been checked after loading it, the error would name --run.
  line = cli_error_line(capsys,
                        ["sample", "--run", str(tmp_path / "none"), "--out", str(tmp_path / out)])
  assert line.startswith("jaxmm sample: error: --out ")
  assert expected.format(tmp=tmp_path) in line


def test_out_on_a_read_only_mount(tmp_path):
  (tmp_path / "ro").mkdir()
  result = on_read_only_mount(tmp_path / "ro", "sample", "--run", str(tmp_path / "none"), "--out",
                              str(tmp_path / "ro" / "grids" / "x.png"))
  assert result.returncode == 2, result.stderr
  assert _last_line(result.stderr) == (
      f"jaxmm sample: error: --out {tmp_path}/ro/grids/x.png: cannot write in {tmp_path}/ro "
      "(Read-only file system); give a path on a writable disk, in a folder you may write to")


def test_out_in_a_folder_without_write_permission(tmp_path):
  (tmp_path / "locked").mkdir()
  result = without_write_permission(tmp_path / "locked", "sample", "--run", str(tmp_path / "none"),
                                    "--out", str(tmp_path / "locked" / "x.npz"))
  assert result.returncode == 2, result.stderr
  assert _last_line(result.stderr) == (
      f"jaxmm sample: error: --out {tmp_path}/locked/x.npz: cannot write in {tmp_path}/locked "
      "(Permission denied); give a path on a writable disk, in a folder you may write to")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  """The workdir of one step of the 2-D toy (configs/edm_toy2d.py): an unconditional run on
  points, not images."""
  workdir = str(tmp_path_factory.mktemp("toy") / "run")
  train.train(toy_config("total_steps=1"), workdir, diffusion_experiment.build)
  return workdir


def test_toy_samples_go_to_npz_not_png(capsys, tmp_path, toy_run):
  png = tmp_path / "x.png"
  line = cli_error_line(capsys, ["sample", "--run", toy_run, "--out", str(png)])
  assert line == (f"jaxmm sample: error: --out {png}: the run's examples are points of shape (2,) "
                  "(data.name='mixture_2d'), not images, so there is no PNG grid of them; end it "
                  "in .npz")
  cli.main(["sample", "--run", toy_run, "--num", "4", "--steps", "1", "--out",
            str(tmp_path / "x.npz")])
  assert np.load(tmp_path / "x.npz")["images"].shape == (4, 2)
  assert not png.exists()


@pytest.mark.parametrize("labels", [np.array([[1, 2]]), np.array([[0]]), [(0,)], []])
def test_labels_for_an_unconditional_run_are_refused(toy_run, labels):
  run = analysis.load_run(toy_run)
  with pytest.raises(errors.UserError, match=r"the run's model is unconditional "
                     r"\(model.num_classes=\(\)\); give no labels"):
    run.sample(num=2, num_steps=1, labels=labels)
