"""benchmarks/gpu/run.sh and benchmarks/tpu_aot.py without an accelerator: the steps' command
lines, the imports that a GPU image without tensorflow_datasets must satisfy, and the HLO
collective count."""
import importlib
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

# run.sh must leave the device machine's 10-minute command limit room for installing the wheels,
# starting Python and copying $OUT back.
STEPS_BUDGET_S = 9 * 60


def planned_steps():
  """(name, seconds, script module, argv) of each step `run.sh --plan` prints."""
  plan = subprocess.run(["bash", "benchmarks/gpu/run.sh", "--plan"],
                        cwd=REPO,
                        check=True,
                        capture_output=True,
                        text=True).stdout
  steps = []
  for line in plan.splitlines():
    name, seconds, command = line.split("|")
    script, *argv = command.split()
    steps.append((name, int(seconds), os.path.basename(script).removesuffix(".py"), argv))
  return steps


def test_every_planned_step_parses_and_fits_the_budget():
  steps = planned_steps()
  assert [name for name, *_ in steps][:2] == ["mfu_profile", "mfu_remat"]  # priority order
  assert sum(seconds for _, seconds, _, _ in steps) <= STEPS_BUDGET_S
  for name, _, module, argv in steps:
    parsed = importlib.import_module(module).parse_args(argv)
    assert parsed is not None, name


def test_step_throughput_cuda_side_is_asked_for():
  steps = {name: (module, argv) for name, _, module, argv in planned_steps()}
  module, argv = steps["vs_open_clip"]
  args = importlib.import_module(module).parse_args(argv)
  assert (args.device, args.model, args.dtype) == ("cuda", "base", "bf16")


def test_diffusion_torch_modes_are_checked():
  diffusion_step = importlib.import_module("diffusion_step")
  assert diffusion_step.parse_args(["--torch-modes", "eager,best"]).torch_modes == ["eager", "best"]
  with pytest.raises(SystemExit):
    diffusion_step.parse_args(["--torch-modes", "eager,fast"])


def test_train_step_imports_without_tensorflow_datasets():
  # The GPU image has no tensorflow_datasets: None in sys.modules makes its import fail.
  code = ("import sys; sys.modules['tensorflow_datasets'] = None; "
          "import jaxmm_step, train_step_mfu, step_throughput, diffusion_step, tpu_aot")
  env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "benchmarks"))
  result = subprocess.run([sys.executable, "-c", code],
                          cwd=REPO,
                          env=env,
                          capture_output=True,
                          text=True)
  assert result.returncode == 0, result.stderr[-2000:]


def test_collective_counts_of_hlo_text():
  tpu_aot = importlib.import_module("tpu_aot")
  hlo = """
  %all-reduce-start.1 = f32[] all-reduce-start(f32[] %x), replica_groups={}
  %all-reduce-done.1 = f32[] all-reduce-done(f32[] %all-reduce-start.1)
  %ag = bf16[8,4] all-gather(bf16[2,4] %y), dimensions={0}
  %ag.2 = bf16[8,4] all-gather(bf16[2,4] %z), dimensions={0}
  %rs = f32[2] reduce-scatter(f32[8] %w), dimensions={0}
  %add = f32[] add(f32[] %a, f32[] %b)
  """
  assert tpu_aot.collective_counts(hlo) == {
      "all-reduce-start": 1,
      "all-gather": 2,
      "reduce-scatter": 1
  }
