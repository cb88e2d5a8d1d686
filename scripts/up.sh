#!/usr/bin/env bash
# Brings the node up in the foreground: installs what is missing (scripts/setup.sh), then starts
# codexd, conductor and status-api. --demo runs offline against the project's scripted model and
# shows one real Codex turn; without it, Codex uses your own CODEX_HOME (~/.codex, `codex login`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
case "${1:-}" in
  -h|--help) scripts/setup.sh >/dev/null 2>&1 || true ;;
esac
scripts/setup.sh
exec .venv/bin/python -m codexd_trio.node_up "$@"
