#!/usr/bin/env bash
# Deletes a TPU VM or pod slice together with the queued resource that created it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: tpu/delete.sh --tpu NAME --zone ZONE [--project PROJECT] [--yes] [--dry-run]

Deletes the queued resource NAME and its TPU (gcloud ... queued-resources
delete --force), after asking, unless --yes. Anything on the workers' disks
is lost: sync the workdir first if it is not in a bucket already.

  --yes      do not ask
  --dry-run  print the command and run nothing"
VALUE_FLAGS="tpu zone project"
BOOL_FLAGS="yes"
parse_flags "$@"
require_flags tpu zone
no_positional
location_flags

confirm "Delete TPU $opt_tpu and its queued resource in $opt_zone?"
run gcloud compute tpus queued-resources delete "$opt_tpu" "${LOCATION_FLAGS[@]}" --force --quiet
