# shellcheck shell=bash
# Sourced by every script in tpu/: flag parsing, one-line errors, the
# confirmation prompt, and `run`, which runs a command or, under --dry-run,
# prints it shell-quoted on one line.
#
# A script sets USAGE, VALUE_FLAGS and BOOL_FLAGS (space-separated flag names
# without the dashes), then calls `parse_flags "$@"`. Each flag --some-name
# becomes the variable opt_some_name ("" when absent, "true" for a boolean
# given). --dry-run and --help are always accepted. Words that are not flags
# go to POSITIONAL, the words after "--" to COMMAND, and, when the script
# declares a `config` flag, --config.KEY=VALUE (or --config.KEY VALUE) to
# OVERRIDES as --config.KEY=VALUE.

if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 404)); then
  echo "${0##*/}: error: needs bash 4.4 or newer (this is $BASH_VERSION; on macOS: brew install bash)" >&2
  exit 2
fi

# The checkout on every TPU worker, relative to the login user's home.
REMOTE_CHECKOUT=jaxmm
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT_NAME=${0##*/}

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 2
}

warn() {
  printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2
}

_declares() {  # _declares "LIST" NAME: whether NAME is one of the words of LIST
  local word
  for word in $1; do
    [[ $word != "$2" ]] || return 0
  done
  return 1
}

_set_flag() {
  printf -v "opt_${1//-/_}" '%s' "$2"
}

parse_flags() {
  local name word
  for name in $VALUE_FLAGS $BOOL_FLAGS dry-run help; do
    _set_flag "$name" ""
  done
  POSITIONAL=() COMMAND=() OVERRIDES=()
  while (($#)); do
    word=$1
    shift
    case $word in
      --)
        COMMAND=("$@")
        break
        ;;
      -h | --help)
        printf '%s\n' "$USAGE"
        exit 0
        ;;
      --config.*)
        _declares "$VALUE_FLAGS" config || die "unknown flag ${word%%=*} (see --help)"
        if [[ $word != *=* ]]; then
          (($#)) && [[ $1 != --* ]] || die "$word needs a value"
          word="$word=$1"
          shift
        fi
        OVERRIDES+=("$word")
        ;;
      --*=*)
        name=${word%%=*}
        name=${name#--}
        _declares "$VALUE_FLAGS" "$name" || die "unknown flag --$name (see --help)"
        _set_flag "$name" "${word#*=}"
        ;;
      --*)
        name=${word#--}
        if _declares "$BOOL_FLAGS dry-run" "$name"; then
          _set_flag "$name" true
        elif _declares "$VALUE_FLAGS" "$name"; then
          (($#)) && [[ $1 != --* ]] || die "--$name needs a value"
          _set_flag "$name" "$1"
          shift
        else
          die "unknown flag --$name (see --help)"
        fi
        ;;
      *) POSITIONAL+=("$word") ;;
    esac
  done
}

require_flags() {  # require_flags NAME...: fail on the first flag that was not given
  local name var
  for name in "$@"; do
    var=opt_${name//-/_}
    [[ -n ${!var} ]] || die "missing required flag --$name (see --help)"
  done
}

no_positional() {
  ((${#POSITIONAL[@]} == 0)) || die "unexpected argument '${POSITIONAL[0]}' (see --help)"
}

# quote WORD: WORD as one shell word; the same text Python's shlex.quote gives.
quote() {
  local escaped="'\"'\"'"
  if [[ -n $1 && $1 != *[!A-Za-z0-9_@%+=:,./-]* ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/"$escaped"}"
  fi
}

quote_words() {  # quote_words WORD...: the words quoted and joined by spaces, without a newline
  local sep="" word
  for word in "$@"; do
    printf '%s' "$sep"
    quote "$word"
    sep=" "
  done
}

run() {  # run COMMAND...: under --dry-run print it; otherwise echo it to stderr and run it
  if [[ -n $opt_dry_run ]]; then
    quote_words "$@"
    printf '\n'
  else
    printf '+ %s\n' "$(quote_words "$@")" >&2
    "$@"
  fi
}

confirm() {  # confirm QUESTION: go on only after "y" at the terminal, or with --yes or --dry-run
  local answer
  [[ -n $opt_yes || -n $opt_dry_run ]] && return 0
  [[ -t 0 ]] || die "not asking '$1' without a terminal; pass --yes to go ahead"
  read -r -p "$1 [y/N] " answer
  [[ $answer == [yY]* ]] || { echo "$SCRIPT_NAME: nothing done" >&2; exit 1; }
}

# --zone=ZONE and, when given, --project=PROJECT, as gcloud and xpk take them.
location_flags() {
  LOCATION_FLAGS=()
  [[ -z $opt_zone ]] || LOCATION_FLAGS+=("--zone=$opt_zone")
  [[ -z $opt_project ]] || LOCATION_FLAGS+=("--project=$opt_project")
}

on_workers() {  # on_workers WORKER SHELL_COMMAND: run it in ~/REMOTE_CHECKOUT on one worker or "all"
  run gcloud compute tpus tpu-vm ssh "$opt_tpu" "${LOCATION_FLAGS[@]}" "--worker=$1" \
    "--command=mkdir -p ~/$REMOTE_CHECKOUT && cd ~/$REMOTE_CHECKOUT && $2"
}

check_run_name() {  # a run's name becomes a log file name, unquoted in remote commands
  [[ $1 =~ ^[A-Za-z0-9._-]+$ ]] || die "--run-name may hold only letters, digits, '.', '_' and '-', not '$1'"
}

# Sets COMMAND to the workload: the words after "--", or
# `jaxmm train --config FILE --workdir DIR --config.KEY=VALUE...` built from
# --config, --workdir and the overrides.
workload_command() {
  if [[ -n $opt_config ]]; then
    ((${#COMMAND[@]} == 0)) || die "give either --config FILE --workdir DIR or -- COMMAND..., not both"
    [[ -n $opt_workdir ]] || die "missing required flag --workdir (with --config)"
    COMMAND=(jaxmm train --config "$opt_config" --workdir "$opt_workdir" "${OVERRIDES[@]}")
  elif [[ -n $opt_workdir ]] || ((${#OVERRIDES[@]})); then
    die "--workdir and --config.KEY=VALUE need --config FILE[:ARG]"
  fi
  ((${#COMMAND[@]})) || die "missing the command: give -- COMMAND... or --config FILE[:ARG] --workdir DIR"
}

# archive_checkout OUT: the committed checkout (HEAD) as a .tar.gz; uncommitted
# changes stay behind, so what runs is always a commit.
archive_checkout() {
  if [[ -n $(git --no-optional-locks -C "$REPO_ROOT" status --porcelain) ]]; then
    warn "uncommitted changes and untracked files (git status) are not copied;" \
      "packing HEAD ($(git -C "$REPO_ROOT" rev-parse --short HEAD))"
  fi
  run git -C "$REPO_ROOT" archive --format=tar.gz "--output=$1" HEAD
}
