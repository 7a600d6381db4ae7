"""Every user mistake ends in one line `jaxmm <command>: error: ...` that says what to change."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import cli_error_line

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  monkeypatch.chdir(REPO)


def _train_args(workdir, data_dir, tiny_overrides, *overrides):
  return ([
      "train", "--config", "configs/siglip_shapes.py", "--workdir",
      str(workdir), f"--config.data.data_dir={data_dir}"
  ] + [f"--config.{o}" for o in tiny_overrides] + [f"--config.{o}" for o in overrides])


@pytest.mark.parametrize("override,expected", [
    ("batch_size=0", "batch_size=0 must be an integer >= 1"),
    ("total_steps=0", "total_steps=0 must be an integer >= 1"),
    ("log_every=0", "log_every=0 must be an integer >= 1"),
    ("checkpoint_every=0", "checkpoint_every=0 must be an integer >= 1"),
    ("keep_checkpoints=0", "keep_checkpoints=0 must be an integer >= 1"),
    ("eval_every=-1", "eval_every=-1 must be an integer >= 0"),
    ("optim.warmup_steps=10", "optim.warmup_steps=10 must lie in [0, total_steps=10)"),
    ("optim.grad_clip_norm=-1.0", "optim.grad_clip_norm=-1.0 must be a number >= 0"),
    ("optim.lr=-0.1", "optim.lr=-0.1 must be a number > 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1 must be a number >= 0"),
    ("optim.name=adam", "optim.name='adam' is not one of 'adamw', 'sgd'"),
    ("optim.schedule=cosin", "did you mean 'cosine'?"),
    ("on_nonfinite=ignore", "on_nonfinite='ignore' is not one of 'stop', 'skip'"),
    ("experiment=imagetext", "did you mean 'image_text'?"),
    ("loss.name=sigmoid", "loss.name='sigmoid' is not one of 'siglip', 'clip'"),
    ("model.name=twotower", "did you mean 'two_tower'?"),
    ("model.dtype=bfloat17", "did you mean 'bfloat16'?"),
    ("model.attention=flash", "model.attention='flash' is not one of 'xla', 'cudnn'"),
    ("model.attention=cudnn", "needs an NVIDIA GPU"),
    ("model.image.pool=avg", "model.image.pool='avg' is not one of 'gap', 'cls', 'map'"),
    ("model.image.stem=convs", "did you mean 'conv'?"),
    ("model.image.width=0", "model.image.width=0 must be an integer >= 1"),
    ("model.image.num_heads=3", "model.image.num_heads=3 must divide model.image.width=32"),
    ("data.tokenizer=words", "data.tokenizer='words' is not a tokenizer"),
    ("data.image_key=img", "data.image_key='img' is not a feature of 'shapes'"),
    ("data.name=shapez", "nearest bundled or prepared datasets: 'shapes'"),
    ("mesh.data=3", "mesh.data=3, mesh.fsdp=1, mesh.tensor=1 needs 3 devices, but 8"),
    ("batch_size=12", "batch_size=12 does not divide over the mesh's batch axes"),
    ("eval.knn.k=5", "unknown config key 'eval.knn.k'; evaluators are now config.evals.NAME = "
     "dict(type=TYPE, ...settings); did you mean 'evals.knn.k'?"),
])
def test_bad_value_is_one_line_naming_the_key(capsys, tmp_path, shapes_data_dir, tiny_overrides,
                                              override, expected):
  line = cli_error_line(capsys, _train_args(tmp_path / "run", shapes_data_dir, tiny_overrides,
                                         override))
  assert line.startswith("jaxmm train: error: ") and expected in line
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_paths_that_are_files(capsys, tmp_path, shapes_data_dir, tiny_overrides):
  a_file = tmp_path / "file"
  a_file.write_text("")
  line = cli_error_line(capsys, _train_args(a_file, shapes_data_dir, tiny_overrides))
  assert f"--workdir {a_file} is a file" in line
  line = cli_error_line(capsys, _train_args(tmp_path / "run", a_file, tiny_overrides))
  assert f"data.data_dir='{a_file}' is a file" in line
  (tmp_path / "run2").mkdir()
  (tmp_path / "run2" / "checkpoints").write_text("")
  line = cli_error_line(capsys, _train_args(tmp_path / "run2", shapes_data_dir, tiny_overrides))
  assert "checkpoints is a file" in line and "--workdir" in line


def test_config_file_that_fails_to_import_names_file_and_line(capsys, tmp_path):
  path = tmp_path / "broken.py"
  path.write_text("import ml_collections\n\ndef get_config():\n"
                  "  return ml_collections.ConfigDict(\n      dict(lr=1e-3 / zero))\n")
  line = cli_error_line(capsys, ["inspect", "--config", str(path)])
  assert line == (f"jaxmm inspect: error: config file {path}, line 5: NameError: "
                  "name 'zero' is not defined")
  path.write_text("def get_config(:\n")
  line = cli_error_line(capsys, ["inspect", "--config", str(path)])
  assert f"config file {path}, line 1: SyntaxError" in line


def _run_cli(args, cwd, env=None):
  return subprocess.run([sys.executable, "-m", "jaxmm.commands.cli"] + args,
                        cwd=cwd,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=300,
                        check=False)


def test_traceback_only_when_asked(tmp_path, shapes_data_dir, tiny_overrides):
  args = _train_args(tmp_path / "run", shapes_data_dir, tiny_overrides, "optim.lr=-1.0")
  quiet = _run_cli(args, REPO)
  assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
  assert quiet.stderr.strip().splitlines()[-1].startswith("jaxmm train: error: optim.lr=-1.0")
  loud = _run_cli(args + ["--traceback"], REPO)
  assert loud.returncode == 2 and "Traceback" in loud.stderr and "UserError" in loud.stderr
  env = dict(os.environ, JAXMM_TRACEBACK="1")
  assert "Traceback" in _run_cli(args, REPO, env).stderr


def test_config_copied_out_of_the_repository_loads(tmp_path):
  shutil.copy(REPO / "configs" / "siglip_shapes.py", tmp_path / "my_siglip.py")
  result = _run_cli(["inspect", "--config", "my_siglip.py", "--config.optim.momentum=0.5"],
                    tmp_path)
  assert result.returncode == 0, result.stderr
  assert "momentum: 0.5" in result.stdout
  # Nothing is installed under a generic top-level name.
  probe = subprocess.run([
      sys.executable, "-c", "import importlib.util as u; "
      "print([n for n in ('experiments', 'configs') if u.find_spec(n)])"
  ],
                         cwd=tmp_path,
                         capture_output=True,
                         text=True,
                         check=True)
  assert probe.stdout.strip() == "[]"
