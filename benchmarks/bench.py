"""jaxmm against its PyTorch peers: the four side-by-side comparisons, one run, one table.

  make bench                  # the full tables: each script's own settings
  make bench ARGS=--quick     # small settings: a few minutes on 2 cores, to check that all runs
  .venv-peers/bin/python benchmarks/bench.py --quick --out /tmp/bench   # /tmp/bench.md, .json

Runs, in order, each in its own process with this interpreter (so that none
inherits another's x64 mode, XLA flags or heap):

  step_throughput.py  SigLIP train step, jaxmm against open_clip (eager)
  diffusion_step.py   EDM U-Net train step, jaxmm against diffusers (the faster
                      of eager and torch.compile)
  sampler_nfe.py      samplers at equal NFE, jaxmm's against k-diffusion's
                      (MMD² to exact samples, lower is better)
  input_pipeline.py   224 x 224 random-resized crops of JPEG photographs per
                      second per core, jaxmm's pipeline against open_clip's
                      webdataset one (reported as core-ms per image)

Each script writes its results with --json; this collects them, with the CPU
(model, family, vector extensions), the core count, the load average, the
versions and jaxmm's commit, into benchmarks/results/<date>-<cpu>[-quick].md
and .json (or --out). Every ratio is the peer's value over jaxmm's, so above 1
jaxmm is ahead. bf16 is timed only where the CPU computes it in hardware
(avx512_bf16 or AMX): elsewhere both sides emulate it, slower than fp32.
"""
import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

import machine

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCHMARKS)
PACKAGES = ("jax", "jaxlib", "torch", "torchvision", "open_clip_torch", "diffusers", "k-diffusion",
            "webdataset", "pillow", "simplejpeg")
TITLES = {
    "siglip": "SigLIP train step vs open_clip",
    "unet": "EDM U-Net train step vs diffusers",
    "samplers": "Samplers vs k-diffusion",
    "input": "Input pipeline vs open_clip webdataset",
}


@dataclasses.dataclass
class Row:
  """One line of the summary: jaxmm's and the peer's value in one setting (lower is better in
  both units) and `ratio` = peer / jaxmm (above 1: jaxmm ahead; None where jaxmm's MMD² ≤ 0)."""
  setting: str
  unit: str  # "s/step" (median over rounds), "MMD²" or "core-ms/image" (1000 / images/s/core)
  jaxmm: float
  peer: float
  peer_label: str
  jaxmm_label: str = ""
  paired_ratio: float | None = None  # the median of the per-round ratios (timed comparisons)
  within_noise: bool = False  # the two MMD² differ by less than twice the noise's std
  ratio: float | None = dataclasses.field(init=False)

  def __post_init__(self):
    self.ratio = self.peer / self.jaxmm if self.jaxmm > 0 else None


def siglip_rows(output: dict) -> list[Row]:
  """step_throughput.py's --json: per dtype, the median seconds per step of both sides."""
  return [
      Row(setting=f"{r['dtype']}, batch {output['args']['batch']}",
          unit="s/step",
          jaxmm=r["median"]["jaxmm"],
          peer=r["median"]["torch"],
          peer_label="open_clip eager",
          paired_ratio=r["paired_ratio"]) for r in output["results"]
  ]


def unet_rows(output: dict) -> list[Row]:
  """diffusion_step.py's --json: per dtype, jaxmm against the faster torch mode."""
  return [
      Row(setting=f"{r['dtype']}, batch {r['batch_size']}",
          unit="s/step",
          jaxmm=r["median"]["jaxmm"],
          peer=r["median"][r["torch_best"]],
          peer_label=f"diffusers, {r['torch_best']}",
          paired_ratio=r["paired_ratio"]) for r in output["results"]
  ]


def sampler_rows(output: dict) -> list[Row]:
  """sampler_nfe.py's --json: per NFE, each side's best sampler and its MMD²."""
  noise_std = output["results"]["noise"]["std"]
  rows = []
  for nfe, best in output["results"]["best"].items():
    (jaxmm_label, jaxmm), (peer_label, peer) = best["jaxmm"], best["k-diffusion"]
    rows.append(
        Row(setting=f"NFE {nfe}",
            unit="MMD²",
            jaxmm=jaxmm,
            peer=peer,
            peer_label=peer_label,
            jaxmm_label=jaxmm_label,
            within_noise=abs(peer - jaxmm) < 2 * noise_std))
  return rows


def input_rows(output: dict) -> list[Row]:
  """input_pipeline.py's --json: jaxmm's core-ms per image against each open_clip variant's."""
  rates, args = output["images_per_core_s"], output["args"]
  return [
      Row(setting=f"{args['cores']} cores, batch {args['batch']}",
          unit="core-ms/image",
          jaxmm=1000 / rates["jaxmm"],
          peer=1000 / rates[peer],
          peer_label=peer) for peer in rates if peer != "jaxmm"
  ]


SUMMARIES = {"siglip": siglip_rows, "unet": unet_rows, "samplers": sampler_rows,
             "input": input_rows}


def commands(quick: bool, dtypes: list[str]) -> dict[str, list[str]]:
  """Each comparison's command line (without --json): the scripts' own settings in `dtypes`,
  or with `quick` fp32 and few rounds, steps and samples."""
  scripts = {
      "siglip": ["step_throughput.py", "--dtype", "both" if len(dtypes) == 2 else dtypes[0]],
      "unet": ["diffusion_step.py", "--dtypes", ",".join(dtypes)],
      "samplers": ["sampler_nfe.py"],
      "input": ["input_pipeline.py", "--decoders"],
  }
  if quick:
    scripts["siglip"] += ["--rounds", "2", "--steps", "2", "--warmup", "1"]
    scripts["unet"] += ["--rounds", "2", "--steps", "1"]
    scripts["samplers"] += ["--samples", "1000", "--nfe", "10", "25", "50"]
    scripts["input"] += ["--images", "128", "--rounds", "1", "--repeats", "1"]
  python = os.path.relpath(sys.executable, REPO)
  return {
      name: [python, os.path.join("benchmarks", script), *args]
      for name, (script, *args) in scripts.items()
  }


def run(command: list[str]) -> dict:
  """Runs one comparison from the repository root, its output shown as it comes; its
  'command', 'seconds', 'returncode', 'output' (stdout) and 'results' (its --json, or None)."""
  with tempfile.TemporaryDirectory() as tmp:
    json_path = os.path.join(tmp, "results.json")
    print(f"\n$ {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    lines = []
    with subprocess.Popen(command + ["--json", json_path],
                          cwd=REPO,
                          stdout=subprocess.PIPE,
                          text=True,
                          env={
                              **os.environ, "PYTHONUNBUFFERED": "1"
                          }) as process:
      for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    seconds = time.perf_counter() - start
    results = None
    if process.returncode == 0 and os.path.exists(json_path):
      with open(json_path, encoding="utf-8") as f:
        results = json.load(f)
  return {
      "command": shlex.join(command),
      "seconds": seconds,
      "returncode": process.returncode,
      "output": "".join(lines),
      "results": results,
  }


def versions() -> dict[str, str | None]:
  """The installed version of each of PACKAGES (None where it is not installed)."""
  found = {}
  for package in PACKAGES:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      found[package] = None
  return found


def commit() -> str | None:
  """jaxmm's commit, with '+modified' where tracked files differ from it; None outside git."""
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None
  modified = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=REPO).returncode != 0
  return head + ("+modified" if modified else "")


def cpu_slug(info: dict) -> str:
  """A file-name form of the CPU: 'Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz' (family 6,
  model 143) -> 'intel-xeon-platinum-8481c-f6m143'."""
  name = re.sub(r"\((R|TM)\)|\bCPU\b|@.*|\d+-Core|Processor", " ", info["model_name"])
  words = re.findall(r"[a-z0-9]+", name.lower())
  if info["family"]:
    words.append(f"f{info['family']}m{info['model']}")
  return "-".join(words)


def fmt(value: float, unit: str) -> str:
  if unit == "MMD²":
    return f"{value:.1e}"
  return f"{value:.3f} {unit}" if unit == "s/step" else f"{value:.2f} {unit}"


def ratio_cell(row: Row) -> str:
  if row.within_noise:
    return "within noise"
  if row.ratio is None:
    return "–"
  paired = f" [{row.paired_ratio:.2f}×]" if row.paired_ratio is not None else ""
  return f"{row.ratio:.2f}×{paired}"


def markdown(report: dict) -> str:
  """The report as markdown: the machine, one summary table, then each script's output."""
  cpu, rows = report["machine"], []
  dtypes = ", ".join(report["dtypes"])
  if "bf16" not in report["dtypes"]:
    dtypes += " (quick run)" if report["quick"] else " (this CPU has no bf16 in hardware)"
  for name, comparison in report["comparisons"].items():
    if comparison["results"] is None:
      rows.append(f"| {TITLES[name]} | failed (exit {comparison['returncode']}) | | | |")
    for row in comparison["rows"]:
      jaxmm = fmt(row.jaxmm, row.unit) + (f" ({row.jaxmm_label})" if row.jaxmm_label else "")
      rows.append(f"| {TITLES[name]} | {row.setting} | {jaxmm} | "
                  f"{fmt(row.peer, row.unit)} ({row.peer_label}) | {ratio_cell(row)} |")
  lines = [
      "# jaxmm against its PyTorch peers",
      "",
      f"{report['date']}, {'quick run' if report['quick'] else 'full run'}: "
      f"`{report['command']}`",
      "",
      "| machine | |",
      "|---|---|",
      f"| CPU | {machine.describe(cpu['cpu'])} |",
      f"| cores | {cpu['cores']} |",
      f"| load average (1 min) | {cpu['load_before']:.2f} before, {cpu['load_after']:.2f} after |",
      "| versions | " + ", ".join(f"{package} {version or 'not installed'}"
                                  for package, version in report["versions"].items()) + " |",
      f"| jaxmm commit | {report['commit']} |",
      f"| dtypes timed | {dtypes} |",
      "",
      "Ratios: the peer's value over jaxmm's (seconds per step, MMD² at equal NFE, or core-ms "
      "per input image; lower is "
      "better in all), so above 1 jaxmm is ahead; in brackets the median of the per-round "
      "ratios. MMD² values closer than twice the noise's std are within noise.",
      "",
      "| comparison | setting | jaxmm | peer | peer / jaxmm |",
      "|---|---|---:|---:|---:|",
      *rows,
  ]
  for name, comparison in report["comparisons"].items():
    lines += [
        "", f"## {TITLES[name]}", "",
        f"`{comparison['command']}`: {comparison['seconds']:.0f} s, exit "
        f"{comparison['returncode']}", "", "```text", comparison["output"].rstrip(), "```"
    ]
  return "\n".join(lines) + "\n"


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick",
                      action="store_true",
                      help="small settings (fp32, few rounds and samples): a few minutes")
  parser.add_argument("--out",
                      metavar="PATH",
                      help="write PATH.md and PATH.json (default: "
                      "benchmarks/results/<date>-<cpu>[-quick])")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  now = datetime.datetime.now(datetime.timezone.utc)
  info = machine.cpu_info()
  dtypes = ["fp32", "bf16"] if machine.has_bf16(info) and not args.quick else ["fp32"]
  report = {
      "date": now.strftime("%Y-%m-%d %H:%M UTC"),
      "quick": args.quick,
      "command": shlex.join([os.path.relpath(sys.executable), *sys.argv]),
      "machine": {
          "cpu": info,
          "description": machine.describe(info),
          "cores": os.cpu_count(),
          "load_before": os.getloadavg()[0],
      },
      "versions": versions(),
      "commit": commit(),
      "dtypes": dtypes,
      "comparisons": {},
  }
  for name, command in commands(args.quick, dtypes).items():
    comparison = run(command)
    results = comparison["results"]
    comparison["rows"] = SUMMARIES[name](results) if results is not None else []
    report["comparisons"][name] = comparison
  report["machine"]["load_after"] = os.getloadavg()[0]

  out = args.out or os.path.join(
      BENCHMARKS, "results", f"{now:%Y-%m-%d}-{cpu_slug(info)}" + ("-quick" if args.quick else ""))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write(markdown(report))
  with open(out + ".json", "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1, default=dataclasses.asdict)
  print(f"\nwrote {out}.md and {out}.json")
  failed = [name for name, c in report["comparisons"].items() if c["results"] is None]
  if failed:
    sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
  main()
