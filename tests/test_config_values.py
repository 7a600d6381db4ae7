"""Config values that would fail late fail early, in one line that names the key.

Every float of a resolved config is finite (nan or inf fails at load time);
an `init_from.workdir` without a run names the key and where it was looked
for; resuming a workdir with another experiment's config says so first.
"""
import inspect
import os
import pathlib
import types

import ml_collections
import numpy as np
import pytest

from conftest import cli_error_line
from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import errors
from jaxmm.commands import cli
from jaxmm.train import compatibility
from jaxmm.train import init_from

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
  monkeypatch.chdir(REPO)


@pytest.mark.parametrize("override,key,shown", [
    ("diffusion.schedule_args.P_mean=nan", "diffusion.schedule_args.P_mean", "nan"),
    ("optim.lr=inf", "optim.lr", "inf"),
    ("optim.lr=1e999", "optim.lr", "inf"),
])
def test_train_refuses_a_nonfinite_float_before_anything_runs(capsys, tmp_path, override, key,
                                                              shown):
  workdir, a_file = tmp_path / "run", tmp_path / "file"
  a_file.write_text("")
  # A run that got past the check would fail at once too, at its data_dir, with another line.
  line = cli_error_line(capsys, [
      "train", "--config", "configs/edm_shapes.py", "--workdir",
      str(workdir), f"--config.data.data_dir={a_file}", f"--config.{override}"
  ])
  assert line == (f"jaxmm train: error: {key}={shown}: nan and inf are not allowed; set "
                  f"--config.{key} to a finite value")
  assert not workdir.exists()


def test_inspect_refuses_a_nonfinite_float_inside_a_tuple(capsys):
  line = cli_error_line(capsys, [
      "inspect", "--config", "configs/edm_toy2d.py", "--config.ema.sigma_rels=(0.1, 1e999)"
  ])
  assert line == ("jaxmm inspect: error: ema.sigma_rels=(0.1, inf): nan and inf are not "
                  "allowed; set --config.ema.sigma_rels to a finite value")


def test_a_nonfinite_float_in_the_config_file_is_refused_too(capsys, tmp_path):
  path = tmp_path / "bad.py"
  path.write_text("import ml_collections\n\ndef get_config():\n"
                  "  return ml_collections.ConfigDict(dict(optim=dict(lr=float('nan'))))\n")
  line = cli_error_line(capsys, ["inspect", "--config", str(path)])
  assert line.startswith("jaxmm inspect: error: optim.lr=nan: nan and inf are not allowed")


def test_a_bad_override_leaves_the_config_unchanged():
  config = config_loading.load_config("configs/edm_toy2d.py")
  with pytest.raises(config_loading.ConfigError, match="optim.lr=nan"):
    config_loading.apply_overrides(config, ["seed=3", "optim.lr=nan"])
  assert (config.seed, config.optim.lr) == (0, 2e-3)


def _shipped_specs() -> list[str]:
  """Every config file that has a default variant, and the other variant of each family (a file
  without get_config holds code that configs share, such as configs/imported_run.py)."""
  paths = sorted(str(path.relative_to(REPO)) for path in (REPO / "configs").glob("[!_]*.py"))
  modules = {path: config_loading.import_config_file(path) for path in paths}
  defaults = [
      path for path, module in modules.items() if hasattr(module, "get_config") and all(
          parameter.default is not parameter.empty
          for parameter in inspect.signature(module.get_config).parameters.values())
  ]
  return defaults + [
      "configs/siglip_shapes.py:base", "configs/edm_shapes.py:dit",
      "configs/supcon_shapes.py:resnet18"
  ]


def test_shipped_configs_hold_only_finite_floats():
  # No shipped config uses inf or nan (an 'off' value, say), so the check refuses them all.
  for spec in _shipped_specs():
    config_loading.apply_overrides(config_loading.load_config(spec), [])


def test_init_from_without_a_run_names_the_key_and_where_it_looked(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  spec = ml_collections.ConfigDict(dict(workdir="runs/source", step=None, subtrees={"a": "a"}))
  state = types.SimpleNamespace(params={"a": np.zeros(2)}, ema={})
  with pytest.raises(errors.UserError) as e:
    init_from.apply(state, spec, None)
  assert str(e.value).startswith(
      f"init_from.workdir='runs/source' (looked for in {tmp_path / 'runs' / 'source'}, from the "
      "current folder): no run in 'runs/source': there is no such folder")
  spec.workdir = str(tmp_path / "elsewhere")
  with pytest.raises(errors.UserError, match=r"^init_from.workdir='[^']*elsewhere': no run in"):
    init_from.apply(state, spec, None)


_OTHER_EXPERIMENT = ("the --workdir holds an experiment='diffusion' run (checkpoint 2); this "
                     "config is experiment='image_text': choose another --workdir, or resume that "
                     "run with the config it was trained with (its config.json)")


def test_resuming_another_experiments_checkpoint_says_so_first():
  changes = compatibility.config_changes(
      {"experiment": "diffusion", "model": {"name": "mlp_denoiser", "width": 16}},
      {"experiment": "image_text", "model": {"name": "two_tower", "width": 32}})
  saved = {"params": {"net": np.zeros((16,))}}
  target = {"params": {"image_tower": np.zeros((32,))}}
  with pytest.raises(errors.UserError) as e:
    compatibility.check_resumable(saved, target, changes, 2)
  assert str(e.value) == _OTHER_EXPERIMENT


@pytest.mark.slow
def test_resuming_another_experiments_run_fails_in_one_short_line(capsys, tmp_path,
                                                                  shapes_data_dir, tiny_overrides):
  workdir = tmp_path / "run"
  cli.main([
      "train", "--config", "configs/edm_toy2d.py", "--workdir",
      str(workdir), "--config.batch_size=16", "--config.total_steps=2", "--config.model.depth=1",
      "--config.model.width=16", "--config.model.mlp_dim=16", "--config.optim.warmup_steps=1",
      "--config.eval_every=0"
  ])
  siglip = ["train", "--config", "configs/siglip_shapes.py", "--workdir", str(workdir)]
  siglip += [f"--config.{o}" for o in tiny_overrides + [f"data.data_dir={shapes_data_dir}"]]
  line = cli_error_line(capsys, siglip + ["--config.total_steps=4", "--config.eval_every=0"])
  assert line == f"jaxmm train: error: {_OTHER_EXPERIMENT}"
  assert analysis.checkpoint_steps(str(workdir)) == [2]
  assert os.listdir(workdir / "config_history") == ["launch_001_from_step_0.json"]
