#!/usr/bin/env bash
# Creates a TPU VM or pod slice through a queued resource and waits until it is ACTIVE.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: tpu/create.sh --tpu NAME --zone ZONE --accelerator-type TYPE [--project PROJECT]
                      [--runtime-version VERSION] [--spot | --reserved] [--poll-seconds N] [--dry-run]

Requests TYPE (v4-8, v5litepod-32, v5p-64, v6e-16, ...) as a queued resource
named NAME whose TPU is also named NAME, then polls until it is ACTIVE
(a queued request may wait for capacity).

  --runtime-version  the TPU software version; by default the one for JAX on
                     that generation: tpu-ubuntu2204-base (v2, v3, v4),
                     v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5 (v5p),
                     v2-alpha-tpuv6e (v6e)
  --spot             preemptible capacity (jaxmm saves on SIGTERM; launch the
                     same command on a new slice to resume)
  --reserved         the project's reserved capacity
  --poll-seconds     seconds between state checks (default 30)
  --dry-run          print the commands, one per line, and run nothing"
VALUE_FLAGS="tpu zone project accelerator-type runtime-version poll-seconds"
BOOL_FLAGS="spot reserved"
parse_flags "$@"
require_flags tpu zone accelerator-type
no_positional
[[ -z $opt_spot || -z $opt_reserved ]] || die "--spot and --reserved exclude each other"
poll_seconds=${opt_poll_seconds:-30}
[[ $poll_seconds =~ ^[1-9][0-9]*$ ]] || die "--poll-seconds must be a positive integer, not '$poll_seconds'"
location_flags

default_runtime_version() {
  case $1 in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default --runtime-version for --accelerator-type $1; give one" ;;
  esac
}

runtime_version=${opt_runtime_version:-$(default_runtime_version "$opt_accelerator_type")}
capacity=()
[[ -z $opt_spot ]] || capacity=(--spot)
[[ -z $opt_reserved ]] || capacity=(--reserved)

run gcloud compute tpus queued-resources create "$opt_tpu" "--node-id=$opt_tpu" \
  "--accelerator-type=$opt_accelerator_type" "--runtime-version=$runtime_version" \
  "${LOCATION_FLAGS[@]}" "${capacity[@]}"

describe=(gcloud compute tpus queued-resources describe "$opt_tpu" "${LOCATION_FLAGS[@]}")
state_of_request=("${describe[@]}" "--format=value(state.state)")
if [[ -n $opt_dry_run ]]; then
  run "${state_of_request[@]}"
  exit 0
fi
last_state=""
while true; do
  state=$("${state_of_request[@]}")
  [[ $state == "$last_state" ]] || echo "$SCRIPT_NAME: $opt_tpu is $state" >&2
  case $state in
    ACTIVE) exit 0 ;;
    FAILED | SUSPENDING | SUSPENDED | DELETING)
      die "queued resource $opt_tpu is $state; see: $(quote_words "${describe[@]}")" ;;
  esac
  last_state=$state
  sleep "$poll_seconds"
done
