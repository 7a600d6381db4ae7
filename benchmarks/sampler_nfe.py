"""Sample quality against the number of denoiser calls (NFE), jaxmm's samplers and k-diffusion's.

Every sampler runs with the ideal denoiser of `jaxmm.diffusion.mixture_2d()` (a
3-component 2-D Gaussian mixture; the same closed form written in torch for
k-diffusion), in float64, from one shared start x_T = σ_max·z of --samples
points. The σ grid is that of Karras et al. (2022), eq. 5 (σ ∈ [0.002, 80],
ρ = 7; k-diffusion's own `get_sigmas_karras` for its samplers) unless a column
says "loglinear" (uniform in log σ; `get_sigmas_exponential` for k-diffusion).
Quality is the unbiased RBF MMD² (`jaxmm.diffusion.mmd2`) against --samples
exact samples of the mixture; lower is better, and values within the noise
printed under the table are indistinguishable. A row's NFE is an upper bound:
each sampler gets the most steps whose NFE fits (Heun-type samplers make
2N − 1 calls), and k-diffusion's calls are counted.

  .venv-peers/bin/python benchmarks/sampler_nfe.py            # with k-diffusion
  .venv/bin/python benchmarks/sampler_nfe.py --no-kdiffusion  # jaxmm only

The venv with k-diffusion: `make peers` (benchmarks/requirements-peers.txt).
"""
import argparse
import importlib.util
import json
import math
import sys
import time
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm import diffusion
import machine

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
LANGEVIN_STEPS = 5

# name -> (jaxmm sampler, its arguments, rho of the grid)
JAXMM_COLUMNS = {
    "euler": ("euler", {}, RHO),
    "heun": ("heun", {}, RHO),
    "ddim η=1": ("ddim", {
        "eta": 1.0
    }, RHO),
    "dpmpp_2m": ("dpmpp_2m", {}, RHO),
    "unipc": ("unipc", {}, RHO),
    "euler_maruyama": ("euler_maruyama", {}, RHO),
    f"langevin T={LANGEVIN_STEPS}": ("langevin", {
        "steps_per_level": LANGEVIN_STEPS
    }, RHO),
    "unipc loglinear": ("unipc", {}, math.inf),
    "unipc-1 bh1 loglinear": ("unipc", {
        "order": 1,
        "variant": "bh1"
    }, math.inf),
}
# name -> (k-diffusion sampler, denoiser calls per step, loglinear grid)
KDIFF_COLUMNS = {
    "kd euler": ("sample_euler", 1, False),
    "kd heun": ("sample_heun", 2, False),
    "kd dpm_2": ("sample_dpm_2", 2, False),
    "kd lms": ("sample_lms", 1, False),
    "kd dpmpp_2m": ("sample_dpmpp_2m", 1, False),
    "kd dpmpp_2m_sde": ("sample_dpmpp_2m_sde", 1, False),
    "kd dpmpp_3m_sde": ("sample_dpmpp_3m_sde", 1, False),
    "kd lms loglinear": ("sample_lms", 1, True),
    "kd dpmpp_2m loglinear": ("sample_dpmpp_2m", 1, True),
    "kd dpmpp_3m_sde loglinear": ("sample_dpmpp_3m_sde", 1, True),
}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--nfe", type=int, nargs="+", default=[8, 10, 12, 16, 24, 32, 50, 100])
  parser.add_argument("--samples", type=int, default=10_000, help="generated and exact samples")
  parser.add_argument("--no-kdiffusion", action="store_true", help="only jaxmm's samplers")
  parser.add_argument("--json", metavar="FILE", help="also write the results to FILE, as JSON")
  return parser.parse_args()


def import_kdiffusion_sampling():
  """k_diffusion.sampling without the package's __init__, which imports its training extras."""
  spec = importlib.util.find_spec("k_diffusion")
  package = types.ModuleType("k_diffusion")
  package.__path__ = list(spec.submodule_search_locations)
  sys.modules["k_diffusion"] = package
  from k_diffusion import sampling  # pylint: disable=import-outside-toplevel
  return sampling


def torch_denoiser(mixture, torch):
  """mixture.denoiser in torch float64: the same closed form, in each component's eigenbasis."""
  eigenvalues, eigenvectors = (torch.from_numpy(a) for a in np.linalg.eigh(mixture.covariances))
  means = torch.from_numpy(mixture.means)
  log_weights = torch.from_numpy(np.log(mixture.weights))

  def denoise(x, sigma):
    noisy = eigenvalues + (sigma**2)[:, None, None]
    projected = torch.einsum("kji,bkj->bki", eigenvectors, x[:, None, :] - means)
    log_joint = log_weights - 0.5 * torch.sum(projected**2 / noisy + torch.log(noisy), dim=-1)
    posterior_means = means + torch.einsum("kij,bkj->bki", eigenvectors,
                                           eigenvalues / noisy * projected)
    return torch.einsum("bk,bki->bi", torch.softmax(log_joint, dim=-1), posterior_means)

  return denoise


def most_steps(nfe_of, budget):
  """The largest N ≥ 1 with nfe_of(N) ≤ budget (None if even N = 1 exceeds it)."""
  steps = None
  for n in range(1, budget + 1):
    if nfe_of(n) <= budget:
      steps = n
  return steps


def run_jaxmm(mixture, x_start, budgets):
  results = {}
  for column, (name, kw, rho) in JAXMM_COLUMNS.items():
    for budget in budgets:
      steps = most_steps(lambda n, name=name, kw=kw: diffusion.nfe(name, n, **kw), budget)
      if steps is None:
        continue
      grid = diffusion.karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX, rho)
      x = diffusion.SAMPLERS[name](mixture.denoiser, x_start, grid, jax.random.key(1), **kw)
      results[column, budget] = (x, diffusion.nfe(name, steps, **kw))
  return results


def run_kdiffusion(mixture, x_start, budgets):
  import torch  # pylint: disable=import-outside-toplevel
  sampling = import_kdiffusion_sampling()
  denoise = torch_denoiser(mixture, torch)
  x_start = torch.from_numpy(np.array(x_start))
  # torchsde warns when k-diffusion's Brownian tree is queried at σ_min rounded below itself.
  warnings.filterwarnings("ignore", message="Should have ta>=t0", module="torchsde")
  results = {}
  for column, (name, calls_per_step, loglinear) in KDIFF_COLUMNS.items():
    for budget in budgets:
      steps = most_steps(lambda n, c=calls_per_step: c * n - (c - 1), budget)
      if loglinear:
        sigmas = sampling.get_sigmas_exponential(steps, SIGMA_MIN, SIGMA_MAX)
      else:
        sigmas = sampling.get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX, rho=RHO)
      calls = []

      def counted(x, sigma):
        calls.append(1)
        return denoise(x, sigma)

      torch.manual_seed(0)
      x = getattr(sampling, name)(counted, x_start.clone(), sigmas.double(), disable=True)
      assert len(calls) <= budget, (column, budget, len(calls))
      results[column, budget] = (jnp.asarray(x.numpy()), len(calls))
  return results


def best_per_side(scores, budget):
  """{'jaxmm' | 'k-diffusion': (column, MMD²)}: each side's lowest MMD² at NFE `budget`."""
  best = {}
  for side, names in (("jaxmm", JAXMM_COLUMNS), ("k-diffusion", KDIFF_COLUMNS)):
    row = {c: scores[c, budget] for c in names if (c, budget) in scores}
    if row:
      column = min(row, key=row.get)
      best[side] = (column, row[column])
  return best


def fmt(value):
  return f"{value:.1e}"


def main():
  args = parse_args()
  jax.config.update("jax_enable_x64", True)
  start_time = time.time()
  mixture = diffusion.mixture_2d()
  exact = mixture.sample(jax.random.key(0), args.samples, jnp.float64)
  x_start = SIGMA_MAX * jax.random.normal(jax.random.key(2), (args.samples, 2), jnp.float64)

  results = run_jaxmm(mixture, x_start, args.nfe)
  columns = list(JAXMM_COLUMNS)
  if not args.no_kdiffusion:
    results.update(run_kdiffusion(mixture, x_start, args.nfe))
    columns += list(KDIFF_COLUMNS)
  scores = {key: float(diffusion.mmd2(x, exact)) for key, (x, _) in results.items()}

  print("| NFE | " + " | ".join(columns) + " |")
  print("|---:|" + "---:|" * len(columns))
  for budget in args.nfe:
    cells = []
    for column in columns:
      if (column, budget) not in scores:
        cells.append("–")
        continue
      calls = results[column, budget][1]
      cells.append(fmt(scores[column, budget]) + ("" if calls == budget else f" ({calls})"))
    print(f"| {budget} | " + " | ".join(cells) + " |")
  print("\n(n) after a value: the sampler made n < NFE denoiser calls (the most that fit).")

  fresh = [
      float(diffusion.mmd2(mixture.sample(jax.random.key(3 + i), args.samples, jnp.float64), exact))
      for i in range(5)
  ]
  reference = diffusion.sample_unipc(mixture.denoiser, x_start,
                                     diffusion.karras_sigmas(1000, SIGMA_MIN, SIGMA_MAX, RHO),
                                     jax.random.key(1))
  floor = float(diffusion.mmd2(reference, exact))
  print(f"\nNoise: MMD² of 5 sets of {args.samples} fresh exact samples: mean "
        f"{fmt(np.mean(fresh))}, std {fmt(np.std(fresh))}. The converged ODE solution from the "
        f"same x_T (UniPC, 1000 steps), the floor of the deterministic samplers: {fmt(floor)}.")
  if ("euler", 100) in scores:
    target = scores["euler", 100]
    print(f"\nEuler at 100 NFE: {fmt(target)}. Fewest NFE (of those run) at which a sampler is "
          "at least as good:")
    for column in columns:
      reached = [b for b in args.nfe if scores.get((column, b), math.inf) <= target]
      print(f"  {column}: {min(reached) if reached else '–'}")
  print("\nBest per row:")
  best = {budget: best_per_side(scores, budget) for budget in args.nfe}
  for budget, row in best.items():
    print(f"  NFE {budget}: " +
          "; ".join(f"{side} {column} {fmt(value)}" for side, (column, value) in row.items()))
  print(f"\nCPU: {machine.describe()}; {args.samples} samples; "
        f"{time.time() - start_time:.0f} s in all.")
  if args.json:
    table = {
        column: {
            budget: {
                "mmd2": scores[column, budget],
                "calls": results[column, budget][1]
            } for budget in args.nfe if (column, budget) in scores
        } for column in columns
    }
    summary = {
        "table": table,
        "best": best,
        "noise": {
            "mean": float(np.mean(fresh)),
            "std": float(np.std(fresh))
        },
        "converged_floor": floor,
    }
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"args": vars(args), "results": summary}, f, indent=1)


if __name__ == "__main__":
  main()
