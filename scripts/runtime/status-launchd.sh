#!/usr/bin/env bash
# One line per service: loaded?, state, pid, last exit status (launchd or systemd).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF_USAGE'
usage: status-launchd.sh [options]

Print one line per service: installed file, loaded, state, pid and last exit status.

  --manager launchd|systemd   default: launchd on macOS, systemd elsewhere
  --scope agent|daemon        default agent (per-user); daemon = system domain
  --service NAME              codexd, conductor, status-api or codex-app-server; repeatable
                              (default: all three, and codex-app-server when it is installed)
  --all-services              the same as the default
  --install-dir DIR           where the rendered files were installed (to report them)
  --home-dir DIR              home used for the default install dir (default: $HOME)
  --verbose                   also print the service manager's full record
  --dry-run                   print the commands instead of running them
  -h, --help                  this help

exit status: 0 every selected service is running, 1 some are not, 2 bad usage or no
launchctl/systemctl.
EOF_USAGE
}

VERBOSE=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --verbose) VERBOSE=1; shift; continue ;;
  esac
  if parse_common_flag "$@"; then shift "$NSHIFT"; else usage_error "unknown option: $1"; fi
done
INCLUDE_INSTALLED_APP_SERVER=1
finish_common
need_manager_tool

down=0
for svc in "${SELECTED[@]}"; do
  file="$INSTALL_DIR/$(installed_name "$svc")"
  installed=no
  [ -f "$file" ] && installed=yes
  if [ "$MANAGER" = launchd ]; then
    target="$(launchd_domain)/$(label_of "$svc")"
    if [ "$DRY_RUN" = 1 ]; then run launchctl print "$target"; continue; fi
    if ! record=$(launchctl print "$target" 2>&1); then
      echo "$(label_of "$svc"): installed=$installed loaded=no"
      down=1
      continue
    fi
    state=$(awk -F' = ' '$1 ~ /^\tstate$/ {print $2; exit}' <<<"$record")
    pid=$(awk -F' = ' '$1 ~ /^\tpid$/ {print $2; exit}' <<<"$record")
    last=$(awk -F' = ' '$1 ~ /^\tlast exit code$/ {print $2; exit}' <<<"$record")
    echo "$(label_of "$svc"): installed=$installed loaded=yes state=${state:-?} pid=${pid:--} last-exit=${last:-?}"
    [ "$state" = running ] || down=1
  else
    set_systemctl
    unit=$(unit_of "$svc")
    if [ "$DRY_RUN" = 1 ]; then
      run "${SYSTEMCTL[@]}" show "$unit" --property=LoadState,ActiveState,SubState,MainPID,ExecMainStatus
      continue
    fi
    if ! record=$("${SYSTEMCTL[@]}" show "$unit" --property=LoadState,ActiveState,SubState,MainPID,ExecMainStatus 2>&1); then
      echo "$PROG: ${SYSTEMCTL[*]} show $unit failed: $(head -n 1 <<<"$record")" >&2
      exit 1
    fi
    get() { awk -F= -v k="$1" '$1 == k {print $2; exit}' <<<"$record"; }
    echo "$unit: installed=$installed loaded=$(get LoadState) state=$(get ActiveState)/$(get SubState) pid=$(get MainPID) last-exit=$(get ExecMainStatus)"
    [ "$(get ActiveState)" = active ] || down=1
  fi
  if [ "$VERBOSE" = 1 ]; then
    if [ "$MANAGER" = launchd ]; then echo "$record"; else "${SYSTEMCTL[@]}" status --no-pager "$unit" || true; fi
  fi
done
exit "$down"
