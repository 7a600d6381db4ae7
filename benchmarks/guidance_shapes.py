"""Guidance on the shapes default, judged: none, CFG, CFG on an interval, autoguidance, both.

The main run is configs/edm_shapes.py, the guide configs/edm_shapes.py:guide
(`make train-guided`); the judge is a trained image-text run (`make train`
writes runs/siglip_shapes). Every setting draws --per-pair samples of each of
the 48 (shape, colour) pairs with Heun at --steps levels from the same seed,
and the judge scores them (`jaxmm.evaluators.judge`): shape, colour and pair
accuracy, the same on the 8 held-out pairs, and the FD to the real test
images. NFE counts network calls (`jaxmm.diffusion.nfe`).

"autoguidance + CFG" is D_guide(x; ∅) + w·(D_main(x; c) − D_guide(x; ∅)): the
reference is the guide's unconditional denoiser, weaker in both ways.

  .venv/bin/python benchmarks/guidance_shapes.py --run runs/edm_shapes \
      --guide runs/edm_shapes_guide --judge runs/siglip_shapes [--guidance 2] [--json FILE]
"""
import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import analysis
from jaxmm import diffusion
from jaxmm.evaluators import judge as judge_lib
from jaxmm.runs import sampling

INTERVAL = (0.3, 3.0)


def autoguided_cfg_sampler(run, guide, num_steps):
  """jit(labels [N, K], rng, w) -> samples with D_guide(x; ∅) + w·(D_main(x; c) − D_guide(x; ∅))."""
  schedule = diffusion.schedule_from_config(run.config.diffusion)
  main_params = sampling.choose_params(run, None)
  guide_params = sampling.choose_params(guide, None)
  shape = tuple(run.config.data.image_size for _ in range(2)) + (3,)

  def draw(labels, rng, w):
    null = jnp.full_like(labels, diffusion.NULL_LABEL)
    main = sampling.denoiser(run.model, schedule, main_params, labels)
    reference = sampling.denoiser(guide.model, schedule, guide_params, null)
    return diffusion.sample(diffusion.extrapolate(main, reference, w), rng,
                            (len(labels),) + shape, sampler="heun", num_steps=num_steps,
                            sigma_min=schedule.sigma_min, sigma_max=schedule.sigma_max)

  return jax.jit(draw)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run", default="runs/edm_shapes")
  parser.add_argument("--guide", default="runs/edm_shapes_guide")
  parser.add_argument("--judge", default="runs/siglip_shapes")
  parser.add_argument("--guidance", type=float, default=2.0)
  parser.add_argument("--steps", type=int, default=18)
  parser.add_argument("--per-pair", type=int, default=10)
  parser.add_argument("--seed", type=int, default=1)
  parser.add_argument("--json", metavar="FILE")
  args = parser.parse_args()
  run, guide = analysis.load_run(args.run), analysis.load_run(args.guide)
  judge = judge_lib.make_judge(args.judge)
  reference = judge_lib.real_image_features(judge, run.config.data, split="test")
  pairs = np.array([(s, c) for s in range(6) for c in range(8)], np.int32)
  labels = np.repeat(pairs, args.per_pair, axis=0)
  w, steps = args.guidance, args.steps
  heun = diffusion.nfe("heun", steps)
  settings = {
      "no guidance": (dict(), heun),
      f"no guidance, {2 * steps} steps": (dict(num_steps=2 * steps), diffusion.nfe("heun",
                                                                                  2 * steps)),
      f"CFG w={w:g}": (dict(guidance=w), 2 * heun),
      f"CFG w={w:g}, σ in {INTERVAL}": (dict(guidance=w, guidance_interval=INTERVAL),
                                         diffusion.nfe("heun", steps, guided=True,
                                                       interval=INTERVAL)),
      f"autoguidance w={w:g}": (dict(guidance=w, guide=guide), 2 * heun),
      f"autoguidance w={w:g}, σ in {INTERVAL}": (dict(guidance=w, guide=guide,
                                                      guidance_interval=INTERVAL),
                                                 diffusion.nfe("heun", steps, guided=True,
                                                               interval=INTERVAL)),
  }
  both = autoguided_cfg_sampler(run, guide, steps)
  draws = {name: (lambda kw=kw: run.sample(num=len(labels), labels=labels, seed=args.seed,
                                           **{"num_steps": steps, **kw}), nfe)
           for name, (kw, nfe) in settings.items()}
  draws[f"autoguidance + CFG w={w:g}"] = (
      lambda: np.asarray(both(jnp.asarray(labels), jax.random.key(args.seed), w)), 2 * heun)
  results = {}
  for name, (draw, nfe) in draws.items():
    images = draw()
    scores = judge_lib.judge_samples(judge, images, labels[:, 0], labels[:, 1], reference)
    scores.update(judge_lib.judge_held_out(judge, images, labels[:, 0], labels[:, 1]))
    results[name] = dict(nfe=nfe, **scores)
    print(name, results[name], flush=True)
  keys = ("shape", "colour", "pair", "held_out_shape", "held_out_colour", "held_out_pair")
  print("| setting | NFE | " + " | ".join(keys) + " | FD |")
  print("|---" * (len(keys) + 3) + "|")
  for name, r in results.items():
    cells = " | ".join(f"{r['conditional_accuracy/' + k]:.1%}" for k in keys)
    print(f"| {name} | {r['nfe']} | {cells} | {r['fd']:.3f} |")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
