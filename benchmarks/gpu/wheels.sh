#!/usr/bin/env bash
# Downloads into .whl/ the wheels that benchmarks/gpu/run.sh installs on a GPU machine with no
# network: the packages that the benchmarks import and that its image (JAX with CUDA, flax, optax,
# orbax, chex, einops, PyTorch, timm, huggingface_hub, safetensors, scipy, pillow, pyarrow, tqdm,
# absl-py, protobuf, ...) lacks, at the versions of constraints.txt and
# benchmarks/requirements-peers.txt. Pure-Python wheels once; the two binary ones for each of
# CPython 3.10 to 3.12 (the image's was 3.12; grain 0.2.18 has no 3.10 build). No TensorFlow and no
# tensorflow_datasets: the benchmarks' train steps import neither.
#
#   bash benchmarks/gpu/wheels.sh        # then, with .whl carried: bash benchmarks/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
limit_mib=60
dest=.whl

# name -> version pinned in constraints.txt or requirements-peers.txt.
pin() {
  local version
  version=$(grep -ih "^$1==" constraints.txt benchmarks/requirements-peers.txt | head -1 |
    cut -d= -f3)
  [[ -n "$version" ]] || { echo "wheels.sh: $1 is not pinned" >&2; exit 1; }
  echo "$1==$version"
}

# jaxmm's imports: configs (ml_collections), metrics (tensorboardX), the input pipeline's modules
# that jaxmm.data loads (grain, simplejpeg). The peers: open_clip (ftfy, wcwidth) and diffusers.
pure=(ml_collections tensorboardX open_clip_torch ftfy wcwidth diffusers)
# python version -> binary packages built for it.
declare -A binary=([3.10]="simplejpeg" [3.11]="grain simplejpeg" [3.12]="grain simplejpeg")

rm -rf "$dest"
mkdir -p "$dest"
specs=()
for name in "${pure[@]}"; do specs+=("$(pin "$name")"); done
python3 -m pip download -q --no-deps --only-binary=:all: -d "$dest" "${specs[@]}"
for py in 3.10 3.11 3.12; do
  specs=()
  for name in ${binary[$py]}; do specs+=("$(pin "$name")"); done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest" "${specs[@]}"
done

ls -l "$dest"
total=$(du -cb "$dest"/*.whl | tail -1 | cut -f1)
echo "total: $((total / 1024)) KiB in $(find "$dest" -name '*.whl' | wc -l) wheels"
if ((total > limit_mib * 1024 * 1024)); then
  echo "wheels.sh: more than $limit_mib MiB: the device machine takes 64 MiB with the tree" >&2
  exit 1
fi
