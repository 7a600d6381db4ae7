#!/usr/bin/env bash
# The accelerator measurements of benchmarks/README.md ("The next GPU run") in one script, for a
# GPU machine with no network whose image has JAX with CUDA, flax, optax and PyTorch:
#
#   bash benchmarks/gpu/wheels.sh                 # here, once: the missing wheels into .whl/
#   bash benchmarks/gpu/run.sh                    # there, with .whl carried; results in $OUT
#   bash benchmarks/gpu/run.sh --dry-run          # here: every step, tiny, on the CPU
#   bash benchmarks/gpu/run.sh --plan             # print the steps' commands and stop
#
# It installs the wheels and jaxmm (no dependencies: the image's are used), prints the versions,
# then runs the steps in priority order, each under its own `timeout` (seconds beside it, about
# 9 minutes in all) so that a failing or slow step does not stop the rest; each step's output goes
# to $OUT/<step>.log. JAX's compilation cache lives beside $OUT, so that a rerun on the same
# machine skips compilation.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

mode=run
case "${1:-}" in
  "") ;;
  --dry-run) mode=dry ;;
  --plan) mode=plan ;;
  *) echo "usage: bash benchmarks/gpu/run.sh [--dry-run | --plan]" >&2; exit 2 ;;
esac
python=${PYTHON:-python3}
out=${OUT:-/tmp/jaxmm-gpu-run}
mkdir -p "$out"
export JAX_COMPILATION_CACHE_DIR="$out/../jax-cache" PYTHONUNBUFFERED=1

mfu=(benchmarks/train_step_mfu.py --config configs/siglip_shapes.py:base
     --config.model.attention=cudnn --steps 10)
profile_steps=3
# Each step: name, seconds, command, in priority order: ViT-B/16 MFU and its profile, batch 1,024
# with rematerialisation, jaxmm against open_clip, the diffusion step against PyTorch at its best.
steps=()
add() {
  local name=$1 seconds=$2
  shift 2
  steps+=("$name|$seconds|$*")
}
if [[ $mode == dry ]]; then
  mfu=(benchmarks/train_step_mfu.py --config configs/siglip_shapes.py:small --steps 1 --warmup 0)
  profile_steps=1
  add mfu_profile 300 "${mfu[@]}" --batch-sizes 8,16 --config.model.remat=False \
    --profile "$out/trace" --profile-steps 1
  add mfu_remat 300 "${mfu[@]}" --batch-sizes 16 --config.model.remat=True
  add vs_open_clip 300 benchmarks/step_throughput.py --device cpu --dtype fp32 --batch 8 \
    --rounds 1 --steps 1 --warmup 1
  add diffusion 300 benchmarks/diffusion_step.py --dtypes fp32 --batch-size 8 --channels 16 \
    --rounds 1 --steps 1 --warmup 1 --torch-modes eager,best
else
  add mfu_profile 160 "${mfu[@]}" --batch-sizes 256,512 --config.model.remat=False \
    --profile "$out/trace"
  add mfu_remat 90 "${mfu[@]}" --batch-sizes 1024 --config.model.remat=True
  add vs_open_clip 110 benchmarks/step_throughput.py --device cuda --model base --dtype bf16 \
    --batch 256 --rounds 3 --steps 10
  add diffusion 120 benchmarks/diffusion_step.py --dtypes bf16 --batch-size 256 --steps 20 \
    --rounds 3 --torch-modes eager,compiled,best
  add diffusion_wide 60 benchmarks/diffusion_step.py --dtypes bf16 --batch-size 1024 \
    --channels 128 --steps 10 --rounds 3 --torch-modes best
fi

if [[ $mode == plan ]]; then
  for step in "${steps[@]}"; do echo "$step"; done
  exit 0
fi

if [[ $mode == run ]]; then
  # Only the wheels built for this Python are picked; jaxmm from this tree, editable.
  if ! $python -m pip install -q --no-index --no-deps --find-links .whl \
    ml_collections tensorboardX grain simplejpeg open_clip_torch ftfy wcwidth diffusers; then
    echo "run.sh: installing .whl failed: was it carried (benchmarks/gpu/wheels.sh)?" >&2
    exit 1
  fi
  $python -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$out/versions.txt"
fi
$python -c "import sys, jax, jaxlib, torch; print(sys.version.split()[0], 'jax', jax.__version__,
'jaxlib', jaxlib.__version__, 'torch', torch.__version__, jax.devices()[0].device_kind)" \
  >>"$out/versions.txt"
cat "$out/versions.txt"

export PYTHONPATH="benchmarks${PYTHONPATH:+:$PYTHONPATH}"
status=0
for step in "${steps[@]}"; do
  IFS='|' read -r name seconds command <<<"$step"
  echo "== $name (at most $seconds s): python $command"
  # shellcheck disable=SC2086  # the command is split into its words on purpose
  timeout --kill-after=10 "$seconds" $python $command >"$out/$name.log" 2>&1
  rc=$?
  tail -n 25 "$out/$name.log"
  echo "== $name: exit $rc"
  ((rc == 0)) || status=1
done
if [[ -d $out/trace ]]; then
  $python benchmarks/profile_summary.py "$out/trace" --steps "$profile_steps" --top 40 \
    >"$out/profile_top.txt" 2>&1
  # At most 8 files of 16 MiB come back from the machine: the trace as one, if it fits.
  tar -czf "$out/trace.tgz" -C "$out" trace && rm -rf "$out/trace"
  (($(stat -c %s "$out/trace.tgz") < 16 * 1024 * 1024)) || rm "$out/trace.tgz"
fi
exit $status
