#!/usr/bin/env bash
# Static checks of rendered plists or units: one line per problem, nonzero exit if any.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF_USAGE'
usage: check-launchd.sh [options]

Static checks of the rendered service files (nothing is started or probed): program is
'<repo>/.venv/bin/python -m <module> start' and exists; WorkingDirectory exists; codexd listens
on loopback; the event stream path; logs and state dirs exist; the app-server child command
resolves and its arguments include app-server; stdout/stderr log folders exist; restart semantics
(KeepAlive {SuccessfulExit: false} / Restart=on-failure); ExitTimeOut / TimeoutStopSec longer than
codexd's grace; no secret in the program arguments and no inline BAA_SHARED_TOKEN or
BAA_CODEXD_TOKEN; the shared and codexd token files exist, are not empty and have mode 600; when
codexd has BAA_CODEXD_TOKEN_FILE the conductor carries the same one (else it could not call
codexd); BAA_*_ALLOWED_ORIGINS are origins; codexd's server strategy and endpoint are ones it
accepts, and with strategy external: a unix socket exists (a problem when nothing is meant to
create it, a warning on stderr when the codex-app-server service is installed but not listening),
and the codex-app-server service (when there is one) runs the native codex binary with
'app-server --listen' on codexd's endpoint. Plists also go through 'plutil -lint' where plutil
exists.

which files:
  (default)                   the installed files of the selected services
  --file PATH                 check this rendered .plist or baa-*.service instead; repeatable
  --dry-run                   render the configuration given by the flags below into a staging
                              folder and check that (folders an install would create may be missing)

  --manager launchd|systemd   default: launchd on macOS, systemd elsewhere
  --scope agent|daemon        default agent
  --service NAME              codexd, conductor, status-api or codex-app-server; repeatable
                              (default: all three, and codex-app-server when it is installed)
  --all-services              the same as the default
  --install-dir DIR           where the files are installed (default: per manager and scope)
  --repo-dir DIR, --home-dir DIR, and every configuration flag of install-launchd.sh
                              (used with --dry-run; see install-launchd.sh --help)
  -h, --help                  this help

exit status: 0 no problems, 1 problems (one line each on stdout), 2 bad usage.
EOF_USAGE
}

FILES=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --file) need_value "$@"; FILES+=("$2"); shift 2; continue ;;
  esac
  if parse_common_flag "$@" || parse_render_flag "$@"; then
    shift "$NSHIFT"
  else
    usage_error "unknown option: $1"
  fi
done
# The installed files: the app-server service too, when it is installed (not for --dry-run,
# which renders what the flags select).
[ "$DRY_RUN" = 1 ] || INCLUDE_INSTALLED_APP_SERVER=1
finish_common
PY=$(runtime_python)

pending=()
peers=()
problems=()
if [ "${#FILES[@]}" -gt 0 ]; then
  [ "$DRY_RUN" = 0 ] || usage_error "--file and --dry-run do not go together"
elif [ "$DRY_RUN" = 1 ]; then
  stage=$(mktemp -d "${TMPDIR:-/tmp}/baa-runtime-check.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  service_args=()
  for s in "${SELECTED[@]}"; do service_args+=(--service "$s"); done
  manifest=$("$PY" "$RENDER_PY" render --manager "$MANAGER" --scope "$SCOPE" "${service_args[@]}" \
    --out-dir "$stage" ${RENDER_ARGS[@]+"${RENDER_ARGS[@]}"})
  while IFS=$'\t' read -r kind a b; do
    case "$kind" in
      file) FILES+=("$b") ;;
      dir | sockdir) pending+=(--pending-dir "$a") ;;
    esac
  done <<<"$manifest"
  # As install-launchd.sh does: a codexd (or conductor) rendered alone meets the installed other.
  peers=(--peer-dir "$INSTALL_DIR")
else
  for svc in "${SELECTED[@]}"; do
    file="$INSTALL_DIR/$(installed_name "$svc")"
    if [ -f "$file" ]; then FILES+=("$file"); else problems+=("$file: not installed"); fi
  done
fi

for f in ${FILES[@]+"${FILES[@]}"}; do
  if [ ! -f "$f" ]; then
    problems+=("$f: no such file")
  elif [[ "$f" == *.plist ]] && command -v plutil >/dev/null 2>&1; then
    if ! lint=$(plutil -lint "$f" 2>&1); then problems+=("$(basename "$f"): plutil -lint: ${lint//$'\n'/ }"); fi
  fi
done

existing=()
for f in ${FILES[@]+"${FILES[@]}"}; do [ -f "$f" ] && existing+=("$f"); done
if [ "${#existing[@]}" -gt 0 ]; then
  status=0
  out=$("$PY" "$RENDER_PY" check ${pending[@]+"${pending[@]}"} ${peers[@]+"${peers[@]}"} \
    "${existing[@]}") || status=$?
  [ "$status" -le 1 ] || exit "$status"
  if [ -n "$out" ]; then
    while IFS= read -r line; do problems+=("$line"); done <<<"$out"
  fi
fi

if [ "${#problems[@]}" -gt 0 ]; then
  printf '%s\n' "${problems[@]}"
  exit 1
fi
echo "ok: ${#existing[@]} file(s) checked: ${existing[*]}"
