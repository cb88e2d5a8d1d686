#!/usr/bin/env bash
# Brings the node up in the foreground: installs what is missing (scripts/setup.sh), then starts
# codexd, conductor and status-api. --demo runs offline against the project's scripted model and
# shows one real Codex turn; without it, Codex uses your own CODEX_HOME (~/.codex, `codex login`).
# scripts/up.sh --help lists the options.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# The arguments first, before anything is installed: --help answers and a bad flag fails in one
# line at once. conductor_trio/node_up/preflight.py's parser is the only definition of the
# options; it imports only the standard library, so the system Python can run the check. Without
# a usable Python, setup.sh below says what is missing.
PYTHON=${PYTHON:-python3}
if command -v "$PYTHON" >/dev/null 2>&1 \
   && "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  "$PYTHON" -c 'import sys; from conductor_trio.node_up import check_arguments
sys.exit(check_arguments(sys.argv[1:]))' "$@" || exit $?
  for arg in "$@"; do
    case "$arg" in -h|--help) exit 0 ;; esac
  done
fi

scripts/setup.sh
exec .venv/bin/python -m conductor_trio.node_up "$@"
