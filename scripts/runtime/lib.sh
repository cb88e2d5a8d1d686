# shellcheck shell=bash
# Variables set here are read by the scripts that source this file.
# shellcheck disable=SC2034
# Shared helpers for scripts/runtime/*.sh. Sourced, never run.
#
# Conventions every script follows: `--help` prints usage and exits 0; a bad flag or value prints
# one line on stderr and exits 2; a missing service manager (launchctl / systemctl) is one line
# and exit 2 unless --dry-run, which never touches the service manager.

RUNTIME_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT_REPO=$(cd "$RUNTIME_DIR/../.." && pwd)
RENDER_PY="$RUNTIME_DIR/render.py"
PROG=$(basename "$0")
export BAA_RUNTIME_PROG="$PROG"
ALL_SERVICES=(codexd conductor status-api)
# The optional fourth service (strategy external): one long-lived codex app-server that codexd
# attaches to. Rendered only with --external-app-server; never part of "all services" unless
# INCLUDE_INSTALLED_APP_SERVER=1 and it is installed (status, restart, reload, check).
APP_SERVER=codex-app-server
START_ORDER=("$APP_SERVER" "${ALL_SERVICES[@]}")
INCLUDE_INSTALLED_APP_SERVER=0

# Settings common to the scripts; parse_common_flag fills them.
MANAGER=""
SCOPE=agent
REPO_DIR=""
HOME_DIR=""
INSTALL_DIR=""
DRY_RUN=0
SELECTED=()
ALL_CHOSEN=0
RENDER_ARGS=()
RUN_USER=""
NSHIFT=0

die() {
  echo "$PROG: $*" >&2
  exit 2
}

usage_error() {
  echo "$PROG: $* (try $PROG --help)" >&2
  exit 2
}

need_value() {
  # $1 = flag, $2 = its value (maybe missing)
  if [ $# -lt 2 ] || [ -z "$2" ]; then
    usage_error "$1 needs a value"
  fi
}

add_service() {
  case "$1" in
    codexd | conductor | status-api | "$APP_SERVER") SELECTED+=("$1") ;;
    *) usage_error "unknown service '$1' (codexd, conductor, status-api or $APP_SERVER)" ;;
  esac
}

# Flags shared by the service-manager scripts. Sets NSHIFT to the words consumed, or returns 1
# when $1 is not one of them.
parse_common_flag() {
  NSHIFT=2
  case "$1" in
    --manager) need_value "$@"; MANAGER=$2 ;;
    --scope) need_value "$@"; SCOPE=$2 ;;
    --service) need_value "$@"; add_service "$2" ;;
    --all-services) SELECTED=("${ALL_SERVICES[@]}"); ALL_CHOSEN=1; NSHIFT=1 ;;
    --repo-dir) need_value "$@"; REPO_DIR=$2; RENDER_ARGS+=("$1" "$2") ;;
    --home-dir) need_value "$@"; HOME_DIR=$2; RENDER_ARGS+=("$1" "$2") ;;
    --install-dir) need_value "$@"; INSTALL_DIR=$2 ;;
    --dry-run) DRY_RUN=1; NSHIFT=1 ;;
    *) return 1 ;;
  esac
}

# Configuration flags handed to render.py unchanged (it validates their values).
parse_render_flag() {
  NSHIFT=2
  case "$1" in
    --node | --node-id | --conductor-host | --state-dir | --conductor-api | --status-api \
      | --conductor-role | --allowed-hosts | --status-allowed-hosts | --public-api-base | --shared-token-file | --notify-urls-file \
      | --codexd-token-file | --codexd-allowed-origins | --conductor-allowed-origins | --status-allowed-origins \
      | --event-stream-path | --server-command | --server-arg | --server-cwd | --codex-home \
      | --shutdown-grace | --exit-timeout | --throttle-interval | --user | --env-file | --python | --setenv \
      | --logs-dir | --codexd-api-base | --server-strategy | --server-endpoint)
      need_value "$@"; RENDER_ARGS+=("$1" "$2")
      if [ "$1" = --user ]; then RUN_USER=$2; fi ;;
    --external-app-server) RENDER_ARGS+=("$1"); NSHIFT=1 ;;
    *) return 1 ;;
  esac
}

# Validates the common settings and fills in defaults.
finish_common() {
  if [ -z "$MANAGER" ]; then
    if [ "$(uname -s)" = Darwin ]; then MANAGER=launchd; else MANAGER=systemd; fi
  fi
  case "$MANAGER" in launchd | systemd) ;; *) usage_error "--manager must be launchd or systemd, got '$MANAGER'" ;; esac
  case "$SCOPE" in agent | daemon) ;; *) usage_error "--scope must be agent or daemon, got '$SCOPE'" ;; esac
  REPO_DIR=${REPO_DIR:-$SCRIPT_REPO}
  HOME_DIR=${HOME_DIR:-${HOME:-}}
  [ -n "$HOME_DIR" ] || usage_error "HOME is not set; pass --home-dir"
  if [ -z "$INSTALL_DIR" ]; then
    case "$MANAGER/$SCOPE" in
      launchd/agent) INSTALL_DIR="$HOME_DIR/Library/LaunchAgents" ;;
      launchd/daemon) INSTALL_DIR=/Library/LaunchDaemons ;;
      systemd/agent) INSTALL_DIR="$HOME_DIR/.config/systemd/user" ;;
      systemd/daemon) INSTALL_DIR=/etc/systemd/system ;;
    esac
  fi
  # Always in start order: the app-server (when selected), codexd, conductor, status-api.
  local chosen=() s t
  if [ ${#SELECTED[@]} -eq 0 ]; then SELECTED=("${ALL_SERVICES[@]}"); ALL_CHOSEN=1; fi
  if [ "$INCLUDE_INSTALLED_APP_SERVER" = 1 ] && [ "$ALL_CHOSEN" = 1 ] \
    && [ -f "$INSTALL_DIR/$(installed_name "$APP_SERVER")" ]; then
    SELECTED+=("$APP_SERVER")
  fi
  for s in "${START_ORDER[@]}"; do
    for t in "${SELECTED[@]}"; do
      if [ "$s" = "$t" ]; then chosen+=("$s"); break; fi
    done
  done
  SELECTED=("${chosen[@]}")
}

runtime_python() {
  # render.py is stdlib-only: any Python 3.11+ works before scripts/setup.sh ran.
  if [ -x "$SCRIPT_REPO/.venv/bin/python" ]; then
    echo "$SCRIPT_REPO/.venv/bin/python"
  elif command -v python3 >/dev/null 2>&1; then
    command -v python3
  else
    die "python3 not found; install Python 3.11+ (or run scripts/setup.sh)"
  fi
}

# 0 when service $1 is among the selected ones.
selected() {
  local s
  for s in "${SELECTED[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}

label_of() { echo "so.makefile.baa-$1"; }
unit_of() { echo "baa-$1.service"; }

installed_name() {
  if [ "$MANAGER" = launchd ]; then echo "$(label_of "$1").plist"; else unit_of "$1"; fi
}

launchd_domain() {
  if [ "$SCOPE" = daemon ]; then echo system; else echo "gui/$(id -u)"; fi
}

# systemctl for the chosen scope, as an array in SYSTEMCTL.
set_systemctl() {
  if [ "$SCOPE" = daemon ]; then SYSTEMCTL=(systemctl); else SYSTEMCTL=(systemctl --user); fi
}

# Fails with one line (exit 2) when the service manager's tool is missing, unless --dry-run.
need_manager_tool() {
  [ "$DRY_RUN" = 1 ] && return 0
  local tool=launchctl
  [ "$MANAGER" = systemd ] && tool=systemctl
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "$MANAGER" = launchd ]; then
      die "launchctl not found: this host has no launchd (use --manager systemd on Linux, or --dry-run)"
    fi
    die "systemctl not found: this host has no systemd (use --manager launchd on macOS, or --dry-run)"
  fi
}

need_root_for_daemon() {
  if [ "$DRY_RUN" = 0 ] && [ "$SCOPE" = daemon ] && [ "$(id -u)" != 0 ]; then
    die "--scope daemon changes system services; run it with sudo"
  fi
}

# Runs a command, or prints it under --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# 0 when GET $1 answers 2xx within 2 s. Only used for codexd's /healthz, the one route codexd
# serves without its bearer token, so the token never passes through the shell or curl's argv
# (where `ps` would show it); the probes that need it run in render.py. No POST goes through here:
# a POST to any daemon would need -H 'content-type: application/json' (415 otherwise).
http_ok() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null
  else
    "$(runtime_python)" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if 200 <= r.status < 300 else 1)
EOF
  fi
}

# Waits (bounded) for codexd's /healthz after the service manager (re)started it. launchd and
# systemd give no readiness signal we can block on, so this is a deliberate poll: one probe per
# second until the deadline, then one line naming the logs to read and status 1.
wait_codexd_healthz() {
  local base=$1 timeout=$2 deadline
  if [ "$DRY_RUN" = 1 ]; then
    echo "would wait up to ${timeout}s for $base/healthz"
    return 0
  fi
  deadline=$((SECONDS + timeout))
  until http_ok "$base/healthz"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$PROG: codexd did not answer $base/healthz within ${timeout}s; read the codexd logs (docs/runtime/README.md, 'Common failures')" >&2
      return 1
    fi
    sleep 1
  done
  echo "codexd healthy: $base/healthz"
}

is_whole_number() {
  case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac
}

# launchctl bootstrap, retried a few times: right after a bootout launchd may still be tearing the
# old job down and answers "Bootstrap failed: 5: Input/output error". Bounded: 5 tries, 1 s apart.
launchd_bootstrap() {
  local domain=$1 plist=$2 try
  if [ "$DRY_RUN" = 1 ]; then
    run launchctl bootstrap "$domain" "$plist"
    return 0
  fi
  for try in 1 2 3 4 5; do
    if launchctl bootstrap "$domain" "$plist"; then return 0; fi
    [ "$try" = 5 ] || sleep 1
  done
  echo "$PROG: launchctl bootstrap $domain $plist failed 5 times" >&2
  return 1
}

# launchctl bootout that tolerates "not loaded" (first install, or already stopped).
launchd_bootout() {
  if [ "$DRY_RUN" = 1 ]; then
    run launchctl bootout "$1"
  else
    launchctl bootout "$1" 2>/dev/null || true
  fi
}
