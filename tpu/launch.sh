#!/usr/bin/env bash
# Starts the same command on every worker of a TPU VM or pod slice, detached.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: tpu/launch.sh --tpu NAME --zone ZONE [--project PROJECT] [--run-name RUN] [--dry-run] -- COMMAND...
       tpu/launch.sh --tpu NAME --zone ZONE [--project PROJECT] [--run-name RUN] [--dry-run]
                     --config FILE[:ARG] --workdir DIR [--config.KEY=VALUE ...]

Runs COMMAND on every worker at once, in ~/$REMOTE_CHECKOUT (installed by tpu/setup.sh)
with its .venv active, under nohup, so that it goes on after ssh closes. The
second form runs 'jaxmm train --config FILE[:ARG] --workdir DIR [--config.KEY=VALUE ...]';
every worker runs the same command and jax.distributed joins them. On a
multi-host slice the workdir must be shared by all workers: use gs://BUCKET/DIR.

Output goes to ~/$REMOTE_CHECKOUT/logs/RUN.log on each worker, and logs/latest.log
points to it (tpu/logs.sh follows it).

  --run-name  names the log file (default: UTC date and time and a process id)
  --dry-run   print the commands, one per line, and run nothing"
VALUE_FLAGS="tpu zone project run-name config workdir"
BOOL_FLAGS=""
parse_flags "$@"
require_flags tpu zone
no_positional
workload_command
location_flags

run_name=${opt_run_name:-$(date -u +%Y%m%d-%H%M%S)-$$}
check_run_name "$run_name"
if [[ -n $opt_workdir && $opt_workdir != gs://* ]]; then
  warn "--workdir $opt_workdir is on each worker's own disk; a multi-host slice needs gs://BUCKET/DIR"
fi

log=logs/$run_name.log
installed="test -d .venv || { echo \"\$(hostname): jaxmm is not installed; run tpu/setup.sh\" >&2; exit 1; }"
start="nohup $(quote_words "${COMMAND[@]}") > $log 2>&1 < /dev/null &"
on_workers all "$installed; . .venv/bin/activate && mkdir -p logs && ln -sfn $run_name.log logs/latest.log && { $start }"
