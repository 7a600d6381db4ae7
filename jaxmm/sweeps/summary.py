"""`jaxmm sweep --summarize DIR`: a table of a sweep's points, printed and in DIR/summary.csv.

One row per point of DIR/sweep.json: its name, its overrides (one column per
key), the last step in its `metrics.jsonl`, its status (finished, partial,
diverged, failed, not started) and the value of `train/loss` and of every
`eval/*` metric at the last step that logged it. When a point diverged or
failed, a last `error` column says what went wrong: the first clause of its
error (`training diverged at step 1: non-finite loss=nan, ...`), in full in
the point's `sweep_outcome.json`.
"""
import csv
import io
import json
import os
from typing import Any

from jaxmm import storage
from jaxmm.sweeps import plan

SUMMARY_FILE = "summary.csv"
_ENDED_IN_ERROR = (plan.DIVERGED, plan.FAILED)


def summarize(workdir: str) -> None:
  """Prints the table of the sweep in `workdir` and writes it to `workdir/summary.csv`."""
  points = plan.read_record(workdir)["points"]
  keys = list(dict.fromkeys(key for overrides in points.values() for key in overrides))
  rows = []
  for name, overrides in points.items():
    point_dir = os.path.join(workdir, name)
    step, metrics = last_metrics(point_dir)
    status = _status(point_dir)
    error = _error(point_dir) if status in _ENDED_IN_ERROR else None
    rows.append({"point": name, **overrides, "step": step, "status": status, **metrics,
                 "error": error})
  eval_names = sorted({name for row in rows for name in row if name.startswith("eval/")})
  columns = ["point", *keys, "step", "status", "train/loss", *eval_names]
  if any(row["error"] for row in rows):
    columns.append("error")
  table = [[row.get(column) for column in columns] for row in rows]
  print(format_table(columns, table))
  path = os.path.join(workdir, SUMMARY_FILE)
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(columns)
  writer.writerows([["" if value is None else value for value in row] for row in table])
  storage.write_text(path, text.getvalue())
  print(f"wrote {path}")


def last_metrics(point_dir: str) -> tuple[int | None, dict[str, float]]:
  """(the highest step in the point's metrics.jsonl, {metric: its value at the last step that
  logged it}); (None, {}) before anything was logged."""
  # Imported here so that `jaxmm sweep` without --summarize, and its errors, need no JAX start-up.
  from jaxmm.runs import run_files  # pylint: disable=import-outside-toplevel
  if not storage.is_dir(point_dir):
    return None, {}
  table = run_files.read_metrics(point_dir)
  if not len(table["step"]):
    return None, {}
  latest = run_files.latest_metrics(table)
  return int(table["step"].max()), {name: value for name, (_, value) in latest.items()}


def _status(point_dir: str) -> str:
  """The point's status, against the total_steps of its latest launch (its config.json)."""
  config_path = os.path.join(point_dir, plan.CONFIG_FILE)
  total_steps = None
  if storage.is_file(config_path):
    total_steps = json.loads(storage.read_text(config_path))["total_steps"]
  return plan.point_status(point_dir, total_steps)


def _error(point_dir: str) -> str:
  """What went wrong in the point's latest run: the first clause of its error (the rest says
  what to change)."""
  return plan.read_outcome(point_dir)["error"].split("; ")[0]


def format_table(columns: list[str], rows: list[list[Any]]) -> str:
  """Left-aligned columns; floats to 4 significant digits, a missing value as '-'."""
  cells = [columns] + [[_cell(value) for value in row] for row in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  return "\n".join(
      "  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip() for row in cells)


def _cell(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)
