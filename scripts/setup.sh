#!/usr/bin/env bash
# Installs everything the node needs into git-ignored folders of this checkout:
#   .venv/        the project's Python environment, exact versions from requirements.lock
#   vendor/codex/ the Codex CLI (@openai/codex, version pinned in codex-version.txt) from npm
# Idempotent and quick when nothing changed (a stamp file records what was installed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

usage() {
  echo "usage: scripts/setup.sh [--force]   (install .venv and the pinned Codex CLI into this checkout)"
}
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup.sh: $PYTHON not found; install Python 3.11 or newer" >&2; exit 2
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "setup.sh: Python 3.11 or newer is required, found $("$PYTHON" --version 2>&1)" >&2; exit 2
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "setup.sh: npm not found; install Node.js and npm" >&2; exit 2
fi

CODEX_VERSION=$(tr -d '[:space:]' < codex-version.txt)
want="$(cat requirements.lock pyproject.toml | cksum) codex=$CODEX_VERSION python=$("$PYTHON" --version 2>&1)"
if [ "$force" = 0 ] && [ -f .setup-stamp ] && [ "$(cat .setup-stamp)" = "$want" ] \
   && [ -x .venv/bin/python ] && .venv/bin/python -m codexd_trio.codexbin --quiet; then
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
echo "setup: installing locked Python packages"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .

installed=""
if [ -f vendor/codex/node_modules/@openai/codex/package.json ]; then
  installed=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' \
    vendor/codex/node_modules/@openai/codex/package.json)
fi
if [ "$installed" != "$CODEX_VERSION" ]; then
  echo "setup: installing @openai/codex@$CODEX_VERSION into vendor/codex"
  mkdir -p vendor/codex
  npm install --prefix vendor/codex --no-audit --no-fund --loglevel=error "@openai/codex@$CODEX_VERSION"
fi

# Fails loudly if the native binary for this platform is missing or reports another version.
.venv/bin/python -m codexd_trio.codexbin
echo "$want" > .setup-stamp
