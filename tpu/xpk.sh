#!/usr/bin/env bash
# TPU slices on GKE through xpk: a cluster, and jaxmm workloads that restart on failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: tpu/xpk.sh SUBCOMMAND [flags] [--dry-run]

  cluster-create   --cluster NAME --tpu-type TYPE [--num-slices N]
                   (--on-demand | --spot | --flex | --reservation RESERVATION)
  workload-create  --cluster NAME --workload NAME --tpu-type TYPE [--num-slices N]
                   [--max-restarts N] (--docker-image IMAGE | --base-docker-image IMAGE)
                   (-- COMMAND... | --config FILE[:ARG] --workdir gs://BUCKET/DIR [--config.KEY=VALUE ...])
  workload-list    --cluster NAME
  workload-delete  --cluster NAME --workload NAME [--yes]
  cluster-delete   --cluster NAME [--yes]

Every subcommand also takes [--zone ZONE] [--project PROJECT] (default: gcloud's
configured ones) and --dry-run, which prints the commands, one per line, and
runs nothing.

workload-create runs the command (or 'jaxmm train ...') in every TPU host's
container; jax.distributed joins them. With --docker-image, the image's working
directory must be a checkout of this repository with jaxmm installed. With
--base-docker-image (Python 3.11 or newer, e.g. python:3.11), xpk layers this
repository's HEAD into the image and the command first runs
pip install -c constraints.txt 'jax[tpu]' -e '.[gcs]' there.
--max-restarts N restarts the workload up to N times after a failure or a
preemption; jaxmm resumes from the workdir's latest checkpoint, which is why
the workdir must be a gs:// path (a container's disk does not survive it).
Deleting asks first, unless --yes."

xpk_cluster_create() {
  VALUE_FLAGS="cluster tpu-type num-slices reservation zone project"
  BOOL_FLAGS="on-demand spot flex"
  parse_flags "$@"
  require_flags cluster tpu-type
  no_positional
  local capacity=()
  [[ -z $opt_on_demand ]] || capacity+=(--on-demand)
  [[ -z $opt_spot ]] || capacity+=(--spot)
  [[ -z $opt_flex ]] || capacity+=(--flex)
  [[ -z $opt_reservation ]] || capacity+=("--reservation=$opt_reservation")
  ((${#capacity[@]} == 1)) || die "give one of --on-demand, --spot, --flex or --reservation RESERVATION"
  location_flags
  run xpk cluster create "--cluster=$opt_cluster" "--tpu-type=$opt_tpu_type" \
    "--num-slices=${opt_num_slices:-1}" "${capacity[@]}" "${LOCATION_FLAGS[@]}"
}

xpk_workload_create() {
  VALUE_FLAGS="cluster workload tpu-type num-slices max-restarts docker-image base-docker-image
    config workdir zone project"
  BOOL_FLAGS=""
  parse_flags "$@"
  require_flags cluster workload tpu-type
  no_positional
  workload_command
  if [[ -n $opt_workdir && $opt_workdir != gs://* ]]; then
    die "--workdir must be a gs:// path: a container's disk does not survive a restart"
  fi
  location_flags
  local image command
  command=$(quote_words "${COMMAND[@]}")
  if [[ -n $opt_docker_image && -z $opt_base_docker_image ]]; then
    image=("--docker-image=$opt_docker_image")
  elif [[ -n $opt_base_docker_image && -z $opt_docker_image ]]; then
    staging=$(mktemp -d)
    trap 'rm -rf "$staging"' EXIT
    mkdir "$staging/jaxmm"
    archive_checkout "$staging/jaxmm.tar.gz"
    run tar -xzf "$staging/jaxmm.tar.gz" -C "$staging/jaxmm"
    image=("--base-docker-image=$opt_base_docker_image" "--script-dir=$staging/jaxmm")
    command="pip install --quiet -c constraints.txt 'jax[tpu]' -e '.[gcs]' && $command"
  else
    die "give one of --docker-image IMAGE (jaxmm installed) or --base-docker-image IMAGE"
  fi
  run xpk workload create "--cluster=$opt_cluster" "--workload=$opt_workload" \
    "--tpu-type=$opt_tpu_type" "--num-slices=${opt_num_slices:-1}" \
    "--max-restarts=${opt_max_restarts:-0}" "${image[@]}" "${LOCATION_FLAGS[@]}" "--command=$command"
}

xpk_workload_list() {
  VALUE_FLAGS="cluster zone project"
  BOOL_FLAGS=""
  parse_flags "$@"
  require_flags cluster
  no_positional
  location_flags
  run xpk workload list "--cluster=$opt_cluster" "${LOCATION_FLAGS[@]}"
}

xpk_workload_delete() {
  VALUE_FLAGS="cluster workload zone project"
  BOOL_FLAGS="yes"
  parse_flags "$@"
  require_flags cluster workload
  no_positional
  location_flags
  confirm "Delete workload $opt_workload from cluster $opt_cluster?"
  run xpk workload delete "--cluster=$opt_cluster" "--workload=$opt_workload" "${LOCATION_FLAGS[@]}" --force
}

xpk_cluster_delete() {
  VALUE_FLAGS="cluster zone project"
  BOOL_FLAGS="yes"
  parse_flags "$@"
  require_flags cluster
  no_positional
  location_flags
  confirm "Delete cluster $opt_cluster and every workload on it?"
  run xpk cluster delete "--cluster=$opt_cluster" "${LOCATION_FLAGS[@]}" --force
}

subcommand=${1:-}
case $subcommand in
  cluster-create | workload-create | workload-list | workload-delete | cluster-delete)
    shift
    SCRIPT_NAME="$SCRIPT_NAME $subcommand"
    "xpk_${subcommand//-/_}" "$@"
    ;;
  -h | --help) printf '%s\n' "$USAGE" ;;
  "") die "missing the subcommand: cluster-create, workload-create, workload-list, workload-delete or cluster-delete (see --help)" ;;
  *) die "unknown subcommand '$subcommand' (see --help)" ;;
esac
