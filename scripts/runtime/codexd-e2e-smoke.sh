#!/usr/bin/env bash
# Runs the pytest-trio end-to-end smoke: a temporary codexd + conductor, the real codex binary,
# the scripted model provider. Offline; touches no installed service.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF_USAGE'
usage: codexd-e2e-smoke.sh [--repo-dir DIR] [--dry-run] [--] [pytest args...]

Run '<repo>/.venv/bin/python -m pytest -q tests/test_e2e_node.py [pytest args...]' from the repo
(running scripts/setup.sh first when .venv is missing). The smoke starts its own codexd and
conductor on free loopback ports with the real codex binary and the scripted model; it does not
use or disturb the installed services. Its daemons start without any BAA_* variable, so a codexd
token you exported for the node (BAA_CODEXD_TOKEN[_FILE]) is not theirs; the test itself sends
the tokens and the 'content-type: application/json' its daemons need. Arguments this script does
not know go to pytest.

  --repo-dir DIR   checkout to test (default: this checkout)
  --dry-run        print the commands instead of running them
  -h, --help       this help

exit status: pytest's (0 passed, 1 failed, ...), 2 bad usage or a missing test file.
EOF_USAGE
}

PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --repo-dir) need_value "$@"; REPO_DIR=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; PYTEST_ARGS+=("$@"); break ;;
    *) PYTEST_ARGS+=("$1"); shift ;;
  esac
done
REPO_DIR=${REPO_DIR:-$SCRIPT_REPO}
[ -d "$REPO_DIR" ] || die "--repo-dir $REPO_DIR does not exist"
REPO_DIR=$(cd "$REPO_DIR" && pwd)
if [ ! -f "$REPO_DIR/tests/test_e2e_node.py" ]; then
  [ "$DRY_RUN" = 1 ] || die "$REPO_DIR/tests/test_e2e_node.py not found"
  echo "note: $REPO_DIR/tests/test_e2e_node.py does not exist (a real run would stop here)"
fi

cd "$REPO_DIR"
if [ ! -x .venv/bin/python ]; then run scripts/setup.sh; fi
cmd=(.venv/bin/python -m pytest -q tests/test_e2e_node.py ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"})
if [ "$DRY_RUN" = 1 ]; then run "${cmd[@]}"; exit 0; fi
exec "${cmd[@]}"
