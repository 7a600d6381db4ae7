"""CapPa and CoCa: sharded steps equal one device, training, `Run.caption`, `jaxmm caption`,
and bad input."""
import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest

from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import data
from jaxmm import parallel
from jaxmm import train
from jaxmm.commands import cli
from jaxmm.experiments import captioning
from conftest import cli_error_line

REPO = pathlib.Path(__file__).resolve().parents[1]
# A captioner small enough that a step compiles and runs in seconds, on 16x16 images.
TINY = ("batch_size=16", "total_steps=2", "checkpoint_every=2", "log_every=1", "eval_every=2",
        "optim.warmup_steps=1", "optim.lr=0.01", "optim.eps=1e-4", "data.image_size=16",
        "model.image.patch_size=8", "model.image.width=32", "model.image.depth=1",
        "model.image.num_heads=2", "model.image.mlp_dim=64", "model.decoder.width=32",
        "model.decoder.depth=1", "model.decoder.num_heads=2", "model.decoder.mlp_dim=64",
        "evals.linear_probe.every=0", "evals.knn.every=0", "evals.caption.batch_size=16",
        "evals.caption.num_examples=16")


def _config(name, data_dir, *more):
  config = config_loading.load_config(str(REPO / "configs" / f"{name}_shapes.py"))
  return config_loading.apply_overrides(config, list(TINY) + [f"data.data_dir={data_dir}"] +
                                        list(more))


def _steps(config, mesh_shape, batch):
  mesh = parallel.make_mesh(dict(zip(parallel.MESH_AXES, mesh_shape)),
                            jax.devices()[:int(np.prod(mesh_shape))])
  parts = captioning.build(config, None, mesh, contrastive=config.experiment == "coca")
  tx, shardings, step = train.build_step(config, mesh, parts["init_variables"], parts["loss_fn"])
  state = train.init_state(parts["init_variables"], tx, config.ema, shardings,
                           train.init_rng(config.seed))
  losses, caption_losses = [], []
  for _ in range(3):
    state, metrics = step(state, parallel.global_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
    caption_losses.append(float(metrics["caption_loss"]))
  return np.array(losses), caption_losses[0], jax.device_get(state.params)


# CoCa's contrastive loss shards as test_train_sharding checks SigLIP's; its captioning as CapPa's.
@pytest.mark.parametrize("name", ["cappa", pytest.param("coca", marks=pytest.mark.slow)])
def test_a_2x2x2_mesh_trains_as_one_device(name, shapes_data_dir):
  config = _config(name, shapes_data_dir, "eval_every=0")
  batch = next(data.train_iterator(config.data, global_batch_size=16, seed=0))
  ref_losses, caption_start, ref_params = _steps(config, (1, 1, 1), batch)
  # At the start every logit is 0 (the zero-initialised logits layer): log 256 per token. The
  # float32 mean of ~600 equal terms may be off by ~600 · 6e-8 = 4e-5 relative at worst.
  assert caption_start == pytest.approx(np.log(256), rel=5e-5)
  assert ref_losses[-1] < ref_losses[0]
  losses, _, params = _steps(config, (2, 2, 2), batch)
  # The same sums in another order: float32 rounding of a few ulps, compounded over 3 steps.
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), params, ref_params)


@pytest.fixture(scope="module")
def trained(shapes_data_dir, tmp_path_factory):
  """The workdir of a 2-step run of `jaxmm train --config configs/cappa_shapes.py`."""
  workdir = tmp_path_factory.mktemp("cappa") / "run"
  cli.main(["train", "--config", str(REPO / "configs" / "cappa_shapes.py"), "--workdir",
            str(workdir)] + [f"--config.{o}" for o in TINY + (f"data.data_dir={shapes_data_dir}",)])
  return workdir


def test_training_writes_caption_metrics_and_the_run_captions(trained, tmp_path, capsys):
  results = json.loads((trained / "caption.json").read_text())["2"]
  assert set(results) == {f"caption/{k}" for k in (
      "shape_accuracy", "colour_accuracy", "size_accuracy", "position_accuracy", "exact_match",
      "held_out_exact_match")}
  run = analysis.load_run(str(trained))
  images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), np.uint8)
  captions = run.caption(images)
  assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
  # The command prints the captions Run.caption writes, one per line, for an .npz too.
  np.savez(tmp_path / "images.npz", images=images)
  cli.main(["caption", "--run", str(trained), "--images", str(tmp_path / "images.npz")])
  assert capsys.readouterr().out.splitlines() == captions
  with pytest.raises(Exception, match="run.embed_texts needs an experiment='image_text' or "
                     "'coca' run"):
    run.embed_texts(["a red circle"])


@pytest.mark.parametrize("args,expected", [
    (["--split", "test", "--beam", "0"], "--beam=0 must be an integer >= 1"),
    (["--split", "test", "--num", "0"], "--num=0 must be an integer >= 1"),
    (["--images", "missing.npz"], "--images missing.npz: not a readable .npz file"),
])
def test_bad_caption_flags_are_one_line(args, expected, trained, capsys):
  line = cli_error_line(capsys, ["caption", "--run", str(trained)] + args)
  assert line.startswith("jaxmm caption: error: ") and expected in line, line


def test_a_run_that_does_not_caption_is_one_line(trained, capsys, monkeypatch):
  run = analysis.load_run(str(trained))
  config = run.config.copy_and_resolve_references()
  config.experiment = "catlip"
  monkeypatch.setattr(analysis, "load_run",
                      lambda *args: dataclasses.replace(run, config=config))
  line = cli_error_line(capsys, ["caption", "--run", str(trained), "--split", "test"])
  assert line == (f"jaxmm caption: error: --run {trained} is an experiment='catlip' run; jaxmm "
                  "caption needs a captioning run (cappa, coca)")


def test_caption_of_a_split_prints_references_and_scores(trained, capsys):
  cli.main(["caption", "--run", str(trained), "--split", "test", "--num", "3", "--beam", "2"])
  lines = capsys.readouterr().out.splitlines()
  config = analysis.load_run(str(trained)).config
  captions = data.split_reader(config.data, "test").read(np.arange(3))["caption"]
  assert len(lines) == 4 and lines[-1].startswith("test, 3 images, beam 2: colour_accuracy")
  for line, caption in zip(lines, captions):
    assert line.endswith(f"\t(reference: {caption.decode()})"), line
