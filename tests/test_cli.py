"""Config loading, command-line overrides and the `jaxmm` command (no training)."""
import json
import math
import pathlib
import os
import subprocess
import sys

import pytest

from jaxmm import config_loading
from jaxmm import train as train_lib
from jaxmm.commands import cli
from jaxmm.experiments import EXPERIMENTS

_TOY_CONFIG = '''
import ml_collections

def get_config(arg="a"):
  return ml_collections.ConfigDict(dict(
      name=arg, steps=10, lr=0.1, remat=False, data_dir=None,
      mesh_shape=(1, 2), optim=dict(lr=1.0, schedule="cosine")))
'''


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  """Config paths below are relative to the repository, as on the command line."""
  monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])


@pytest.fixture
def toy_config_path(tmp_path):
  path = tmp_path / "toy.py"
  path.write_text(_TOY_CONFIG)
  return str(path)


def test_load_config_passes_arg(toy_config_path):
  assert config_loading.load_config(toy_config_path).name == "a"
  assert config_loading.load_config(toy_config_path + ":b").name == "b"


def test_load_config_errors(tmp_path):
  with pytest.raises(config_loading.ConfigError, match="not found"):
    config_loading.load_config(str(tmp_path / "missing.py"))
  path = tmp_path / "empty.py"
  path.write_text("X = 1\n")
  with pytest.raises(config_loading.ConfigError, match="get_config"):
    config_loading.load_config(str(path))


def test_unknown_variant_names_the_valid_ones():
  with pytest.raises(config_loading.ConfigError) as e:
    config_loading.load_config("configs/siglip_shapes.py:huge")
  assert "'huge'" in str(e.value) and "'small'" in str(e.value) and "'base'" in str(e.value)


def test_overrides_parse_by_field_type(toy_config_path):
  config = config_loading.load_config(toy_config_path)
  config_loading.apply_overrides(config, [
      "steps=1e3", "lr=3", "remat=true", "name=x=y", "data_dir=/tmp/d", "mesh_shape=(4, 2)",
      "optim.lr=1e-3", "optim.schedule=None"
  ])
  expected = dict(steps=1000,
                  lr=3.0,
                  remat=True,
                  name="x=y",
                  data_dir="/tmp/d",
                  mesh_shape=(4, 2),
                  optim=dict(lr=0.001, schedule=None))
  assert config.to_dict() == expected
  assert type(config.steps) is int and type(config.lr) is float
  assert type(config.mesh_shape) is tuple


def test_none_field_takes_a_literal(toy_config_path):
  config = config_loading.load_config(toy_config_path)
  config_loading.apply_overrides(config, ["data_dir=7"])
  assert config.data_dir == 7


@pytest.mark.parametrize("override,nearest", [("optim.lrr=1", "optim.lr"),
                                              ("optimizer.lr=1", "optim.lr"), ("step=1", "steps")])
def test_unknown_key_names_nearest(toy_config_path, override, nearest):
  config = config_loading.load_config(toy_config_path)
  with pytest.raises(config_loading.ConfigError) as e:
    config_loading.apply_overrides(config, [override])
  assert f"did you mean '{nearest}'?" in str(e.value)


@pytest.mark.parametrize("override,expected_type", [("steps=2.5", "int"), ("lr=fast", "float"),
                                                    ("remat=maybe", "bool"),
                                                    ("mesh_shape=(1,", "tuple")])
def test_bad_value_names_key_and_type(toy_config_path, override, expected_type):
  config = config_loading.load_config(toy_config_path)
  before = config.to_dict()
  with pytest.raises(config_loading.ConfigError) as e:
    # The good first override must not be applied either.
    config_loading.apply_overrides(config, ["lr=0.5", override])
  key = override.split("=")[0]
  assert f"'{key}'" in str(e.value) and f"expected {expected_type}" in str(e.value)
  assert config.to_dict() == before


@pytest.mark.parametrize("spec", ["configs/siglip_shapes.py", "configs/clip_shapes.py:base"])
def test_json_round_trip(spec):
  config = config_loading.load_config(spec)
  text = config_loading.config_to_json(config)
  assert config_loading.config_from_json(text) == config
  assert json.loads(text)["model"]["image"]["width"] == config.model.image.width


def test_shapes_configs():
  siglip = config_loading.load_config("configs/siglip_shapes.py")
  clip = config_loading.load_config("configs/clip_shapes.py")
  for key in ("experiment", "seed", "total_steps", "batch_size", "log_every", "checkpoint_every",
              "eval_every", "mesh", "data", "model", "optim"):
    assert key in siglip and key in clip
  assert (siglip.loss.name, clip.loss.name) == ("siglip", "clip")
  assert siglip.model.init_bias == -10.0 and clip.model.init_bias is None
  assert math.isclose(math.exp(clip.model.init_log_scale), 1 / 0.07)
  base = config_loading.load_config("configs/siglip_shapes.py:base")
  assert base.model.image.width == 768 and base.model.image.patch_size == 16
  assert base.data.image_size == 224 and base.mesh.fsdp == -1


def test_max_len_is_one_field():
  config = config_loading.load_config("configs/siglip_shapes.py")
  config_loading.apply_overrides(config, ["data.max_len=16"])
  assert config.model.text.max_len == 16


def test_inspect_prints_overridden_config(capsys):
  cli.main([
      "inspect", "--config", "configs/siglip_shapes.py:base", "--config.optim.lr=0.5",
      "--config.mesh.data", "2"
  ])
  out = capsys.readouterr().out
  assert "lr: 0.5" in out and "data: 2" in out and "width: 768" in out


def test_inspect_json(capsys):
  cli.main(["inspect", "--config=configs/clip_shapes.py", "--json", "--config.seed=7"])
  assert json.loads(capsys.readouterr().out)["seed"] == 7


def test_output_into_a_closed_pipe_ends_quietly():
  # As in `jaxmm inspect ... | head -1` once head has left: every write fails with EPIPE.
  read_end, write_end = os.pipe()
  os.close(read_end)
  try:
    result = subprocess.run(
        [
            sys.executable, "-m", "jaxmm.commands.cli", "inspect", "--config",
            "configs/siglip_shapes.py"
        ],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        cwd=pathlib.Path(__file__).resolve().parents[1],
        check=False,
        timeout=120)
  finally:
    os.close(write_end)
  assert result.returncode == 1
  assert result.stderr == ""


@pytest.fixture
def fake_experiment(monkeypatch):
  """Registers experiment 'fake'; records what `jaxmm train` hands the loop instead of training."""
  calls = []
  build = lambda config, workdir, mesh: {}
  monkeypatch.setitem(EXPERIMENTS, "fake", build)
  monkeypatch.setattr(train_lib, "train", lambda config, workdir, b: calls.append(
      (config, workdir, b is build)))
  return calls


def test_train_dispatches_to_experiment(fake_experiment, tmp_path):
  cli.main([
      "train", "--config", "configs/siglip_shapes.py", f"--workdir={tmp_path}",
      "--config.experiment=fake", "--config.optim.lr=0.25", "--config.model.dtype=bfloat16"
  ])
  [(config, workdir, built_by_fake)] = fake_experiment
  assert workdir == str(tmp_path) and built_by_fake
  assert config.optim.lr == 0.25 and config.model.dtype == "bfloat16"
  assert config.total_steps == config_loading.load_config("configs/siglip_shapes.py").total_steps


@pytest.mark.parametrize("bad", ["--config.optim.lrr=1", "--config.total_steps=soon"])
def test_bad_override_exits_before_training(fake_experiment, tmp_path, capsys, bad):
  with pytest.raises(SystemExit) as e:
    cli.main([
        "train", "--config", "configs/siglip_shapes.py", "--workdir",
        str(tmp_path), "--config.experiment=fake", bad
    ])
  assert e.value.code != 0
  assert not fake_experiment
  err = capsys.readouterr().err
  assert ("'optim.lr'" in err) if "lrr" in bad else ("expected int" in err)
