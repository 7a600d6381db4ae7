"""Autoguidance and guidance intervals on trained runs: `Run.sample(guide=...)`, `jaxmm sample
--guide-run ... --guidance-interval ...`, the judge's `guide` settings, and what they refuse."""

import jax
import numpy as np
import pytest

from conftest import cli_error_line
from conftest import short_train_config
from jaxmm import analysis
from jaxmm import config_loading
from jaxmm import errors
from jaxmm import evaluators
from jaxmm import parallel
from jaxmm import train
from jaxmm.commands import cli
from jaxmm.evaluators import generative
from jaxmm.experiments import diffusion as diffusion_experiment
from jaxmm.runs import sampling

# Tiny U-Nets on 16×16 shapes; the guide has half the channels, as configs/edm_shapes.py:guide.
TINY = ("data.image_size=16", "model.channel_mult=(1, 2)", "model.attn_resolutions=(8,)",
        "model.num_heads=2", "checkpoint_every=2")
ONE_STEP = dict(num=4, sampler="euler", num_steps=1, seed=3)  # one call, at σ_max = 80


@pytest.fixture(scope="module")
def pair(shapes_data_dir, tmp_path_factory):
  """(main, guide) workdirs: two steps of a tiny U-Net, and of one with half its channels."""
  workdirs = []
  for name, channels in (("main", 8), ("guide", 4)):
    workdir = str(tmp_path_factory.mktemp(name) / "run")
    config = short_train_config("configs/edm_shapes.py", shapes_data_dir, *TINY,
                                f"model.channels={channels}")
    train.train(config, workdir, diffusion_experiment.build)
    workdirs.append(workdir)
  return tuple(workdirs)


def test_autoguided_samples_are_the_guide_plus_w_times_the_difference(pair):
  main, guide = (analysis.load_run(workdir) for workdir in pair)
  w = 2.5
  # One Euler step returns D(x; 80) of the same x (the same seed) for every denoiser.
  main_x0 = main.sample(**ONE_STEP).astype(np.float64)
  guide_x0 = guide.sample(**ONE_STEP).astype(np.float64)
  guided = main.sample(guidance=w, guide=guide, **ONE_STEP)
  # Each float32 network output may differ by reassociation (≤ ~1e-5 relative for sums of
  # a few hundred terms) between programs, amplified by at most 1 + 2w.
  scale = max(np.abs(main_x0).max(), np.abs(guide_x0).max())
  np.testing.assert_allclose(guided, guide_x0 + w * (main_x0 - guide_x0), atol=1e-5 * 6 * scale)
  assert np.abs(guided - main_x0).max() > 100 * 1e-5 * 6 * scale  # the guide made a difference


def test_outside_the_interval_samples_are_the_unguided_ones(pair):
  main, guide = (analysis.load_run(workdir) for workdir in pair)
  unguided = main.sample(**ONE_STEP)
  guided = main.sample(guidance=3.0, guidance_interval=(0.3, 5.0), guide=guide, **ONE_STEP)
  # The same network in another compiled program (a branch of lax.cond) may sum in another
  # order: float32 reassociation, ≤ ~1e-5 relative for sums of a few hundred terms. The
  # denoiser itself is exact outside the interval (tests/test_guidance_interval.py).
  scale = np.abs(unguided).max()
  np.testing.assert_allclose(guided, unguided, rtol=0, atol=1e-5 * scale)
  everywhere = main.sample(guidance=3.0, guidance_interval=(0.3, 80.0), guide=guide, **ONE_STEP)
  assert np.abs(everywhere - unguided).max() > 100 * 1e-5 * scale


def test_sample_command_guides_with_a_run(pair, tmp_path):
  main, guide = pair
  out = tmp_path / "x.npz"
  cli.main(["sample", "--run", main, "--guide-run", guide, "--guide-step", "2", "--guide-ema",
            "none", "--guidance", "2", "--guidance-interval", "0.3", "90", "--num", "4",
            "--sampler", "euler", "--steps", "1", "--seed", "3", "--out", str(out)])
  expected = analysis.load_run(main).sample(guidance=2.0,
                                            guide=analysis.load_run(guide, 2),
                                            guide_ema="none",
                                            guidance_interval=(0.3, 90.0),
                                            **ONE_STEP)
  np.testing.assert_array_equal(np.load(out)["images"], expected)


def _set_schedule(config):
  config.diffusion.schedule_args.sigma_max = 40.0


def _set_labels(config):
  config.model.num_classes = (6, 4)


def _set_size(config):
  config.data.image_size = 32


@pytest.mark.parametrize("change,expected", [
    (_set_schedule, "the guide has schedule EDM(sigma_data=0.5, P_mean=0.4, P_std=0.8, "
     "sigma_min=0.002, sigma_max=40.0), the run EDM("),
    (_set_labels, "the guide has labels (('shape', 'colour'), (6, 4)), the run "
     "(('shape', 'colour'), (6, 8)); train the guide with the same data.label_keys"),
    (_set_size, "the guide has examples of shape (32, 32, 3), the run (16, 16, 3); train the "
     "guide on the same data"),
])
def test_a_guide_that_does_not_fit_is_refused_naming_both(pair, change, expected):
  config = analysis.load_run(pair[0]).config
  other = config.copy_and_resolve_references()
  change(other)
  with pytest.raises(errors.UserError) as e:
    sampling.check_guide(config, other)
  assert str(e.value).startswith("--guide-run: ") and expected in str(e.value)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  """One step of the 2-D toy (configs/edm_toy2d.py): a diffusion run on points."""
  workdir = str(tmp_path_factory.mktemp("toy") / "run")
  config = config_loading.apply_overrides(config_loading.load_config("configs/edm_toy2d.py"), [
      "total_steps=1", "batch_size=16", "eval_every=0", "optim.warmup_steps=0", "model.width=16",
      "model.depth=1", "model.mlp_dim=16"
  ])
  train.train(config, workdir, diffusion_experiment.build)
  return workdir


def test_a_guide_of_other_data_ends_in_one_line(pair, toy_run, tmp_path, capsys):
  line = cli_error_line(capsys, ["sample", "--run", pair[0], "--guide-run", toy_run,
                                 "--guidance", "2", "--out", str(tmp_path / "x.png")])
  assert line == ("jaxmm sample: error: --guide-run: the guide has examples of shape (2,), the "
                  "run (16, 16, 3); train the guide on the same data")


@pytest.mark.parametrize("flags,expected", [
    (["--guidance-interval", "2", "1"], "--guidance-interval=(2, 1): guidance applies for LO < "
     "σ <= HI, so give 0 <= LO < HI, e.g. 0.28 5.42"),
    (["--guidance-interval", "-1", "1"], "give 0 <= LO < HI"),
    (["--guide-step", "1"], "--guide-step and --guide-ema choose the guide of --guide-run DIR; "
     "give --guide-run too"),
    (["--guide-run", "GUIDE", "--guide-ema", "sigma_rel_0.5"], "--guide-ema sigma_rel_0.5: the "
     "run keeps ['sigma_rel_0.1']"),
    (["--guide-run", "NOWHERE"], "--guide-run NOWHERE: no run in"),
])
def test_bad_guidance_flags_end_in_one_line(pair, tmp_path, capsys, flags, expected):
  main, guide = pair
  flags = [guide if f == "GUIDE" else str(tmp_path / f) if f == "NOWHERE" else f for f in flags]
  line = cli_error_line(capsys, ["sample", "--run", main, "--guidance", "2", *flags, "--out",
                                 str(tmp_path / "x.png")])
  assert line.startswith("jaxmm sample: error: ")
  assert expected.replace("NOWHERE", str(tmp_path / "NOWHERE")) in line


def _judge_settings(main, *overrides):
  config = config_loading.apply_overrides(analysis.load_run(main).config, list(overrides))
  parts = evaluators.Parts(config=config,
                           mesh=parallel.make_mesh({"data": 1}, devices=jax.devices()[:1]),
                           workdir=None,
                           variables=None,
                           sample=sampling.make_sampler(analysis.load_run(main).model, config))
  return config.evals.judge, parts


def test_the_judge_samples_with_its_guide_and_interval(pair):
  main, guide = pair
  settings, parts = _judge_settings(main, f"evals.judge.guide.run={guide}",
                                    "evals.judge.guide.ema=none",
                                    "evals.judge.guidance_interval=(0.3, 90.0)")
  sample, kw = generative.guided_sampler("evals.judge", settings, parts)
  run = analysis.load_run(main)
  labels = sampling.sample_labels(run.config, None, 4)
  images = sample(sampling.choose_params(run, None), jax.random.key(3), labels, 4,
                  sampler="euler", num_steps=1, guidance=2.0, **kw)
  expected = run.sample(guidance=2.0, guide=analysis.load_run(guide), guide_ema="none",
                        guidance_interval=(0.3, 90.0), **ONE_STEP)
  np.testing.assert_array_equal(parallel.to_host(images), expected)


def test_the_judge_refuses_a_guide_that_does_not_fit_and_a_bad_interval(pair, toy_run):
  main = pair[0]
  settings, parts = _judge_settings(main, f"evals.judge.guide.run={toy_run}")
  with pytest.raises(errors.UserError, match="^evals.judge.guide.run: the guide has examples"):
    generative.guided_sampler("evals.judge", settings, parts)
  settings, parts = _judge_settings(main, "evals.judge.guidance_interval=(5.0, 0.3)")
  with pytest.raises(errors.UserError, match=r"^evals.judge.guidance_interval=\(5, 0.3\): "):
    generative.guided_sampler("evals.judge", settings, parts)


def test_run_denoiser_guides_only_inside_the_interval(pair):
  run = analysis.load_run(pair[0])
  x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  labels = np.array([[0, 1], [2, 3]])
  for sigma, guided in ((0.2, False), (1.0, True), (10.0, False)):
    plain = run.denoiser(x * sigma, sigma, labels)
    limited = run.denoiser(x * sigma, sigma, labels, guidance=3.0, guidance_interval=(0.3, 5.0))
    everywhere = run.denoiser(x * sigma, sigma, labels, guidance=3.0)
    # As in test_outside_the_interval_samples_are_the_unguided_ones: reassociation only.
    expected = everywhere if guided else plain
    scale = np.abs(expected).max()
    np.testing.assert_allclose(limited, expected, rtol=0, atol=1e-5 * scale)
