#!/usr/bin/env bash
# Runtime probes of a running node: conductor, codexd, status-api, and the service log files.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF_USAGE'
usage: check-node.sh [--node NAME] [options]

Probe the services of this node over loopback HTTP and print one 'ok'/'FAIL' line each:
  conductor  GET /healthz (200), GET /readyz (200), GET /rolez == leader,
             GET /metrics (200, conductor_* metrics), GET /v1/codex/sessions?limit=1 (codexd
             answers through the conductor; with the shared token when one is found)
  codexd     GET /healthz (200), GET /v1/codexd/status with the app-server child 'running'
             (and identity.nodeId == the expected node id, when known); with codexd's bearer
             token when the node has one (it is never printed), GET /metrics (codexd_*)
  app-server with strategy external only: codexd reports strategy 'external' on the expected
             endpoint, and the endpoint answers a WebSocket upgrade (a unix socket must exist)
  status-api GET /healthz (200), GET /v1/status (JSON envelope ok=true), GET /metrics
             (status_api_*)
  logs       <logs>/launchd/so.makefile.baa-<service>.{out,err}.log
             (<logs>/systemd/baa-<service>.{out,err}.log with --manager systemd), and those of
             codex-app-server when that service is installed
Run it on the node itself: codexd only listens on loopback.

The expected strategy and endpoint come from --server-strategy/--server-endpoint, else from the
installed codexd service file, else from what codexd reports.

codexd's token comes from --codexd-token-file, else $BAA_CODEXD_TOKEN_FILE, else
$BAA_CODEXD_TOKEN, else the BAA_CODEXD_TOKEN_FILE of the installed codexd service file (so run
it as the user the services run as). The file must have mode 600 or 400.

The conductor's shared token (sent to the conductor only; when codexd has a token, every
/v1/codex/* call needs it) comes from --shared-token-file, else $BAA_SHARED_TOKEN_FILE, else
$BAA_SHARED_TOKEN, else the BAA_SHARED_TOKEN_FILE of the installed conductor service file.

  --node NAME                 the node (e.g. mini): expects node id NAME-main
  --node-id ID                expect this node id instead
  --manager launchd|systemd   which log folder to check (default: launchd on macOS, else systemd)
  --scope agent|daemon        where the installed codexd file is (default agent)
  --install-dir DIR           folder of the installed files (default: per manager and scope)
  --codexd-token-file FILE    codexd's bearer token (default: see above)
  --shared-token-file FILE    the conductor's shared token (default: see above)
  --server-strategy S         expect codexd to run strategy spawn or external
  --server-endpoint URL       expect codexd to attach to this endpoint (implies external)
  --codexd-api-base URL       default $BAA_CODEXD_LOCAL_API_BASE or http://127.0.0.1:4319
  --conductor-api URL         default $BAA_CONDUCTOR_LOCAL_API or http://127.0.0.1:4317
  --status-api URL            default $BAA_STATUS_API_LOCAL_API or http://127.0.0.1:4318
  --logs-dir DIR              logs root (default $BAA_CODEXD_LOGS_DIR or <repo>/var/logs)
  --repo-dir DIR              checkout whose var/logs is the default logs root
  --expect-role ROLE          leader (default), standby or degraded
  --timeout S                 per-request timeout (default 5)
  --skip-logs                 do not check the log files
  --dry-run                   print the probes instead of running them
  -h, --help                  this help

exit status: 0 every probe ok, 1 some failed, 2 bad usage.
EOF_USAGE
}

NODE=""
NODE_ID=""
CODEXD=${BAA_CODEXD_LOCAL_API_BASE:-http://127.0.0.1:4319}
CONDUCTOR=${BAA_CONDUCTOR_LOCAL_API:-http://127.0.0.1:4317}
STATUS=${BAA_STATUS_API_LOCAL_API:-http://127.0.0.1:4318}
LOGS=${BAA_CODEXD_LOGS_DIR:-}
ROLE=leader
TIMEOUT=5
SKIP_LOGS=0
TOKEN_FILE=""
SHARED_TOKEN_FILE=""
STRATEGY=""
ENDPOINT=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --node) need_value "$@"; NODE=$2 ;;
    --node-id) need_value "$@"; NODE_ID=$2 ;;
    --manager) need_value "$@"; MANAGER=$2 ;;
    --scope) need_value "$@"; SCOPE=$2 ;;
    --install-dir) need_value "$@"; INSTALL_DIR=$2 ;;
    --codexd-token-file) need_value "$@"; TOKEN_FILE=$2 ;;
    --shared-token-file) need_value "$@"; SHARED_TOKEN_FILE=$2 ;;
    --server-strategy) need_value "$@"; STRATEGY=$2 ;;
    --server-endpoint) need_value "$@"; ENDPOINT=$2 ;;
    --codexd-api-base) need_value "$@"; CODEXD=$2 ;;
    --conductor-api) need_value "$@"; CONDUCTOR=$2 ;;
    --status-api) need_value "$@"; STATUS=$2 ;;
    --logs-dir) need_value "$@"; LOGS=$2 ;;
    --repo-dir) need_value "$@"; REPO_DIR=$2 ;;
    --expect-role) need_value "$@"; ROLE=$2 ;;
    --timeout) need_value "$@"; TIMEOUT=$2 ;;
    --skip-logs) SKIP_LOGS=1; shift; continue ;;
    --dry-run) DRY_RUN=1; shift; continue ;;
    *) usage_error "unknown option: $1" ;;
  esac
  shift 2
done
finish_common
case "$ROLE" in leader | standby | degraded) ;; *) usage_error "--expect-role must be leader, standby or degraded, got '$ROLE'" ;; esac
is_whole_number "$TIMEOUT" || usage_error "--timeout must be whole seconds, got '$TIMEOUT'"
LOGS=${LOGS:-$REPO_DIR/var/logs}
if [ -z "$NODE_ID" ] && [ -n "$NODE" ]; then NODE_ID="$NODE-main"; fi

args=(probe --manager "$MANAGER" --codexd-api-base "${CODEXD%/}" --conductor-api "${CONDUCTOR%/}"
  --status-api "${STATUS%/}" --expect-role "$ROLE" --logs-dir "$LOGS" --timeout "$TIMEOUT")
[ -n "$NODE_ID" ] && args+=(--node-id "$NODE_ID")
[ "$SKIP_LOGS" = 1 ] && args+=(--skip-logs)
# Only file names go on the command line; render.py reads the token itself ($BAA_CODEXD_TOKEN
# stays in the environment it inherits), so it never shows up in `ps` or in this output.
[ -n "$TOKEN_FILE" ] && args+=(--codexd-token-file "$TOKEN_FILE")
[ -n "$SHARED_TOKEN_FILE" ] && args+=(--shared-token-file "$SHARED_TOKEN_FILE")
INSTALLED_CODEXD="$INSTALL_DIR/$(installed_name codexd)"
args+=(--installed-codexd "$INSTALLED_CODEXD")
INSTALLED_CONDUCTOR="$INSTALL_DIR/$(installed_name conductor)"
args+=(--installed-conductor "$INSTALLED_CONDUCTOR")
INSTALLED_APP_SERVER="$INSTALL_DIR/$(installed_name "$APP_SERVER")"
args+=(--installed-app-server "$INSTALLED_APP_SERVER")
[ -n "$STRATEGY" ] && args+=(--server-strategy "$STRATEGY")
[ -n "$ENDPOINT" ] && args+=(--server-endpoint "$ENDPOINT")

echo "node ${NODE:-(this host)}${NODE_ID:+ (node id $NODE_ID)}, $MANAGER logs under $LOGS"
if [ "$DRY_RUN" = 1 ]; then
  if [ -n "$SHARED_TOKEN_FILE" ]; then shared="the token in $SHARED_TOKEN_FILE"
  elif [ -n "${BAA_SHARED_TOKEN_FILE:-}" ]; then shared="the token in $BAA_SHARED_TOKEN_FILE"
  elif [ -n "${BAA_SHARED_TOKEN:-}" ]; then shared="the token in \$BAA_SHARED_TOKEN"
  elif [ -f "$INSTALLED_CONDUCTOR" ]; then shared="the token file named by $INSTALLED_CONDUCTOR, if any"
  else shared="no token"; fi
  echo "would probe: conductor ${CONDUCTOR%/}/healthz /readyz /rolez (== $ROLE) /metrics"
  echo "would probe: conductor ${CONDUCTOR%/}/v1/codex/sessions?limit=1 with $shared"
  if [ -n "$TOKEN_FILE" ]; then token="the token in $TOKEN_FILE"
  elif [ -n "${BAA_CODEXD_TOKEN_FILE:-}" ]; then token="the token in $BAA_CODEXD_TOKEN_FILE"
  elif [ -n "${BAA_CODEXD_TOKEN:-}" ]; then token="the token in \$BAA_CODEXD_TOKEN"
  elif [ -f "$INSTALLED_CODEXD" ]; then token="the token file named by $INSTALLED_CODEXD, if any"
  else token="no token"; fi
  echo "would probe: codexd ${CODEXD%/}/healthz /v1/codexd/status (child running) /metrics with $token"
  if [ -n "$ENDPOINT" ] || [ "$STRATEGY" = external ]; then
    echo "would probe: app-server ${ENDPOINT:-(the endpoint codexd reports)} (strategy external)"
  else
    echo "would probe: app-server endpoint, if the installed codexd file or codexd says strategy external"
  fi
  echo "would probe: status-api ${STATUS%/}/healthz /v1/status /metrics"
  [ "$SKIP_LOGS" = 1 ] || echo "would check: log files under $LOGS/$MANAGER"
  run "$(runtime_python)" "$RENDER_PY" "${args[@]}"
  exit 0
fi
exec "$(runtime_python)" "$RENDER_PY" "${args[@]}"
