"""Autoguidance keeps the 2-D mixture's modes covered where CFG collapses them
(benchmarks/guidance_toy.py, Karras et al. 2024, Fig. 1), with exact denoisers."""
import os
import sys

import jax
import numpy as np
import pytest

from jaxmm import diffusion

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import guidance_toy  # noqa: E402  pylint: disable=wrong-import-position


def test_mahalanobis_and_select_against_numbers_by_hand():
  mixture = diffusion.mixture_2d()
  # Component 2 is N((0, 1.2), 0.05²·I): a point 0.1 to its right is 2 of its stds away.
  assert np.isclose(mixture.mahalanobis(np.array([[0.1, 1.2]]))[0, 2], 2.0)
  blurred = mixture.select((0, 2), 0.01)
  np.testing.assert_allclose(blurred.weights, [0.5 / 0.7, 0.2 / 0.7])
  np.testing.assert_allclose(blurred.covariances[1], (0.05**2 + 0.01) * np.eye(2))


@pytest.mark.slow  # test_guidance_interval checks the combination; benchmarks/guidance_toy.py
def test_cfg_collapses_the_narrow_mode_where_autoguidance_keeps_it():
  n, w = 1000, 3.0
  truth = np.asarray(diffusion.mixture_2d().sample(jax.random.key(5), n))
  unguided = guidance_toy.scores(guidance_toy.guided_samples("cfg", 1.0, n), truth)
  cfg = guidance_toy.scores(guidance_toy.guided_samples("cfg", w, n), truth)
  auto = guidance_toy.scores(guidance_toy.guided_samples("auto", w, n), truth)
  # Same starting noise for all three, so the shares differ by the guidance, not by sampling
  # noise (at n·0.7 = 700 class-0 samples one sample is 0.0014 of a share).
  assert cfg["narrow_share"] < unguided["narrow_share"] - 0.05
  assert abs(auto["narrow_share"] - unguided["narrow_share"]) < 0.01
  assert auto["off_modes"] <= unguided["off_modes"] < cfg["off_modes"]
  # MMD²'s sampling noise at n = 1000 is ~1e-3 (its w = 1 value); CFG's is far above it.
  assert unguided["mmd2"] < 2e-3 and cfg["mmd2"] > 2 * auto["mmd2"] > 0
