"""Sweeps: the points a config's `get_sweep()` lists, and how `jaxmm sweep` runs and sums them up.

  points.py   product() and zipped(), which config files build their points with
  plan.py     a sweep checked, named and recorded in DIR/sweep.json
  launch.py   its points run in turn, as a Slurm array job, or on a TPU VM or pod
  summary.py  the table of `jaxmm sweep --summarize`

A config file imports this package for its points: `sweeps.product(...)`.
"""
from jaxmm.sweeps.points import Point, product, zipped
