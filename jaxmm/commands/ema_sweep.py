"""`jaxmm ema --sweep`: post-hoc EMAs of a range of σ_rel, each scored as training scores the
run, in a table, a JSON file and a plot of each metric against σ_rel (as EDM2's Fig. 5).

The scores are those of the run's own `judge` and `two_sample` evaluators
(`config.evals`; --judge replaces the judge's image-text run), on the mesh
of the run's config, with the tracked power EMAs scored beside the
reconstructions. Written to workdir/posthoc_ema/sweep_STEP.json and .png.
"""
import copy
import dataclasses
import io
import json
import os

import numpy as np

from jaxmm import errors
from jaxmm.runs import posthoc
from jaxmm.runs import run_files
from jaxmm import storage
from jaxmm.train import ema as ema_lib

# The evaluators that score samples with a number.
SCORED_TYPES = ("judge", "two_sample")


def scored_evals(config, judge: str | None) -> dict:
  """{name: settings} of the run's scoring evaluators, the judge's run set to `judge` if given;
  a `UserError` if there are none, or the judge has no run."""
  every_eval = config.get("evals") or {}
  evals = {name: copy.deepcopy(settings) for name, settings in every_eval.items()
           if settings.type in SCORED_TYPES}
  if not evals:
    raise errors.UserError(f"--sweep scores samples with the run's {' or '.join(SCORED_TYPES)} "
                           f"evaluator, and its config.evals has none ({sorted(every_eval)})")
  for name, settings in evals.items():
    settings.every = 1
    if settings.type == "judge":
      settings.run = judge or settings.run
      if settings.run is None:
        raise errors.UserError(f"--sweep: the run's evals.{name}.run is None; pass --judge DIR, a "
                               "trained image-text run such as runs/siglip_shapes")
  return evals


def _pyplot():
  """matplotlib.pyplot, or a `UserError` that says how to install it."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise errors.UserError("--sweep plots with matplotlib: pip install 'jaxmm[examples]'") from None
  return plt


def _scorer(trained, evals: dict, mesh):
  """score(params) -> {metric: value} by the evaluators `evals`, as training calls them."""
  # pylint: disable-next=import-outside-toplevel
  from jaxmm import evaluators
  # pylint: disable-next=import-outside-toplevel
  from jaxmm.experiments import diffusion as diffusion_experiment
  config = copy.deepcopy(trained.config)
  with config.unlocked():
    config.evals, config.eval_every = evals, 1
  parts = dataclasses.replace(
      diffusion_experiment.evaluator_parts(trained.model, config, mesh, None),
      variables=lambda params: params)
  built = evaluators.build_evaluators(parts)

  def score(params):
    scores = {}
    for _, evaluator in built:
      scores.update(evaluator(params, trained.step))
    return scores

  return score


def table(rows: dict[str, dict]) -> str:
  """The rows {average: {'sigma_rel': s, metric: value}} as a text table, one row each."""
  metrics = sorted({k for row in rows.values() for k in row} - {"sigma_rel"})
  lines = ["  ".join(["average".ljust(26), "σ_rel".rjust(6)] + [m.rjust(len(m)) for m in metrics])]
  for name, row in rows.items():
    lines.append("  ".join([name.ljust(26), f"{row['sigma_rel']:6.3f}"] +
                           [f"{row[m]:{len(m)}.4g}" for m in metrics]))
  return "\n".join(lines)


def plot(rows: dict[str, dict], title: str, plt) -> bytes:
  """A PNG: each metric against σ_rel, the reconstructions as a line, the tracked as stars."""
  metrics = sorted({k for row in rows.values() for k in row} - {"sigma_rel"})
  columns = min(3, len(metrics))
  lines = -(-len(metrics) // columns)
  figure, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3 * lines), squeeze=False)
  rebuilt = [row for name, row in rows.items() if name.startswith("posthoc_")]
  tracked = [row for name, row in rows.items() if not name.startswith("posthoc_")]
  for axis, metric in zip(axes.flat, metrics):
    axis.plot([r["sigma_rel"] for r in rebuilt], [r[metric] for r in rebuilt], "o-", ms=3,
              label="post-hoc")
    axis.plot([r["sigma_rel"] for r in tracked], [r[metric] for r in tracked], "*", ms=10,
              label="tracked")
    axis.set_xlabel("σ_rel")
    axis.set_title(metric, fontsize=9)
  for axis in axes.flat[len(metrics):]:
    axis.axis("off")
  axes.flat[0].legend(fontsize=8)
  figure.suptitle(title, fontsize=10)
  figure.tight_layout()
  png = io.BytesIO()
  figure.savefig(png, format="png", dpi=100)
  plt.close(figure)
  return png.getvalue()


def run(workdir: str, step: int, sigma_rels, judge: str | None) -> dict[str, dict]:
  """Scores the tracked power EMAs and the post-hoc EMA of each of `sigma_rels` at `step`;
  prints the table, writes the JSON and the plot, and returns the rows."""
  # pylint: disable-next=import-outside-toplevel
  from jaxmm import analysis
  from jaxmm import parallel  # pylint: disable=import-outside-toplevel
  config = run_files.run_config(workdir, step)
  evals = scored_evals(config, judge)
  plt = _pyplot()
  mesh = parallel.make_mesh(config.mesh)
  trained = analysis.load_run(workdir, step, mesh=mesh)
  score = _scorer(trained, evals, mesh)
  rows = {
      name: dict(sigma_rel=s, **score(trained.ema[name]))
      for name, s in ema_lib.power_sigma_rels(config.ema).items()
  }
  for sigma_rel in np.asarray(sigma_rels, float).tolist():
    rows[posthoc.average_name(sigma_rel)] = dict(sigma_rel=sigma_rel,
                                                 **score(trained.posthoc_ema(sigma_rel)))
  base = os.path.join(storage.absolute(workdir), posthoc.POSTHOC_DIR, f"sweep_{step}")
  storage.make_dirs(os.path.dirname(base))
  storage.write_text(base + ".json", json.dumps(rows, indent=2))
  storage.write_bytes(base + ".png", plot(rows, f"{workdir}, step {step}", plt))
  print(table(rows))
  print(f"wrote {base}.json and {base}.png")
  return rows
