"""benchmarks/bench.py and benchmarks/machine.py without running a benchmark (no torch needed)."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import bench  # noqa: E402  pylint: disable=wrong-import-position
import machine  # noqa: E402  pylint: disable=wrong-import-position

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: second processor, not read
"""
EPYC_AVX2 = """processor\t: 0
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
"""
ARM = """processor\t: 0
Features\t: fp asimd bf16
"""


def test_cpu_info_reads_the_first_processor():
  info = machine.cpu_info(SAPPHIRE_RAPIDS)
  assert info == {
      "model_name": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
      "family": "6",
      "model": "143",
      "flags": ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"],
  }
  assert machine.has_bf16(info)
  assert not machine.has_bf16(machine.cpu_info(EPYC_AVX2))


def test_describe_names_the_missing_extensions():
  assert (machine.describe(machine.cpu_info(EPYC_AVX2)) ==
          "AMD EPYC (family 25, model 1; avx2 fma; no avx512f avx512_bf16 amx_tile amx_bf16)")
  assert (machine.describe(
      machine.cpu_info(ARM)) == "unknown CPU (no avx2 fma avx512f avx512_bf16 amx_tile amx_bf16)")


def test_cpu_slug():
  assert bench.cpu_slug(machine.cpu_info(SAPPHIRE_RAPIDS)) == "intel-xeon-platinum-8481c-f6m143"
  assert bench.cpu_slug(machine.cpu_info(EPYC_AVX2)) == "amd-epyc-f25m1"


def test_quick_commands_run_fp32_with_this_interpreter():
  commands = bench.commands(quick=True, dtypes=["fp32"])
  assert [c[1] for c in commands.values()] == [
      "benchmarks/step_throughput.py", "benchmarks/diffusion_step.py", "benchmarks/sampler_nfe.py",
      "benchmarks/input_pipeline.py"
  ]
  assert os.path.samefile(os.path.join(REPO, commands["siglip"][0]), sys.executable)
  assert commands["siglip"][2:4] == ["--dtype", "fp32"]
  full = bench.commands(quick=False, dtypes=["fp32", "bf16"])
  assert full["unet"][2:] == ["--dtypes", "fp32,bf16"]


def test_summary_rows_from_the_scripts_json():
  siglip = {
      "args": {
          "batch": 64
      },
      "results": [{
          "dtype": "fp32",
          "median": {
              "jaxmm": 0.5,
              "torch": 1.0
          },
          "paired_ratio": 1.9
      }]
  }
  samplers = {
      "results": {
          "noise": {
              "std": 1e-4
          },
          "best": {  # as JSON holds it: NFE keys as strings, (column, MMD²) pairs as lists
              "10": {
                  "jaxmm": ["unipc", 1e-3],
                  "k-diffusion": ["kd dpmpp_2m", 3e-3]
              },
              "50": {
                  "jaxmm": ["unipc", 2e-5],
                  "k-diffusion": ["kd lms", 1e-5]
              },
          }
      }
  }
  [row] = bench.siglip_rows(siglip)
  assert (row.setting, row.ratio) == ("fp32, batch 64", 2.0)
  assert bench.ratio_cell(row) == "2.00× [1.90×]"
  ten, fifty = bench.sampler_rows(samplers)
  assert (ten.jaxmm_label, ten.peer_label) == ("unipc", "kd dpmpp_2m")
  assert bench.ratio_cell(ten) == "3.00×"
  assert bench.ratio_cell(fifty) == "within noise"
  rates = {"jaxmm": 100.0, "open_clip": 25.0, "open_clip, bilinear": 40.0}
  bicubic, bilinear = bench.input_rows(dict(args={"cores": 2, "batch": 32},
                                            images_per_core_s=rates))
  assert (bicubic.setting, bicubic.jaxmm, bicubic.peer) == ("2 cores, batch 32", 10.0, 40.0)
  assert (bicubic.ratio, bilinear.ratio, bilinear.peer_label) == (4.0, 2.5, "open_clip, bilinear")
  assert bench.fmt(bicubic.jaxmm, bicubic.unit) == "10.00 core-ms/image"
