#!/usr/bin/env bash
# Renders the node's service files from the templates in launchd/ (or systemd/) and installs them:
# launchd plists on macOS, systemd units with --manager systemd (the default off macOS).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
usage: install-launchd.sh [options]

Render the service files for the selected services from the repo's templates, check them, install
them into the service manager's folder and (re)start them. The repo holds templates only.

selection and target:
  --manager launchd|systemd   service manager (default: launchd on macOS, systemd elsewhere)
  --scope agent|daemon        agent = per-user LaunchAgent / systemd --user unit (default);
                              daemon = LaunchDaemon / system unit (needs sudo)
  --service NAME              codexd, conductor, status-api or codex-app-server; repeatable
                              (default: the three daemons, plus codex-app-server with
                              --external-app-server)
  --all-services              all three services
  --repo-dir DIR              checkout the services run from (default: this checkout)
  --home-dir DIR              home of the user the services run for (default: $HOME)
  --install-dir DIR           where rendered files go (default: ~/Library/LaunchAgents,
                              /Library/LaunchDaemons, ~/.config/systemd/user or /etc/systemd/system)
  --dry-run                   render into a staging folder, print the files and the commands that
                              would run; never touches launchctl/systemctl or the install folder
  --out-dir DIR               staging folder for --dry-run (default: a new temporary folder)
  --no-check                  install even if the static checks (check-launchd.sh) find problems
  -h, --help                  this help

configuration (rendered into the files; see docs/runtime/README.md for the variables):
  --node NAME                 node name: BAA_CONDUCTOR_HOST=NAME, BAA_NODE_ID=NAME-main
  --node-id ID                BAA_NODE_ID (default: mini-main, or NAME-main with --node)
  --conductor-host HOST       BAA_CONDUCTOR_HOST (default: the --node name)
  --logs-dir DIR              logs root (default: <repo>/var/logs); service logs go to
                              <logs>/launchd/ or <logs>/systemd/
  --state-dir DIR             state root (default: <repo>/var/state)
  --shared-token-file FILE    BAA_SHARED_TOKEN_FILE for the conductor (mode 600; never inline)
  --codexd-token-file FILE    BAA_CODEXD_TOKEN_FILE for codexd and the conductor (mode 600; never
                              inline): codexd then wants 'Authorization: Bearer <token>' on every
                              route but /healthz, and the conductor sends it
  --codexd-api-base URL       BAA_CODEXD_LOCAL_API_BASE (default http://127.0.0.1:4319; loopback only)
  --conductor-api URL         BAA_CONDUCTOR_LOCAL_API (default http://127.0.0.1:4317)
  --status-api URL            BAA_STATUS_API_LOCAL_API (default http://127.0.0.1:4318)
  --conductor-role ROLE       BAA_CONDUCTOR_ROLE: primary (default) or standby
  --allowed-hosts LIST        BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS (comma-separated non-loopback
                              hosts the conductor may listen on)
  --status-allowed-hosts LIST BAA_STATUS_API_ALLOWED_HOSTS (the same for the status-api)
  --codexd-allowed-origins LIST
                              BAA_CODEXD_ALLOWED_ORIGINS: comma-separated browser origins
                              (http://host:port) codexd serves besides its own (default: none)
  --conductor-allowed-origins LIST
                              BAA_CONDUCTOR_ALLOWED_ORIGINS (the same for the conductor)
  --status-allowed-origins LIST
                              BAA_STATUS_API_ALLOWED_ORIGINS (the same for the status-api)
  --public-api-base URL       BAA_CONDUCTOR_PUBLIC_API_BASE (where phones reach the conductor:
                              pairing and notification links use it)
  --notify-urls-file FILE     BAA_NOTIFY_URLS_FILE for the conductor: notification sinks, one
                              Apprise URL a line (mode 600; never inline); see docs/phone.md
  --event-stream-path PATH    BAA_CODEXD_EVENT_STREAM_PATH (default /v1/codexd/events)
  --server-strategy S         BAA_CODEXD_SERVER_STRATEGY: spawn (default: codexd runs its own
                              app-server child) or external (codexd attaches to a long-lived
                              app-server it never starts or stops)
  --server-endpoint URL       BAA_CODEXD_SERVER_ENDPOINT: stdio or stdio://NAME with spawn
                              (default stdio); with external unix:///absolute/path/to/socket or
                              ws://127.0.0.1:PORT (loopback only; required)
  --external-app-server       external only: also render and install the codex-app-server service
                              (so.makefile.baa-codex-app-server / baa-codex-app-server.service),
                              '<codex> app-server --listen URL'; without it, run Codex's own
                              daemon ('codex app-server daemon start') and pass its socket
  --server-command CMD        the app-server command: BAA_CODEXD_SERVER_COMMAND with spawn, the
                              codex-app-server service's binary with --external-app-server
                              (default codex = the vendored native binary)
  --server-arg ARG            app-server arguments, repeatable (default app-server):
                              BAA_CODEXD_SERVER_ARGS, or the service's arguments before --listen
  --server-cwd DIR            the app-server's working directory (BAA_CODEXD_SERVER_CWD, or the
                              service's WorkingDirectory; default: the repo)
  --codex-home DIR            CODEX_HOME of the app-server: codexd's child with spawn, the
                              codex-app-server service with external (default: ~/.codex)
  --shutdown-grace S          BAA_CODEXD_SHUTDOWN_GRACE_S (default 10)
  --exit-timeout S            launchd ExitTimeOut / systemd TimeoutStopSec; must exceed the
                              grace (default max(20, 2 x grace))
  --throttle-interval S       launchd ThrottleInterval / systemd RestartSec (default 10)
  --user NAME                 --scope daemon only: run as this user (UserName= / User=)
  --env-file FILE             systemd only: extra EnvironmentFile=- (optional file)
  --python PATH               interpreter (default: <repo>/.venv/bin/python)
  --setenv KEY=VALUE          one more environment variable for every service (repeatable), e.g.
                              --setenv BAA_CONDUCTOR_LEASE_TTL_S=60 (never BAA_SHARED_TOKEN or
                              BAA_CODEXD_TOKEN: use the token file flags)

exit status: 0 installed (or dry run rendered), 1 checks or the service manager failed,
2 bad usage or configuration, or launchctl/systemctl missing without --dry-run.
EOF
}

OUT_DIR=""
NO_CHECK=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --out-dir) need_value "$@"; OUT_DIR=$2; shift 2; continue ;;
    --no-check) NO_CHECK=1; shift; continue ;;
  esac
  if parse_common_flag "$@" || parse_render_flag "$@"; then
    shift "$NSHIFT"
  else
    usage_error "unknown option: $1"
  fi
done
finish_common
need_manager_tool
need_root_for_daemon

PY=$(runtime_python)
if [ "$DRY_RUN" = 1 ]; then
  STAGE=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/baa-runtime.XXXXXX")}
else
  [ -z "$OUT_DIR" ] || usage_error "--out-dir only applies to --dry-run"
  STAGE=$(mktemp -d "${TMPDIR:-/tmp}/baa-runtime.XXXXXX")
  trap 'rm -rf "$STAGE"' EXIT
fi

service_args=()
for s in "${SELECTED[@]}"; do service_args+=(--service "$s"); done
manifest=$("$PY" "$RENDER_PY" render --manager "$MANAGER" --scope "$SCOPE" "${service_args[@]}" \
  --out-dir "$STAGE" ${RENDER_ARGS[@]+"${RENDER_ARGS[@]}"})

files=()
services=()
dirs=()
sockdirs=()
while IFS=$'\t' read -r kind a b; do
  case "$kind" in
    file) services+=("$a"); files+=("$b") ;;
    dir) dirs+=("$a") ;;
    sockdir) sockdirs+=("$a") ;;
  esac
done <<<"$manifest"

pending=()
for d in "${dirs[@]}" ${sockdirs[@]+"${sockdirs[@]}"}; do pending+=(--pending-dir "$d"); done
# --peer-dir: installing codexd alone is checked against the installed conductor (and back), so a
# codexd token the conductor does not have is caught before the conductor starts failing.
if ! problems=$("$PY" "$RENDER_PY" check "${pending[@]}" --peer-dir "$INSTALL_DIR" "${files[@]}"); then
  echo "$problems" >&2
  if [ "$NO_CHECK" = 0 ]; then
    echo "$PROG: the rendered files have problems (above); fix them or pass --no-check" >&2
    exit 1
  fi
fi

if [ "$DRY_RUN" = 1 ]; then
  echo "dry run: rendered into $STAGE ($MANAGER, scope $SCOPE)"
  for i in "${!files[@]}"; do
    echo "== would write $INSTALL_DIR/$(basename "${files[$i]}") (service ${services[$i]})"
    cat "${files[$i]}"
  done
fi

run mkdir -p "${dirs[@]}" "$INSTALL_DIR"
# A daemon running as --user must be able to write its logs and state.
if [ -n "$RUN_USER" ]; then run chown "$RUN_USER" "${dirs[@]}"; fi
# The app-server's socket folder: created when missing (then owned by --user, who must create the
# socket in it); an existing folder is left as it is.
for d in ${sockdirs[@]+"${sockdirs[@]}"}; do
  if [ ! -d "$d" ]; then
    run mkdir -p "$d"
    if [ -n "$RUN_USER" ]; then run chown "$RUN_USER" "$d"; fi
  fi
done
if [ "$MANAGER" = launchd ]; then
  domain=$(launchd_domain)
  for i in "${!files[@]}"; do
    svc=${services[$i]}
    dest="$INSTALL_DIR/$(basename "${files[$i]}")"
    run install -m 644 "${files[$i]}" "$dest"
    if [ "$SCOPE" = daemon ]; then run chown root:wheel "$dest"; fi
    if command -v plutil >/dev/null 2>&1 || [ "$DRY_RUN" = 1 ]; then run plutil -lint "$dest"; fi
    # Unload a previous copy first so launchd reads the new file.
    launchd_bootout "$domain/$(label_of "$svc")"
    run launchctl enable "$domain/$(label_of "$svc")"
    launchd_bootstrap "$domain" "$dest"
  done
else
  set_systemctl
  units=()
  for i in "${!files[@]}"; do
    run install -m 644 "${files[$i]}" "$INSTALL_DIR/$(basename "${files[$i]}")"
    units+=("$(unit_of "${services[$i]}")")
  done
  run "${SYSTEMCTL[@]}" daemon-reload
  run "${SYSTEMCTL[@]}" enable "${units[@]}"
  # restart, not start: an already running service must pick up the new file.
  run "${SYSTEMCTL[@]}" restart "${units[@]}"
fi

# A codex-app-server service left from an earlier install keeps running until removed.
leftover="$INSTALL_DIR/$(installed_name "$APP_SERVER")"
if [ -f "$leftover" ] && ! [[ " ${services[*]} " == *" $APP_SERVER "* ]] \
  && [[ " ${services[*]} " == *" codexd "* ]]; then
  echo "note: $leftover is still installed; if codexd no longer attaches to it, remove it" \
    "(docs/runtime/README.md, 'One long-lived app-server')"
fi

if [ "$DRY_RUN" = 1 ]; then
  echo "dry run: nothing installed"
else
  echo "installed ${SELECTED[*]} ($MANAGER, scope $SCOPE) into $INSTALL_DIR"
  echo "verify with: scripts/runtime/status-launchd.sh --manager $MANAGER --scope $SCOPE && scripts/runtime/check-node.sh --manager $MANAGER"
fi
