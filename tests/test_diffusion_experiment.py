"""The diffusion experiment: training on shapes, guidance, sample grids and `jaxmm sample`."""
import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import data
from jaxmm import diffusion
from jaxmm import errors
from jaxmm import evaluators
from jaxmm import models
from jaxmm import parallel
from jaxmm import train
from jaxmm.commands import cli
from jaxmm.evaluators import generative
from jaxmm.evaluators import sample_grid
from jaxmm.experiments import diffusion as diffusion_experiment
from jaxmm.runs import sampling
from jaxmm.train import model_init

# A U-Net small enough that a step compiles and runs in seconds, on 16x16 shapes.
TINY = ("batch_size=16", "total_steps=4", "checkpoint_every=2", "log_every=2", "eval_every=4",
        "data.image_size=16", "model.channels=8", "model.channel_mult=(1, 2)",
        "model.attn_resolutions=(8,)", "model.num_heads=2", "optim.warmup_steps=1",
        "evals.sample_grid.num_steps=2", "evals.sample_grid.sampler=euler")

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _config(shapes_data_dir, name="edm_shapes.py", *overrides):
  config = config_loading.load_config(str(CONFIGS / name))
  return config_loading.apply_overrides(config, [f"data.data_dir={shapes_data_dir}"] + list(TINY) +
                                        list(overrides))


def _train(config, workdir):
  return train.train(config, workdir, diffusion_experiment.build)


@pytest.fixture(scope="module")
def trained(shapes_data_dir, tmp_path_factory):
  """A tiny EDM run with a power EMA, and its workdir."""
  workdir = str(tmp_path_factory.mktemp("edm") / "run")
  config = _config(shapes_data_dir)
  return _train(config, workdir), workdir, config


def test_run_keeps_an_ema_and_writes_a_class_grid(trained):
  _, workdir, _ = trained
  run = analysis.load_run(workdir)
  assert run.step == 4 and set(run.ema) == {"sigma_rel_0.1"}
  # The power EMA after 4 updates differs from both the first and the last params.
  averaged = jax.tree.leaves(run.ema["sigma_rel_0.1"])
  assert any(not np.array_equal(a, p) for a, p in zip(averaged, jax.tree.leaves(run.params)))
  grid = Image.open(sample_grid.grid_path(workdir, "sample_grid", 4))
  # 6 rows (shapes) x 8 columns (colours) of 16x16 images with 1-pixel gaps.
  assert grid.size == (8 * 17 - 1, 6 * 17 - 1)


def test_label_dropout_drops_whole_examples():
  labels = jnp.arange(2000, dtype=jnp.int32).reshape(1000, 2) % 5
  dropped = np.asarray(diffusion.drop_labels(labels, jax.random.key(0), 0.25))
  rows = (dropped == -1).all(axis=1)
  assert ((dropped == -1).any(axis=1) == rows).all()  # never one label of an example alone
  assert 0.2 < rows.mean() < 0.3
  np.testing.assert_array_equal(dropped[~rows], np.asarray(labels)[~rows])


def test_guided_denoiser_is_the_cfg_combination(trained):
  _, workdir, config = trained
  run = analysis.load_run(workdir)
  model = models.get_model(config.model)
  schedule = diffusion.get_schedule(config.diffusion.schedule)
  x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  sigma = jnp.array([0.5, 2.0, 10.0])
  labels = jnp.array([[0, 1], [2, 3], [5, 7]], jnp.int32)
  params = jax.tree.map(lambda p: p + 0.01, run.params)  # make the output depend on labels

  def plain(labels_):  # D = c_skip x + c_out F(c_in x, c_noise), written out here
    c_skip, c_out, c_in, c_noise = schedule.precondition(sigma)
    expand = lambda c: c.reshape(-1, 1, 1, 1)
    f = model.apply({"params": params}, expand(c_in) * x, c_noise, labels_)
    return expand(c_skip) * x + expand(c_out) * f

  cond, uncond = jax.jit(plain)(labels), jax.jit(plain)(jnp.full_like(labels, -1))
  # Jitted: one compilation instead of one per operation of the U-Net.
  guided = jax.jit(sampling.denoiser(model, schedule, params, labels, 2.5))(x, sigma)
  np.testing.assert_allclose(guided, uncond + 2.5 * (cond - uncond), rtol=1e-5, atol=1e-5)
  assert not np.allclose(cond, uncond, atol=1e-4)
  # Without a guidance scale, the conditional denoiser alone.
  conditional = jax.jit(sampling.denoiser(model, schedule, params, labels))(x, sigma)
  np.testing.assert_allclose(conditional, cond, rtol=1e-5, atol=1e-5)


def test_guidance_and_sigma_max_values_share_one_compilation(trained):
  state, _, config = trained
  model, traces = models.get_model(config.model), []

  class Counted:  # the model, counting the network calls traced into the sampler

    def apply(self, *args):
      traces.append(args)
      return model.apply(*args)

  sample = sampling.make_sampler(Counted(), config)
  labels = jnp.array([[0, 1], [2, 3]], jnp.int32)
  start = jnp.zeros((2, 16, 16, 3))

  def traced_after(**settings):
    """The network calls traced so far, after sampling with `settings`."""
    sample(state.params, jax.random.key(0), labels, 2, sampler="euler", num_steps=2, **settings)
    return len(traces)

  assert traced_after(guidance=2.0) == traced_after(guidance=3.0)
  assert traced_after(start=start, sigma_max=1.0) == traced_after(start=start, sigma_max=4.0)


@pytest.mark.slow  # four more compiles; the objectives themselves are tested in test_diffusion_*
@pytest.mark.parametrize("name,schedule", [("flow_shapes.py", "flow"), ("vp_shapes.py", "vp"),
                                           ("ve_shapes.py", "ve"), ("edm_shapes.py:dit", "edm")])
def test_every_schedule_and_the_dit_train(shapes_data_dir, tmp_path, name, schedule):
  overrides = ("eval_every=0", "total_steps=2", "checkpoint_every=1", "log_every=1")
  if name.endswith(":dit"):
    overrides += ("model.patch_size=4", "model.width=32", "model.depth=1", "model.num_heads=2",
                  "model.mlp_dim=64")
    config = config_loading.apply_overrides(
        config_loading.load_config(str(CONFIGS / name)), [f"data.data_dir={shapes_data_dir}"] +
        [o for o in TINY if not o.startswith(("model.channel", "model.attn"))] + list(overrides))
  else:
    config = _config(shapes_data_dir, name, *overrides)
  workdir = str(tmp_path / "run")
  _train(config, workdir)
  first, second = analysis.load_run(workdir, step=1), analysis.load_run(workdir, step=2)
  assert second.config.diffusion.schedule == schedule
  assert second.config.model.name == ("dit" if name.endswith(":dit") else "unet")
  losses = second.metrics()["train/loss"]
  assert len(losses) == 2 and np.isfinite(losses).all()
  # The second step moved every parameter that has a gradient: at least the output layer.
  moved = [not np.array_equal(a, b)
           for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params))]
  assert sum(moved) >= len(moved) // 2, moved


def _sample_cli(capsys, *args):
  cli.main(["sample"] + list(args))
  return capsys.readouterr().out


def test_sample_command_writes_png_and_npz(trained, tmp_path, capsys):
  _, workdir, _ = trained
  png = str(tmp_path / "grid.png")
  _sample_cli(capsys, "--run", workdir, "--num", "48", "--steps", "2", "--out", png)
  assert Image.open(png).size == (8 * 17 - 1, 6 * 17 - 1)
  npz = str(tmp_path / "s.npz")
  out = _sample_cli(capsys, "--run", workdir, "--num", "5", "--steps", "3", "--sampler", "euler",
                    "--labels", "1,2", "3,4", "--guidance", "2.0", "--out", npz)
  assert "wrote 5 samples" in out
  arrays = np.load(npz)
  assert arrays["images"].shape == (5, 16, 16, 3)
  np.testing.assert_array_equal(arrays["labels"], [[1, 2], [3, 4], [1, 2], [3, 4], [1, 2]])
  again = str(tmp_path / "again.npz")
  _sample_cli(capsys, "--run", workdir, "--num", "5", "--steps", "3", "--sampler", "euler",
              "--labels", "1,2", "3,4", "--guidance", "2.0", "--out", again)
  np.testing.assert_array_equal(np.load(again)["images"], arrays["images"])
  raw = str(tmp_path / "raw.npz")
  _sample_cli(capsys, "--run", workdir, "--num", "5", "--steps", "3", "--sampler", "euler",
              "--labels", "1,2", "3,4", "--guidance", "2.0", "--ema", "none", "--out", raw)
  assert not np.array_equal(np.load(raw)["images"], arrays["images"])


@pytest.mark.parametrize("args,expected", [
    (["--steps", "0"], "num_steps"),
    (["--sampler", "hune"], "'heun'"),
    (["--labels", "6,0"], "--labels 6,0: out of range; shape < 6, colour < 8"),
    (["--labels", "1"], "give 2 labels per sample"),
    (["--labels", "a,b"], "one integer per label key"),
    (["--ema", "decay_0.9"], "the run keeps ['sigma_rel_0.1']"),
    (["--out", "x.jpg"], "end it in .png"),
])
def test_sample_command_errors(trained, capsys, tmp_path, args, expected):
  _, workdir, _ = trained
  if "--out" not in args:
    args = args + ["--out", str(tmp_path / "x.png")]
  with pytest.raises(SystemExit) as e:
    cli.main(["sample", "--run", workdir] + args)
  assert e.value.code == 2
  line = capsys.readouterr().err.strip().splitlines()[-1]
  assert line.startswith("jaxmm sample: error: ") and expected in line


def test_run_sample_takes_label_arrays_and_lists_alike(trained):
  run = analysis.load_run(trained[1])
  as_array = run.sample(num=3, num_steps=1, sampler="euler", labels=np.array([[1, 2], [3, 4]]))
  as_list = run.sample(num=3, num_steps=1, sampler="euler", labels=[(1, 2), (3, 4)])
  np.testing.assert_array_equal(as_array, as_list)


@pytest.mark.parametrize("labels,expected", [
    (np.array([1, 2]), "give 2 labels per sample (shape, colour), e.g. --labels 2,5 or "
     "labels=[(2, 5)], an [N, 2] array; got shape (2,)"),
    ([(1, 2, 3)], "got shape (1, 3)"),
    ([(1, 2), (3,)], "got rows of different lengths"),
    (np.zeros((0, 2), np.int32), "got shape (0, 2)"),
    (np.array([[1.5, 2.0]]), "--labels: give integer class indices, not float64 values"),
])
def test_run_sample_refuses_labels_of_the_wrong_shape_or_type(trained, labels, expected):
  run = analysis.load_run(trained[1])
  with pytest.raises(errors.UserError) as e:
    run.sample(num=2, num_steps=1, labels=labels)
  assert expected in str(e.value)


@pytest.fixture(scope="module")
def contrastive_run(shapes_data_dir, tmp_path_factory, tiny_config, run_image_text):
  """A tiny SigLIP run's workdir (2 steps; captions whole, so its prompts differ)."""
  workdir = str(tmp_path_factory.mktemp("siglip") / "run")
  run_image_text(
      tiny_config("siglip", "total_steps=2", "eval_every=0", "data.max_len=48",
                  f"data.data_dir={shapes_data_dir}"), workdir)
  return workdir


@pytest.mark.slow  # test_generative_eval tests the judge's parts by default
def test_judge_evaluator_scores_samples_of_every_pair(trained, contrastive_run, tmp_path):
  state, _, config = trained
  config = config.copy_and_resolve_references()
  config.evals.judge.update(run=contrastive_run,
                            per_pair=1,
                            sampler="euler",
                            num_steps=1,
                            from_sigmas=(0.002, 80.0))
  del config.evals.sample_grid
  mesh = parallel.make_mesh(config.mesh)
  parts = diffusion_experiment.evaluator_parts(models.get_model(config.model), config, mesh,
                                               str(tmp_path))
  (_, evaluate), = evaluators.build_evaluators(parts)
  results = evaluate(state, 4)
  accuracies = {"conditional_accuracy/shape", "conditional_accuracy/colour",
                "conditional_accuracy/pair"}
  expected = accuracies | {"fd", "conditional_accuracy/held_out_shape",
                           "conditional_accuracy/held_out_colour",
                           "conditional_accuracy/held_out_pair"}
  expected |= {f"from_sigma_{s}/{k}" for s in ("0.002", "80") for k in accuracies}
  assert set(results) == {f"judge/{k}" for k in expected}
  # Denoised from σ = 0.002, the first 48 test images come back as they were (c_skip ≈ 1,
  # c_out ≈ 0.002): judged alike. From σ = 80 they are new samples.
  judge = evaluators.make_judge(contrastive_run, mesh=mesh)
  batch = next(iter(data.eval_batches(config.data, batch_size=48)))
  real = evaluators.judge_samples(judge, batch["image"], batch["shape"], batch["colour"])
  for k in accuracies:
    assert results[f"judge/from_sigma_0.002/{k}"] == pytest.approx(real[k], abs=1 / 48 + 1e-9)
  sample = sampling.make_sampler(models.get_model(config.model), config)
  labels = jnp.stack([batch["shape"], batch["colour"]], axis=-1)
  kept = sample(sampling.eval_params(state, config), jax.random.key(0), labels, 48,
                sampler="euler", num_steps=1, guidance=2.0, start=jnp.asarray(batch["image"]),
                sigma_max=0.002)
  np.testing.assert_allclose(kept, batch["image"], atol=0.05)
  far = sample(sampling.eval_params(state, config), jax.random.key(0), labels, 48,
               sampler="euler", num_steps=1, guidance=2.0, start=jnp.asarray(batch["image"]),
               sigma_max=80.0)
  assert np.abs(far - batch["image"]).mean() > 0.3
  assert results["judge/fd"] > 0
  assert all(0 <= v <= 1 for k, v in results.items() if "accuracy" in k)
  with open(tmp_path / "judge.json") as f:
    assert json.load(f)["4"] == results


def test_guidance_needs_label_dropout_and_sample_needs_a_diffusion_run(
    trained, tmp_path, capsys, contrastive_run):
  # The tiny run as if trained with diffusion.label_dropout=0 (the check reads only the config).
  run = analysis.load_run(trained[1])
  run.config.diffusion.label_dropout = 0.0
  with pytest.raises(errors.UserError, match="--guidance 2.0: the run was trained without label "
                     "dropout"):
    sampling.sample_run(run, guidance=2.0)
  with pytest.raises(SystemExit):
    cli.main(["sample", "--run", contrastive_run, "--out", str(tmp_path / "x.png")])
  assert "is an 'image_text' run; jaxmm sample needs a diffusion run" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["sample", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")])
  assert f"--run {tmp_path / 'nothing'}: no run in" in capsys.readouterr().err


def test_loss_of_each_mixture_source_splits_the_loss(shapes_data_dir):
  config = _config(shapes_data_dir, "edm_shapes.py",
                   "data.mixture={'a': {'weight': 1.0}, 'b': {'weight': 1.0}}")
  model = models.get_model(config.model)
  init_variables = jax.jit(model_init.make_init_variables(model, config))  # compiled once
  params = nn.unbox(init_variables(jax.random.key(0)))["params"]
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32),
           "shape": rng.integers(6, size=8).astype(np.int32),
           "colour": rng.integers(8, size=8).astype(np.int32),
           "source": np.array([0, 1, 1, 0, 0, 1, 1, 0], np.int32)}
  loss_fn = jax.jit(diffusion_experiment.make_loss_fn(model, config))
  loss, metrics, _ = loss_fn(params, {}, batch, jax.random.key(1))
  # The loss is the mean of per-example terms, so of the two sources' means (4 rows each);
  # float32 sums of 8 terms agree to ~1e-6 relative.
  np.testing.assert_allclose((metrics["loss/a"] + metrics["loss/b"]) / 2, loss, rtol=1e-5)
  assert abs(metrics["loss/a"] - metrics["loss/b"]) > 1e-3 * loss  # each its own rows


def test_mixture_stream_is_a_pure_function_of_the_step():
  stream = data.MixtureStream(diffusion.mixture_2d(), global_batch_size=8, seed=3)
  first = [next(stream)["x"] for _ in range(3)]
  resumed = data.MixtureStream(diffusion.mixture_2d(), global_batch_size=8, seed=3)
  resumed.set_state({"next_index": 1})
  np.testing.assert_array_equal(next(resumed)["x"], first[1])
  # Two hosts' rows make up the one-host batch, so a run may resume on another process count.
  hosts = [
      data.MixtureStream(diffusion.mixture_2d(),
                         global_batch_size=8,
                         seed=3,
                         process_index=p,
                         process_count=2) for p in range(2)
  ]
  np.testing.assert_array_equal(np.concatenate([next(host)["x"] for host in hosts]), first[0])
  big = next(data.MixtureStream(diffusion.mixture_2d(), global_batch_size=20000, seed=0))["x"]
  mixture = diffusion.mixture_2d()
  np.testing.assert_allclose(big.mean(0), mixture.weights @ mixture.means, atol=0.02)


def _toy_run(workdir, *overrides):
  """`jaxmm train --config configs/edm_toy2d.py` on one CPU device, as a user runs it (many
  millisecond steps in flight on 8 simulated devices can stall XLA:CPU's all-reduce)."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  subprocess.run([
      sys.executable, "-m", "jaxmm.commands.cli", "train", "--config",
      str(CONFIGS / "edm_toy2d.py"), "--workdir",
      str(workdir), "--config.evals.two_sample.num=2000"
  ] + [f"--config.{o}" for o in overrides],
                 env=env,
                 check=True,
                 capture_output=True,
                 timeout=600)
  with open(workdir / "two_sample.json") as f:
    return json.load(f)


@pytest.mark.slow  # two subprocess runs, 600 steps
def test_toy_training_approaches_the_mixture(tmp_path):
  before = _toy_run(tmp_path / "untrained", "total_steps=1", "optim.warmup_steps=0")
  after = _toy_run(tmp_path / "trained", "total_steps=600", "eval_every=600",
                   "checkpoint_every=600")
  assert after["600"]["two_sample/mmd2"] < 0.2 * before["1"]["two_sample/mmd2"]


def test_schedule_hyperparameters_come_from_the_config(shapes_data_dir):
  for name in ("flow_shapes.py", "vp_shapes.py", "ve_shapes.py"):
    config = _config(shapes_data_dir, name)
    assert diffusion.schedule_from_config(config.diffusion) == diffusion.get_schedule(
        config.diffusion.schedule)
  # The EDM config moves the training noise up and narrows it (ln σ ~ N(0.4, 0.8²)), the rest
  # is Table 1's.
  assert diffusion.schedule_from_config(_config(shapes_data_dir).diffusion) == (
      diffusion.get_schedule("edm", P_mean=0.4, P_std=0.8))
  shifted = _config(shapes_data_dir, "edm_shapes.py", "diffusion.schedule_args.P_mean=-0.4")
  schedule = diffusion.schedule_from_config(shifted.diffusion)
  log_sigma = np.log(np.asarray(schedule.sample_sigma(jax.random.key(0), (20000,))))
  assert abs(log_sigma.mean() - (-0.4)) < 0.05
  # A run saved before the key existed trains with the schedule's defaults.
  del shifted.diffusion["schedule_args"]
  assert diffusion.schedule_from_config(shifted.diffusion) == diffusion.get_schedule("edm")


def test_schedule_args_of_another_schedule_say_what_to_do(shapes_data_dir):
  config = _config(shapes_data_dir, "edm_shapes.py", "diffusion.schedule=ve")
  with pytest.raises(errors.UserError, match="start from configs/ve_shapes.py"):
    diffusion_experiment.check_config(config)


def test_judge_noise_levels_below_the_schedules_range_fail_before_anything_runs(shapes_data_dir):
  config = _config(shapes_data_dir, "edm_shapes.py", "evals.judge.from_sigmas=(0.001, 1.0)")
  with pytest.raises(errors.UserError,
                     match=r"evals.judge.from_sigmas=\(0.001, 1.0\) must hold noise levels σ of "
                     r"at least the schedule's sigma_min=0.002"):
    generative.make_judge("evals.judge", config.evals.judge,
                          evaluators.Parts(config=config, mesh=None, workdir=None, variables=None))
