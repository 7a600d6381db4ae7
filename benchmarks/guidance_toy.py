"""Autoguidance against classifier-free guidance on the 2-D mixture (Karras et al. 2024, Fig. 1).

The three components of `jaxmm.diffusion.mixture_2d()` form two classes:
class 0 is the elongated component (weight 0.5) with the narrow one (std 0.05,
weight 0.2), class 1 the tilted one. Every denoiser is exact
(`GaussianMixture.denoiser`):

  cfg   D_∅ + w·(D_c − D_∅): D_c of the class's components, D_∅ of the whole mixture;
  auto  D_guide + w·(D_c − D_guide): the guide is the class's mixture blurred by
        N(0, BLUR²·I), a deliberately worse model of the same class.

Per w, over the pooled samples of both classes (as many of each as its
weight): MMD² against exact samples (`jaxmm.diffusion.mmd2`; 0 in
expectation when they agree), the share of samples farther than 3 from every
component in its own Mahalanobis metric ("off the modes"; 1.1 % of exact
samples), and the share of class 0's samples nearest its narrow component
(exact: 0.2/0.7 = 0.29), which falls where a guidance collapses class 0 onto
its main mode. Heun, NUM_STEPS levels, float32.

  .venv/bin/python benchmarks/guidance_toy.py [--samples 4000] [--json FILE]
"""
import argparse
import json

import jax
import numpy as np

from jaxmm import diffusion

CLASSES = ((0, 2), (1,))
NARROW = 2  # the narrow component of mixture_2d, in class 0
BLUR = 0.1
NUM_STEPS = 32
FAR = 3.0
SCALES = (1.0, 2.0, 3.0, 4.0)


def guided_samples(method: str, w: float, n: int, seed: int = 0) -> list[np.ndarray]:
  """Samples [n_c, 2] of each class c (n_c = n times its weight) with `method` at scale w;
  the same starting noise for every method and w."""
  mixture = diffusion.mixture_2d()
  samples = []
  for c, components in enumerate(CLASSES):
    conditional = mixture.select(components)
    reference = mixture if method == "cfg" else mixture.select(components, BLUR**2)
    denoiser = diffusion.extrapolate(conditional.denoiser, reference.denoiser, w)
    num = int(round(n * mixture.weights[list(components)].sum()))
    samples.append(np.asarray(diffusion.sample(denoiser, jax.random.key(seed + c), (num, 2),
                                               sampler="heun", num_steps=NUM_STEPS)))
  return samples


def scores(samples: list[np.ndarray], truth: np.ndarray) -> dict[str, float]:
  """'mmd2', 'off_modes' and 'narrow_share' (module docstring) of per-class samples."""
  mixture = diffusion.mixture_2d()
  pooled = np.concatenate(samples)
  distances = mixture.mahalanobis(pooled)
  class0 = distances[:len(samples[0])]
  return {
      "mmd2": float(diffusion.mmd2(pooled, truth)),
      "off_modes": float(np.mean(distances.min(axis=1) > FAR)),
      "narrow_share": float(np.mean(class0.argmin(axis=1) == NARROW)),
  }


def table(n: int, seed: int = 0) -> dict[tuple[str, float], dict[str, float]]:
  """(method, w) -> scores, for both methods and every w in SCALES."""
  truth = np.asarray(diffusion.mixture_2d().sample(jax.random.key(seed + 100), n))
  return {(method, w): scores(guided_samples(method, w, n, seed), truth)
          for method in ("cfg", "auto") for w in SCALES}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", type=int, default=4000, help="samples per setting")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", metavar="FILE", help="also write the results to FILE, as JSON")
  args = parser.parse_args()
  results = table(args.samples, args.seed)
  print("| w | CFG MMD² | CFG off modes | CFG narrow share | auto MMD² | auto off modes | "
        "auto narrow share |")
  print("|---|---|---|---|---|---|---|")
  for w in SCALES:
    cells = [f"{results[m, w]['mmd2']:.4f} | {results[m, w]['off_modes']:.1%} | "
             f"{results[m, w]['narrow_share']:.3f}" for m in ("cfg", "auto")]
    print(f"| {w:g} | " + " | ".join(cells) + " |")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({f"{m} w={w:g}": v for (m, w), v in results.items()}, f, indent=1)


if __name__ == "__main__":
  main()
