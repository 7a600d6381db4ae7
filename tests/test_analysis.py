"""Restoring runs for analysis: meshes, quiet restores, model functions, metrics, bad paths,
`jaxmm inspect --run` and the example notebook."""
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import cli_error_line
from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import data
from jaxmm import diffusion
from jaxmm import errors
from jaxmm import models
from jaxmm import parallel
from jaxmm import train
from jaxmm.commands import cli
from jaxmm.experiments import diffusion as diffusion_experiment
from jaxmm.runs import sampling
from jaxmm.runs import checkpoints
from jaxmm.train import model_init
from test_checkpoint_damage import (damage_warnings, damaged_copy, live_copy, remove,
                                    rotate_on_first_read, truncate, zero)

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A DiT on 8x8 shapes: the diffusion model that compiles fastest. Its σ_data is not EDM's
# default (0.5), so a denoiser without the run's schedule_args preconditions wrongly.
TINY_DIT = ("batch_size=16", "total_steps=2", "checkpoint_every=1", "log_every=1", "eval_every=0",
            "data.image_size=8", "optim.warmup_steps=1", "model.patch_size=4", "model.width=32",
            "model.depth=1", "model.num_heads=2", "model.mlp_dim=64",
            "diffusion.schedule_args.sigma_data=0.3")


@pytest.fixture(scope="module")
def image_text_run(tiny_config, shapes_data_dir, run_image_text, tmp_path_factory):
  """(workdir, final state) of a tiny SigLIP run trained on the (8, 1, 1) mesh."""
  config = tiny_config("siglip", "total_steps=2", "checkpoint_every=1", "log_every=1",
                       "eval_every=0", "ema.decays=(0.9,)", f"data.data_dir={shapes_data_dir}")
  assert parallel.mesh_shape(config.mesh, jax.device_count()) == (8, 1, 1)
  workdir = str(tmp_path_factory.mktemp("analysis") / "siglip")
  return workdir, run_image_text(config, workdir)


@pytest.fixture(scope="module")
def diffusion_run(shapes_data_dir, tmp_path_factory):
  """The workdir of a tiny class-conditional EDM run (DiT, power EMA, σ_data = 0.3) trained on
  one device."""
  config = config_loading.apply_overrides(
      config_loading.load_config(str(ROOT / "configs/edm_shapes.py:dit")),
      [f"data.data_dir={shapes_data_dir}", *TINY_DIT])
  workdir = str(tmp_path_factory.mktemp("analysis") / "edm")
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  train.run(config, workdir, mesh=mesh, **diffusion_experiment.build(config, workdir, mesh))
  return workdir


MESH_2X2X2 = {"data": 2, "fsdp": 2, "tensor": 2}


def _mesh(name: str) -> jax.sharding.Mesh:
  """'2x2x2': (data, fsdp, tensor) = (2, 2, 2) over the 8 devices; '1 device': the first."""
  if name == "2x2x2":
    return parallel.make_mesh(MESH_2X2X2)
  return parallel.make_mesh({"data": 1}, jax.devices()[:1])


@pytest.mark.parametrize("mesh_name", ["2x2x2", "1 device"])
def test_restores_onto_another_mesh_bit_for_bit_in_the_loops_shardings(
    image_text_run, mesh_name, monkeypatch):
  workdir, _ = image_text_run
  mesh = _mesh(mesh_name)
  targets = []
  restore = checkpoints.restore
  monkeypatch.setattr(checkpoints, "restore",
                      lambda m, s, target: targets.append(target) or restore(m, s, target))
  run = analysis.load_run(workdir, mesh=mesh)
  host = analysis.load_run(workdir)
  # orbax was asked for arrays in their shards, not for host arrays to place afterwards.
  assert all(
      isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding.mesh == mesh
      for leaf in jax.tree.leaves(targets[0]))
  for restored, expected in [(run.params, host.params), (run.ema, host.ema),
                             (run.opt_state, host.opt_state)]:
    restored, expected = jax.tree.leaves(restored), jax.tree.leaves(expected)
    assert len(restored) == len(expected)
    for a, b in zip(restored, expected):
      assert isinstance(a, jax.Array) and a.sharding.mesh == mesh
      np.testing.assert_array_equal(np.asarray(a), b)
  # The shardings are the ones the train loop gives the state on this mesh ...
  model = models.get_model(run.config.model)
  tx, _ = train.make_optimizer(run.config.optim, run.config.total_steps)
  loop_shardings = train.state_shardings(model_init.make_init_variables(model, run.config), tx,
                                         run.config.ema, mesh)
  for array, sharding in zip(jax.tree.leaves(run.params), jax.tree.leaves(loop_shardings.params)):
    assert array.sharding.is_equivalent_to(sharding, array.ndim), (array.sharding, sharding)
  # ... so a tensor-parallel kernel, [embed, mlp] -> (fsdp, tensor), really is split.
  kernel = run.params["image_tower"]["encoder"]["block_0"]["mlp"]["fc1"]["kernel"]
  shard = (kernel.shape[0] // mesh.shape["fsdp"], kernel.shape[1] // mesh.shape["tensor"])
  assert {s.data.shape for s in kernel.addressable_shards} == {shard}
  assert (shard == (16, 32)) == (mesh_name == "2x2x2")


def test_load_run_prints_nothing_with_or_without_a_mesh(image_text_run, capfd, caplog):
  workdir, _ = image_text_run
  mesh = parallel.make_mesh(MESH_2X2X2)
  capfd.readouterr()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    analysis.load_run(workdir)
    analysis.load_run(workdir, step=1, mesh=mesh)
    analysis.checkpoint_steps(workdir)
  assert capfd.readouterr() == ("", "")
  assert not caught
  # pytest routes log records to its own handler; outside it, these would reach stderr.
  assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_embeddings_are_the_models_in_batches(image_text_run):
  workdir, _ = image_text_run
  run = analysis.load_run(workdir)
  model = models.get_model(run.config.model)
  images = np.random.default_rng(0).uniform(-1, 1, (37, 16, 16, 3)).astype(np.float32)
  texts = ["a small red circle at the top", "a large blue star", "", "a cross"]
  tokens = data.tokenize(run.config.data, texts)
  encode = jax.jit(lambda x, method: model.apply({"params": run.params}, x, method=method),
                   static_argnames="method")  # one compilation, not one per operation
  direct_images = encode(images, model.encode_image)
  direct_texts = encode(tokens, model.encode_text)
  embedded = run.embed_images(images, batch_size=16)  # 3 batches, the last padded
  np.testing.assert_allclose(embedded, direct_images, atol=2e-6)
  np.testing.assert_allclose(run.embed_texts(texts), direct_texts, atol=2e-6)
  np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), 1, atol=1e-6)
  sharded = analysis.load_run(workdir, mesh=parallel.make_mesh(MESH_2X2X2))
  np.testing.assert_allclose(sharded.embed_images(images, batch_size=16), direct_images, atol=2e-6)
  np.testing.assert_allclose(sharded.embed_texts(texts), direct_texts, atol=2e-6)


def test_uint8_images_are_normalised_as_the_pipeline_does(image_text_run):
  run = analysis.load_run(image_text_run[0])
  pixels = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
  minus_one_one = pixels.astype(np.float64) / 127.5 - 1  # the run's data has no image_mean/std
  # The two inputs differ by at most one float32 ulp (6e-8) per pixel.
  np.testing.assert_allclose(run.embed_images(pixels),
                             run.embed_images(minus_one_one.astype(np.float32)),
                             atol=1e-5)


def test_embedding_mistakes_say_what_to_pass(image_text_run):
  run = analysis.load_run(image_text_run[0])
  with pytest.raises(errors.UserError, match=r"uint8 images \[N, 16, 16, 3\].*int32 \[2, 16,"):
    run.embed_images(np.zeros((2, 16, 16, 3), np.int32))
  with pytest.raises(errors.UserError, match=r"uint8 images \[N, 16, 16, 3\].*\[2, 32, 32, 3\]"):
    run.embed_images(np.zeros((2, 32, 32, 3), np.float32))
  with pytest.raises(errors.UserError, match=r"a list of texts.*\['a red circle'\]"):
    run.embed_texts("a red circle")


def test_model_functions_of_the_other_kind_of_run_fail_clearly(image_text_run, diffusion_run):
  image_run, denoising_run = analysis.load_run(image_text_run[0]), analysis.load_run(diffusion_run)
  images = np.zeros((1, 8, 8, 3), np.float32)
  for call in (lambda: denoising_run.embed_images(images),
               lambda: denoising_run.embed_texts(["a red circle"])):
    with pytest.raises(errors.UserError,
                       match="needs an experiment='image_text'( or '[a-z]+')* run.*is an "
                       "experiment='diffusion' "
                       "run; it offers run.denoiser, run.sample"):
      call()
  for call in (lambda: image_run.sample(num=2), lambda: image_run.denoiser(images, 1.0)):
    with pytest.raises(errors.UserError,
                       match="needs an experiment='diffusion' run.*offers run.embed_images"):
      call()


def test_denoiser_is_the_guided_denoiser_of_the_chosen_average_and_schedule(diffusion_run):
  run = analysis.load_run(diffusion_run)
  model = models.get_model(run.config.model)
  # The run's own preconditioning: its schedule_args (σ_data = 0.3, not EDM's 0.5) included.
  assert run.config.diffusion.schedule_args.sigma_data == 0.3
  schedule = diffusion.get_schedule(run.config.diffusion.schedule,
                                    **run.config.diffusion.schedule_args)
  x = np.random.default_rng(1).normal(size=(3, 8, 8, 3)).astype(np.float32)
  sigma = np.array([0.5, 2.0, 10.0], np.float32)
  labels = np.array([[0, 1], [2, 3], [5, 7]], np.int32)

  @jax.jit  # one compilation instead of one per operation of the U-Net
  def direct(params):  # D_∅ + 2.5·(D_c − D_∅) of the network in the schedule's preconditioning

    def conditional(x, sigma, labels):
      net = lambda x_in, c_noise: model.apply({"params": params}, x_in, c_noise, labels)
      return diffusion.denoiser(net, schedule)(x, sigma)

    return diffusion.guided_denoiser(conditional, labels, 2.5)(x, sigma)

  averaged = run.denoiser(x, sigma, labels, guidance=2.5)  # default: the first average
  np.testing.assert_allclose(averaged, direct(run.ema["sigma_rel_0.1"]), atol=1e-5)
  raw = run.denoiser(x, sigma, labels, guidance=2.5, ema="none")
  np.testing.assert_allclose(raw, direct(run.params), atol=1e-5)
  assert not np.allclose(raw, averaged, atol=1e-6)
  with pytest.raises(errors.UserError, match=r"labels must be int \[3, 2\].*not \[3\]"):
    run.denoiser(x, sigma, labels[:, 0])
  sharded = analysis.load_run(diffusion_run, mesh=parallel.make_mesh(MESH_2X2X2))
  np.testing.assert_allclose(sharded.denoiser(x, sigma, labels, guidance=2.5), averaged, atol=1e-5)


def test_sample_draws_what_sample_run_draws(diffusion_run):
  run = analysis.load_run(diffusion_run)
  settings = dict(num=6, sampler="euler", num_steps=2, guidance=2.0, labels=[(1, 2), (3, 4)])
  images = run.sample(seed=3, **settings)
  expected, _ = sampling.sample_run(run, seed=3, **settings)
  assert images.shape == (6, 8, 8, 3)
  np.testing.assert_array_equal(images, expected)
  assert not np.array_equal(run.sample(seed=4, **settings), images)


# The largest array file of a checkpoint: every read needs it.
DATA_FILE = "state/ocdbt.process_0/d/*"


def test_sample_passes_over_a_damaged_checkpoint(diffusion_run, tmp_path, capsys, caplog):
  copy, out = str(tmp_path / "edm"), str(tmp_path / "samples.png")
  damaged_copy(diffusion_run, copy, 2, DATA_FILE, truncate)
  with caplog.at_level(logging.WARNING, logger="jaxmm"):
    cli.main(["sample", "--run", copy, "--out", out, "--num", "2", "--steps", "2"])
  assert f"wrote 2 samples of {copy} (step 1) to {out}" in capsys.readouterr().out
  [warning] = damage_warnings(caplog)
  assert warning.startswith(f"checkpoint 2 of {copy} is damaged, reading the one before: ")


@pytest.mark.parametrize("damage", [truncate, zero, remove])
def test_sample_of_a_damaged_step_is_one_line(diffusion_run, tmp_path, capsys, damage):
  copy = str(tmp_path / "edm")
  damaged_copy(diffusion_run, copy, 2, DATA_FILE, damage)
  line = cli_error_line(
      capsys, ["sample", "--run", copy, "--step", "2", "--out",
               str(tmp_path / "samples.png")])
  assert line.startswith(f"jaxmm sample: error: --run {copy}: checkpoint 2 of {copy!r} is "
                         f"damaged: cannot read {copy}/checkpoints/2/state")
  assert line.endswith("; pass another step (saved: [1]), or none for the newest intact one")


def test_sample_of_a_step_rotated_out_mid_read_names_the_steps_saved(diffusion_run, tmp_path,
                                                                     capsys, monkeypatch):
  copy = str(tmp_path / "edm")
  rotate_on_first_read(monkeypatch, copy, live_copy(diffusion_run, copy))
  line = cli_error_line(
      capsys, ["sample", "--run", copy, "--step", "1", "--out",
               str(tmp_path / "samples.png")])
  assert line == (f"jaxmm sample: error: --run {copy}: no checkpoint at step 1 in {copy!r}; "
                  "steps saved: [2]; pass one of them, or no step for the latest")


def test_metrics_are_the_logged_lines_by_step(image_text_run):
  workdir, _ = image_text_run
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  table = analysis.load_run(workdir).metrics()
  assert list(table["step"]) == [1, 2] and table["step"].dtype == np.int64
  assert set(table) == {"step"} | {name for record in records for name in record}
  for record in records:
    row = list(table["step"]).index(record["step"])
    for name, value in record.items():
      assert table[name][row] == value


def test_metrics_table_merges_steps_and_marks_missing_values(tmp_path):
  # (step, name, value) per line; step 4 is logged again after a resume, and the last line
  # is cut short by a kill.
  lines = [(2, "train/loss", 3.0), (2, "eval/acc", 0.5), (4, "train/loss", 2.0),
           (3, "train/loss", 2.5), (4, "train/loss", 1.5)]
  text = "".join(json.dumps({"step": step, name: value}) + "\n" for step, name, value in lines)
  (tmp_path / "metrics.jsonl").write_text(text + '{"step": 5, "train/lo')
  table = analysis.read_metrics(str(tmp_path))
  np.testing.assert_array_equal(table["step"], [2, 3, 4])
  np.testing.assert_array_equal(table["train/loss"], [3.0, 2.5, 1.5])
  np.testing.assert_array_equal(table["eval/acc"], [0.5, np.nan, np.nan])
  assert analysis.latest_metrics(table) == {"train/loss": (4, 1.5), "eval/acc": (2, 0.5)}
  assert analysis.latest_metrics(table, step=3) == {"train/loss": (3, 2.5), "eval/acc": (2, 0.5)}
  empty = tmp_path / "no_metrics"
  empty.mkdir()
  assert list(analysis.read_metrics(str(empty))) == ["step"]


# name -> (a path under the test's folder that holds no run, what the error must say).
BAD_PATHS = {
    "missing folder": ("nowhere", "there is no such folder; pass the workdir of a run"),
    "similar name": ("runs/siglip_shape", "did you mean '.*runs/siglip_shapes'"),
    "no checkpoints": ("empty", "it has no checkpoints/ folder"),
    "holds runs": ("runs", "it holds the runs '.*runs/siglip_shapes': pass one of them"),
    "inside a run": ("runs/siglip_shapes/checkpoints",
                     "pass the run's workdir, '.*runs/siglip_shapes', not a folder inside it"),
    "empty checkpoints": ("runs/siglip_shapes",
                          "holds no complete checkpoint .* pass a workdir with a saved checkpoint"),
    "a file": ("a_file", "it is a file"),
}


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_a_path_without_a_run_says_what_to_pass(tmp_path, case):
  (tmp_path / "runs" / "siglip_shapes" / "checkpoints").mkdir(parents=True)
  (tmp_path / "empty").mkdir()
  (tmp_path / "a_file").write_text("")
  name, message = BAD_PATHS[case]
  path = tmp_path / name
  with pytest.raises(analysis.NoRun, match=f"no run in '{path}': .*{message}") as raised:
    analysis.load_run(str(path))
  assert isinstance(raised.value, errors.UserError) and isinstance(raised.value, FileNotFoundError)


def test_a_step_not_saved_names_the_saved_steps(image_text_run):
  with pytest.raises(analysis.NoRun, match=r"no checkpoint at step 7 .*steps saved: \[1, 2\]"):
    analysis.load_run(image_text_run[0], step=7)


def _inspect(capsys, *args):
  cli.main(["inspect", *args])
  return capsys.readouterr().out


def test_inspect_run_prints_config_checkpoints_and_latest_metrics(image_text_run, capsys):
  workdir, _ = image_text_run
  table = analysis.read_metrics(workdir)
  out = _inspect(capsys, "--run", workdir)
  assert f"run {workdir} at checkpoint 2" in out and "checkpoints: 1, 2" in out
  assert "experiment=image_text" in out and "loss.name=siglip" in out and "averages: decay_0.9" in out
  assert re.search(rf"\n  train/loss +{table['train/loss'][1]:.4g} +step 2\n", out), out
  earlier = _inspect(capsys, "--run", workdir, "--step", "1")
  assert "at checkpoint 1" in earlier
  assert re.search(rf"\n  train/loss +{table['train/loss'][0]:.4g} +step 1\n", earlier), earlier
  summary = json.loads(_inspect(capsys, "--run", workdir, "--json"))
  assert summary["steps"] == [1, 2] and summary["config"]["model"]["embed_dim"] == 16
  assert summary["metrics"]["train/loss"] == {"step": 2, "value": table["train/loss"][1]}
  params = jax.tree.leaves(analysis.load_run(workdir).params)
  assert summary["num_params"] == sum(p.size for p in params)


@pytest.mark.parametrize("args, message", [
    ([], r"give --config FILE.py\[:ARG\] \(a config to resolve\) or --run DIR \(a trained run"),
    (["--run", "RUN", "--config", "configs/siglip_shapes.py"], "not both"),
    (["--run", "RUN", "--config.seed=1"], "--run takes no --config.KEY overrides"),
    (["--config", "configs/siglip_shapes.py", "--step", "1"], "--step goes with --run DIR"),
    (["--run", "RUN", "--step", "5"], r"no checkpoint at step 5 in '.*'; steps saved: \[1, 2\]"),
    (["--run", "RUN/checkpoints"], "pass the run's workdir"),
])
def test_inspect_mistakes_end_in_one_line(image_text_run, capsys, args, message):
  args = [arg.replace("RUN", image_text_run[0]) for arg in args]
  with pytest.raises(SystemExit) as exited:
    _inspect(capsys, *args)
  err = capsys.readouterr().err
  assert exited.value.code == 2 and err.count("\n") == 1
  assert err.startswith("jaxmm inspect: error: ")
  assert re.search(message, err), err


def test_example_notebook_runs_headlessly(image_text_run, diffusion_run, tmp_path):
  out = tmp_path / "outputs"
  runner = ("import json, sys\n"
            "cells = json.load(open(sys.argv[1]))['cells']\n"
            "namespace = {'__name__': '__main__'}\n"
            "for i, cell in enumerate(cells):\n"
            "  if cell['cell_type'] == 'code':\n"
            "    exec(compile(''.join(cell['source']), f'cell {i}', 'exec'), namespace)\n")
  env = dict(os.environ,
             JAXMM_RUN=image_text_run[0],
             JAXMM_DIFFUSION_RUN=diffusion_run,
             JAXMM_NOTEBOOK_OUT=str(out),
             JAXMM_SAMPLE_STEPS="2")
  result = subprocess.run([sys.executable, "-c", runner,
                           str(ROOT / "examples/analysis.ipynb")],
                          cwd=ROOT / "examples",
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "2000 images -> (2000, 16)" in result.stdout
  assert "recall@1: " in result.stdout and "recall@5: " in result.stdout
  assert result.stdout.count("true: ") == 4
  assert f"{diffusion_run}: step 2, 48 samples" in result.stdout
  assert "train/loss: 1: " in result.stdout
  assert Image.open(out / "samples.png").size == (8 * 9 - 1, 6 * 9 - 1)  # 6 shapes x 8 colours
  assert Image.open(out / "retrieval.png").size[1] == 4 * 140
  # One panel per curve (train/loss and the eval/ metrics the run logged), 4 to a row.
  curves = int(re.search(r"^(\d+) curves -> ", result.stdout, re.M).group(1))
  columns, rows = min(4, curves), -(-curves // 4)
  assert curves >= 1
  assert Image.open(out / "curves.png").size == (int(3.2 * columns * 80), int(2.6 * rows * 80))
