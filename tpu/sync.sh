#!/usr/bin/env bash
# Copies a run's workdir between a bucket and a local folder, either way.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

USAGE="usage: tpu/sync.sh [--project PROJECT] [--dry-run] SOURCE DESTINATION

Copies what SOURCE has and DESTINATION lacks or holds in another version
(gcloud storage rsync -r; nothing at DESTINATION is deleted). One side is a
gs:// path, the other a local folder:

  tpu/sync.sh gs://BUCKET/runs/siglip runs/siglip    # a run's workdir, to look at it here
  tpu/sync.sh runs/siglip gs://BUCKET/runs/siglip    # a local run, to resume it on a TPU

  --dry-run  print the command and run nothing"
VALUE_FLAGS="project"
BOOL_FLAGS=""
parse_flags "$@"
((${#POSITIONAL[@]} == 2)) || die "give SOURCE and DESTINATION (see --help)"
source_dir=${POSITIONAL[0]} destination_dir=${POSITIONAL[1]}
buckets=0
[[ $source_dir != gs://* ]] || buckets=$((buckets + 1))
[[ $destination_dir != gs://* ]] || buckets=$((buckets + 1))
((buckets == 1)) || die "one of SOURCE and DESTINATION must be a gs:// path and the other a local folder"
project=()
[[ -z $opt_project ]] || project=("--project=$opt_project")

run gcloud storage rsync -r "$source_dir" "$destination_dir" "${project[@]}"
