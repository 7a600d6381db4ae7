"""`jaxmm inspect --memory`: the per-device memory of a config's train step, before it trains.

  jaxmm inspect --memory --config FILE.py[:ARG] [--devices N[,N ...]] [--batch-sizes B[,B ...]]
                [--json] [--config.KEY=VALUE ...]

For each device count (default: the devices present) and global batch
(default: the config's batch_size), the step is compiled on the config's mesh
and XLA's memory analysis is read (`memory_plan`; the fields are named
in `jaxmm.train.memory`). One measurement prints as a list of its parts, several
as a table with one row per (devices, batch); progress goes to stderr.
"""
import argparse
import json
import sys

from jaxmm.errors import UserError

# (row key, label, what it is) in the order they print.
FIELDS = (
    ("params_bytes", "parameters", "this device's shards of the parameters"),
    ("opt_state_bytes", "optimizer state", "its shards of the optimizer state"),
    ("ema_bytes", "parameter averages", "its shards of the EMA copies (config.ema)"),
    ("model_state_bytes", "model state", "its shards of the model state (e.g. BatchNorm)"),
    ("batch_bytes", "batch", "its rows of the global batch"),
    ("argument_bytes", "arguments", "XLA argument_size: state and the batch keys the step reads"),
    ("output_bytes", "outputs", "XLA output_size: new state and metrics"),
    ("alias_bytes", "aliased", "XLA alias_size: outputs written into the donated state"),
    ("temp_bytes", "temporaries",
     "XLA temp_size: activations, gradients, loss and optimizer temporaries"),
    ("loss_temp_bytes", "  loss alone", "temp_size of the loss's value_and_grad compiled "
     "by itself (a part of the temporaries)"),
    ("generated_code_bytes", "generated code", "XLA generated_code_size (0 on the CPU)"),
    ("peak_bytes", "peak", "arguments + temporaries + outputs - aliased"),
)

# (header, row -> value in bytes) of the table's memory columns.
_COLUMNS = (
    ("params", lambda row: row["params_bytes"]),
    ("opt state", lambda row: row["opt_state_bytes"]),
    ("ema+model", lambda row: row["ema_bytes"] + row["model_state_bytes"]),
    ("batch", lambda row: row["batch_bytes"]),
    ("temps", lambda row: row["temp_bytes"]),
    ("loss temps", lambda row: row["loss_temp_bytes"]),
    ("peak", lambda row: row["peak_bytes"]),
)
_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def add_arguments(inspect: argparse.ArgumentParser) -> None:
  """The options of `jaxmm inspect --memory`."""
  group = inspect.add_argument_group(
      "memory plan", "With --memory and --config: the train step's memory per device, from "
      "XLA's analysis of the compiled step (nothing trains). More CPU devices than present are "
      "simulated.")
  group.add_argument("--memory",
                     action="store_true",
                     help="plan the per-device memory of the config's train step")
  group.add_argument("--devices",
                     metavar="N[,N...]",
                     help="device counts, one plan each (default: the devices present)")
  group.add_argument("--batch-sizes",
                     metavar="B[,B...]",
                     help="global batch sizes, one plan each (default: the config's batch_size)")


def check_flags(args: argparse.Namespace) -> None:
  """Raises `UserError` for a memory option used without --memory, or --memory with --run."""
  if args.memory and args.run is not None:
    raise UserError("--memory plans a config's train step: give --config FILE.py[:ARG], not --run")
  if args.devices is not None and not args.memory:
    raise UserError("--devices goes with --memory (the plan of the train step's memory)")
  if args.batch_sizes is not None and not (args.memory or args.input):
    raise UserError("--batch-sizes goes with --memory or --input (the plans of the train step's "
                    "memory and of its host cores)")


def positive_integers(flag: str, text: str | None) -> list[int] | None:
  """'1,2,4' -> [1, 2, 4]; None stays None."""
  if text is None:
    return None
  try:
    values = [int(part) for part in text.split(",")]
  except ValueError:
    values = []
  if not values or min(values) < 1:
    raise UserError(f"{flag} {text}: give positive integers separated by commas, e.g. "
                    f"{flag} 1,2,4,8")
  return values


def run(args: argparse.Namespace, overrides: list[str]) -> None:
  """Plans the memory of --config's train step and prints it (JSON with --json)."""
  device_counts = positive_integers("--devices", args.devices)
  batch_sizes = positive_integers("--batch-sizes", args.batch_sizes)
  # Imported here: JAX's CPU backend must not have started before the plan asks for devices.
  from jaxmm.commands import memory_plan  # pylint: disable=import-outside-toplevel
  rows = memory_plan.plan(args.config,
                          overrides,
                          device_counts,
                          batch_sizes,
                          progress=lambda line: print(line, file=sys.stderr, flush=True))
  if args.json:
    print(json.dumps(dict(config=args.config, overrides=overrides, rows=rows), indent=2))
  elif len(rows) == 1:
    print(parts_text(args.config, rows[0]))
  else:
    print(table_text(args.config, rows))


def human_bytes(count: int | None) -> str:
  """1536 -> '1.5 KiB'; None (not measured) -> '-'."""
  if count is None:
    return "-"
  for unit, size in _UNITS:
    if count >= size:
      return f"{count / size:.1f} {unit}"
  return f"{count} B"


def _mesh_text(row: dict) -> str:
  """'data=8, fsdp=1, tensor=1'."""
  return ", ".join(f"{axis}={size}" for axis, size in row["mesh"].items())


def parts_text(spec: str, row: dict) -> str:
  """One measurement as lines 'label  size  what it is'."""
  lines = [
      f"train step of {spec}: global batch {row['batch_size']} on {row['devices']} "
      f"{row['platform']} devices ({_mesh_text(row)}), {row['batch_per_device']} examples per "
      "device; per device:"
  ]
  width = max(len(label) for _, label, _ in FIELDS)
  lines += [
      f"  {label:<{width}}  {human_bytes(row[key]):>10}  {meaning}"
      for key, label, meaning in FIELDS
  ]
  return "\n".join(lines)


def table_text(spec: str, rows: list[dict]) -> str:
  """One line per (devices, batch): the mesh, the batch, and the memory parts."""
  headers = ["devices", "data,fsdp,tensor", "batch", "per device"] + [h for h, _ in _COLUMNS]
  table = [headers]
  for row in rows:
    table.append([
        str(row["devices"]), ",".join(map(str, row["mesh"].values())),
        str(row["batch_size"]),
        str(row["batch_per_device"])
    ] + [human_bytes(value(row)) for _, value in _COLUMNS])
  widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
  text = [f"train step of {spec} on {rows[0]['platform']}: memory per device"]
  text += ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in table]
  return "\n".join(text)
