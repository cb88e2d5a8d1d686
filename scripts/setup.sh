#!/usr/bin/env bash
# Installs everything the node needs into git-ignored folders of this checkout:
#   .venv/        the project's Python environment, exact versions from requirements.lock
#   vendor/codex/ the Codex CLI (@openai/codex, version pinned on the first line of
#                 codex-version.txt) from npm
# Idempotent and quick when nothing changed (a stamp file records what was installed).
#
# --codex-version X also installs @openai/codex@X beside the pinned one, into vendor/codex-X/
# (the pinned install and the stamp are left alone); run codexd or the tests against it with
# BAA_CODEX_BIN=$(.venv/bin/python -m codexd_trio.codexbin --codex-version X --path).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

usage() {
  echo "usage: scripts/setup.sh [--force] [--codex-version X]"
  echo "  install .venv and the pinned Codex CLI into this checkout;"
  echo "  --codex-version X also installs @openai/codex@X into vendor/codex-X/"
}
force=0
extra_version=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --codex-version)
      [ "$#" -ge 2 ] || { echo "setup.sh: --codex-version needs a version" >&2; exit 2; }
      extra_version=$2; shift ;;
    --codex-version=*) extra_version=${1#--codex-version=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$extra_version" ] && ! [[ "$extra_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z][0-9A-Za-z.-]*)?$ ]]; then
  echo "setup.sh: --codex-version: not a release version: $extra_version" >&2; exit 2
fi

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

CODEX_VERSION=$(head -n 1 codex-version.txt | tr -d '[:space:]')

# install_codex PREFIX VERSION: @openai/codex@VERSION into the npm prefix PREFIX, unless it is
# already there (npm resolves the platform's native binary as an optional dependency).
install_codex() {
  local prefix=$1 version=$2 installed=""
  if [ -f "$prefix/node_modules/@openai/codex/package.json" ]; then
    installed=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' \
      "$prefix/node_modules/@openai/codex/package.json")
  fi
  if [ "$installed" != "$version" ]; then
    echo "setup: installing @openai/codex@$version into $prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error --save-exact \
      "@openai/codex@$version"
  fi
}

# The pinned install. The stamp covers only this part, so a run with --codex-version still
# short-circuits here, and the extra install below never invalidates it.
setup_pinned() {
  local want
  want="$(cat requirements.lock pyproject.toml | cksum) codex=$CODEX_VERSION python=$("$PYTHON" --version 2>&1)"
  if [ "$force" = 0 ] && [ -f .setup-stamp ] && [ "$(cat .setup-stamp)" = "$want" ] \
     && [ -x .venv/bin/python ] && .venv/bin/python -m codexd_trio.codexbin --quiet; then
    return 0
  fi

  if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv .venv
  fi
  echo "setup: installing locked Python packages"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .

  install_codex vendor/codex "$CODEX_VERSION"
  # Fails loudly if the native binary for this platform is missing or reports another version.
  .venv/bin/python -m codexd_trio.codexbin
  echo "$want" > .setup-stamp
}

setup_pinned
if [ -n "$extra_version" ] && [ "$extra_version" != "$CODEX_VERSION" ]; then
  install_codex "vendor/codex-$extra_version" "$extra_version"
  .venv/bin/python -m codexd_trio.codexbin --codex-version "$extra_version"
fi
