#!/usr/bin/env bash
# Makes the service manager re-read the installed files (bootout + bootstrap, or daemon-reload +
# restart), then waits for codexd's /healthz.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF_USAGE'
usage: reload-launchd.sh [options]

Reload the selected services from their installed files (launchctl bootout + bootstrap, or
systemctl daemon-reload + restart), then wait until codexd answers GET /healthz. The wait is a
bounded poll (one probe a second up to --wait-timeout): the service manager gives no readiness
signal to block on.

  --manager launchd|systemd   default: launchd on macOS, systemd elsewhere
  --scope agent|daemon        default agent (per-user); daemon = system domain (needs sudo)
  --service NAME              codexd, conductor, status-api or codex-app-server; repeatable
                              (default: all three, and codex-app-server when it is installed)
  --all-services              the same as the default
  --install-dir DIR           where the files are installed (default: per manager and scope)
  --home-dir DIR              home used for the default install dir (default: $HOME)
  --codexd-api-base URL       where to probe codexd (default $BAA_CODEXD_LOCAL_API_BASE or
                              http://127.0.0.1:4319)
  --wait-timeout S            how long to wait for /healthz (default 60)
  --no-wait                   do not wait
  --dry-run                   print the commands instead of running them
  -h, --help                  this help

exit status: 0 reloaded and codexd healthy, 1 the service manager or the wait failed,
2 bad usage, a file not installed, or no launchctl/systemctl.
EOF_USAGE
}

WAIT=1
WAIT_TIMEOUT=60
BASE=${BAA_CODEXD_LOCAL_API_BASE:-http://127.0.0.1:4319}
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --no-wait) WAIT=0; shift; continue ;;
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

for svc in "${SELECTED[@]}"; do
  file="$INSTALL_DIR/$(installed_name "$svc")"
  if [ "$DRY_RUN" = 0 ] && [ ! -f "$file" ]; then
    die "$file is not installed; run scripts/runtime/install-launchd.sh --service $svc first"
  fi
done

if [ "$MANAGER" = launchd ]; then
  domain=$(launchd_domain)
  for svc in "${SELECTED[@]}"; do
    launchd_bootout "$domain/$(label_of "$svc")"
    launchd_bootstrap "$domain" "$INSTALL_DIR/$(installed_name "$svc")"
  done
else
  set_systemctl
  units=()
  for svc in "${SELECTED[@]}"; do units+=("$(unit_of "$svc")"); done
  run "${SYSTEMCTL[@]}" daemon-reload
  run "${SYSTEMCTL[@]}" restart "${units[@]}"
fi
if [ "$WAIT" = 1 ] && selected codexd; then
  wait_codexd_healthz "${BASE%/}" "$WAIT_TIMEOUT"
fi
