#!/usr/bin/env bash
# Restarts running services in place (launchctl kickstart -k / systemctl restart), without
# re-reading their files; use reload-launchd.sh after changing a plist or unit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF_USAGE'
usage: restart-launchd.sh [options]

Restart the selected services with the files already loaded (launchctl kickstart -k, or
systemctl restart). codexd gets SIGTERM and its shutdown grace; the service manager starts it again.

  --manager launchd|systemd   default: launchd on macOS, systemd elsewhere
  --scope agent|daemon        default agent (per-user); daemon = system domain (needs sudo)
  --service NAME              codexd, conductor, status-api or codex-app-server; repeatable
                              (default: all three, and codex-app-server when it is installed)
  --all-services              the same as the default
  --wait                      afterwards, wait for codexd GET /healthz (when codexd was restarted)
  --wait-timeout S            how long --wait waits (default 60)
  --codexd-api-base URL       where to probe codexd (default $BAA_CODEXD_LOCAL_API_BASE or
                              http://127.0.0.1:4319)
  --dry-run                   print the commands instead of running them
  -h, --help                  this help

exit status: 0 restarted (and healthy with --wait), 1 the service manager or the wait failed,
2 bad usage or no launchctl/systemctl.
EOF_USAGE
}

WAIT=0
WAIT_TIMEOUT=60
BASE=${BAA_CODEXD_LOCAL_API_BASE:-http://127.0.0.1:4319}
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --wait) WAIT=1; shift; continue ;;
    --wait-timeout) need_value "$@"; WAIT_TIMEOUT=$2; shift 2; continue ;;
    --codexd-api-base) need_value "$@"; BASE=$2; shift 2; continue ;;
  esac
  if parse_common_flag "$@"; then shift "$NSHIFT"; else usage_error "unknown option: $1"; fi
done
is_whole_number "$WAIT_TIMEOUT" || usage_error "--wait-timeout must be whole seconds, got '$WAIT_TIMEOUT'"
INCLUDE_INSTALLED_APP_SERVER=1
finish_common
need_manager_tool
need_root_for_daemon

if [ "$MANAGER" = launchd ]; then
  for svc in "${SELECTED[@]}"; do
    run launchctl kickstart -k "$(launchd_domain)/$(label_of "$svc")"
  done
else
  set_systemctl
  units=()
  for svc in "${SELECTED[@]}"; do units+=("$(unit_of "$svc")"); done
  run "${SYSTEMCTL[@]}" restart "${units[@]}"
fi
if [ "$WAIT" = 1 ] && selected codexd; then
  wait_codexd_healthz "${BASE%/}" "$WAIT_TIMEOUT"
fi
