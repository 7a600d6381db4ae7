#!/usr/bin/env bash
# Follows the log of a launched run on every worker, or on one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: tpu/logs.sh --tpu NAME --zone ZONE [--project PROJECT] [--worker all|N] [--run-name RUN] [--dry-run]

Follows (tail -F) ~/$REMOTE_CHECKOUT/logs/RUN.log, by default the latest run's, on
every worker, each line prefixed with the worker's host name; Ctrl-C stops.

  --worker    all (the default) or one worker's index, 0 being the first
  --run-name  the run to follow (see tpu/launch.sh), default the latest
  --dry-run   print the command and run nothing"
VALUE_FLAGS="tpu zone project worker run-name"
BOOL_FLAGS=""
parse_flags "$@"
require_flags tpu zone
no_positional
location_flags

worker=${opt_worker:-all}
[[ $worker =~ ^(all|[0-9]+)$ ]] || die "--worker must be 'all' or a worker index, not '$worker'"
run_name=${opt_run_name:-latest}
check_run_name "$run_name"

on_workers "$worker" "tail -n 100 -F logs/$run_name.log | sed -u \"s/^/[\$(hostname)] /\""
