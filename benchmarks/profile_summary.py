"""Where a profiled step's device time goes: the largest kernels and ops of a jax.profiler trace.

  python benchmarks/profile_summary.py TRACE_DIR [--steps N] [--top 25]

reads the newest Perfetto trace (`*.trace.json.gz`) that
`jax.profiler.trace(TRACE_DIR, create_perfetto_trace=True)` wrote (as
`train_step_mfu.py --profile TRACE_DIR` does), sums the durations of its
complete events per (track, name) on the device tracks (GPU streams, and
XLA's op track, which names the HLO op each kernel belongs to; on a CPU,
where there are none, the XLA client threads), and prints per step: the
time of each track, the `--top` events by time, and the share of a stream's
time spent in matrix-product and attention kernels, recognised by name
(`MATMUL_KERNELS`, `ATTENTION_KERNELS`). MFU well under the matrix units'
rate with a low matmul share means the time is in the elementwise and
reduction fusions between the products.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re

# Substrings of kernel names: cuBLAS / CUTLASS / XLA's Triton GEMMs, and cuDNN's fused attention.
MATMUL_KERNELS = re.compile(r"gemm|xmma|nvjet|cutlass|wgmma|\bdot\b|sm90_|sm80_", re.IGNORECASE)
ATTENTION_KERNELS = re.compile(r"fmha|flash|cudnn|attention|sdpa", re.IGNORECASE)


def newest_trace(trace_dir: str) -> str:
  """The path of the newest *.trace.json.gz below `trace_dir`."""
  paths = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
  if not paths:
    raise SystemExit(f"no *.trace.json.gz below {trace_dir}: profile with "
                     "jax.profiler.trace(DIR, create_perfetto_trace=True)")
  return max(paths, key=os.path.getmtime)


def track_times(events: list[dict]) -> dict[str, collections.Counter]:
  """{track: Counter(event name -> total µs)} of the complete events on the device tracks.

  A track is 'process / thread' as the trace's metadata names them. Device
  processes are those named '/device:...'; without any, the host threads
  that run XLA's compiled code stand in for them (there, events nest: the
  executor's own event holds the ops it runs, so a track's total counts
  them twice).
  """
  names = {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") in ("process_name", "thread_name"):
      key = e["pid"] if e["name"] == "process_name" else (e["pid"], e["tid"])
      names[key] = e["args"]["name"]
  device_pids = {pid for pid, name in names.items() if str(name).startswith("/device:")}

  def track(e):
    process, thread = names.get(e["pid"], str(e["pid"])), names.get((e["pid"], e["tid"]), "")
    if device_pids:
      return f"{process} / {thread}" if e["pid"] in device_pids else None
    return f"{process} / {thread}" if "XLA" in thread else None

  times = collections.defaultdict(collections.Counter)
  for e in events:
    if e.get("ph") == "X" and (name := track(e)) is not None:
      times[name][e["name"]] += float(e.get("dur", 0.0))
  return times


def summarize(trace_dir: str, steps: int, top: int) -> str:
  """The report the module docstring describes, as text."""
  path = newest_trace(trace_dir)
  with gzip.open(path, "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  times = track_times(events)
  lines = [f"trace: {path}; times are per step (the trace's total / {steps})"]
  for name, counter in sorted(times.items(), key=lambda kv: -sum(kv[1].values())):
    total = sum(counter.values())
    matmul = sum(t for k, t in counter.items() if MATMUL_KERNELS.search(k))
    attention = sum(t for k, t in counter.items() if ATTENTION_KERNELS.search(k))
    lines.append(f"\n{name}: {total / steps / 1e3:.2f} ms, {len(counter)} distinct events; "
                 f"matmul kernels {matmul / total:.0%}, attention kernels {attention / total:.0%}")
    for event, t in counter.most_common(top):
      lines.append(f"  {t / steps / 1e3:9.3f} ms  {t / total:6.1%}  {event[:110]}")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("trace_dir")
  parser.add_argument("--steps", type=int, default=1, help="steps the trace holds")
  parser.add_argument("--top", type=int, default=25, help="events listed per track")
  args = parser.parse_args(argv)
  print(summarize(args.trace_dir, args.steps, args.top))


if __name__ == "__main__":
  main()
