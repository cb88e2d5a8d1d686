#!/usr/bin/env bash
# Runs every check of the project on a fresh machine: installs what is missing (scripts/setup.sh),
# then ruff, mypy --strict and the pytest suite (which drives the real codex binary offline).
# Extra arguments go to pytest, e.g. scripts/test.sh -k websocket -x
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
case "${1:-}" in
  -h|--help) echo "usage: scripts/test.sh [pytest args...]"; exit 0 ;;
esac
scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
