#!/usr/bin/env bash
# Installs this checkout (its HEAD commit) on every worker of a TPU VM or pod slice.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PYTHON_VERSION=3.11
REMOTE_ARCHIVE=jaxmm.tar.gz
USAGE="usage: tpu/setup.sh --tpu NAME --zone ZONE [--project PROJECT] [--dry-run]

Packs HEAD of this repository (git archive; commit what you want to run),
copies it to every worker, unpacks it into ~/$REMOTE_CHECKOUT (keeping an existing
.venv there) and installs it into ~/$REMOTE_CHECKOUT/.venv:
pip install -c constraints.txt 'jax[tpu]' -e '.[gcs]' under Python $PYTHON_VERSION, which uv
provides (the TPU images ship Python 3.10; jax needs 3.11 or newer).
Run it again after every commit you want on the workers; it is quick
once the packages are installed.

  --dry-run  print the commands, one per line, and run nothing"
VALUE_FLAGS="tpu zone project"
BOOL_FLAGS=""
parse_flags "$@"
require_flags tpu zone
no_positional
location_flags

archive_dir=$(mktemp -d)
trap 'rm -rf "$archive_dir"' EXIT
archive=$archive_dir/$REMOTE_ARCHIVE
archive_checkout "$archive"
run gcloud compute tpus tpu-vm scp "$archive" "$opt_tpu:$REMOTE_ARCHIVE" "${LOCATION_FLAGS[@]}" --worker=all

install_steps=(
  "set -e"
  "python3 -m pip install --user --quiet uv"
  "find . -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +"
  "tar -xzf ~/$REMOTE_ARCHIVE"
  "test -x .venv/bin/python || ~/.local/bin/uv venv --seed --python $PYTHON_VERSION .venv"
  ".venv/bin/pip install --quiet -c constraints.txt 'jax[tpu]' -e '.[gcs]'"
  "echo \"\$(hostname): jaxmm installed\""
)
install_command=$(printf '%s; ' "${install_steps[@]}")
on_workers all "${install_command%; }"
