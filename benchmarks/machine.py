"""The CPU a benchmark ran on: its model and the vector extensions that set its matmul speed.

The same model name covers different chips (an "AMD EPYC" was Zen 3 with AVX2
on one machine and Zen 5 with AVX-512 BF16 on another), so the family, model
number and flags go with every number a benchmark prints or writes.
"""
# avx2/fma: the float32 baseline; avx512f: wide float32; avx512_bf16 and AMX: bf16 in hardware.
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_info(cpuinfo: str | None = None) -> dict:
  """The first processor of /proc/cpuinfo (or of the text `cpuinfo`): 'model_name', 'family'
  and 'model' (None where absent), and 'flags' (those of FLAGS it has)."""
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo", encoding="utf-8") as f:
        cpuinfo = f.read()
    except OSError:
      cpuinfo = ""
  fields = {}
  for line in cpuinfo.split("\n\n")[0].splitlines():
    key, sep, value = line.partition(":")
    if sep:
      fields[key.strip()] = value.strip()
  flags = (fields.get("flags") or fields.get("Features", "")).split()  # x86 | Arm
  return {
      "model_name": fields.get("model name", "unknown CPU"),
      "family": fields.get("cpu family"),
      "model": fields.get("model"),
      "flags": [flag for flag in FLAGS if flag in flags],
  }


def has_bf16(info: dict) -> bool:
  """Whether the CPU computes bf16 in hardware; elsewhere bf16 is emulated and slower than fp32."""
  return bool({"avx512_bf16", "amx_bf16"} & set(info["flags"]))


def describe(info: dict | None = None) -> str:
  """One line, e.g. 'AMD EPYC (family 25, model 1; avx2 fma; no avx512f avx512_bf16 amx_tile
  amx_bf16)'."""
  info = info or cpu_info()
  missing = [flag for flag in FLAGS if flag not in info["flags"]]
  parts = [
      f"family {info['family']}, model {info['model']}" if info["family"] else None,
      " ".join(info["flags"]) or None,
      "no " + " ".join(missing) if missing else None,
  ]
  return f"{info['model_name']} ({'; '.join(p for p in parts if p)})"
