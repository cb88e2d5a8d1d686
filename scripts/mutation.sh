#!/usr/bin/env bash
# Mutation testing of the modules that hold codexd's promises (issue 29): mutmut changes one
# thing at a time in them (a comparison, a constant, a call dropped) and runs the fast tests
# that reach the changed function; a mutant the tests do not notice "survives". The score and
# every surviving mutant's verdict are in docs/testing.md. Not run in CI (it takes hours on two
# cores); run it after changing one of these modules or its tests.
#
#   scripts/mutation.sh                 every group below, one at a time
#   scripts/mutation.sh approvals hub   those groups
#   scripts/mutation.sh --report        only print the scores of what has run (mutants/)
#   MUTMUT_CHILDREN=2 scripts/mutation.sh eventlog   two workers (the default is one)
#
# One mutant against any test (a survivor's review):
#   cd mutants && MUTANT_UNDER_TEST=NAME ../.venv/bin/python -m pytest tests/test_x.py
#
# The configuration (modules, test selection) is [tool.mutmut] in pyproject.toml. mutmut keeps
# its work in mutants/ (git-ignored) and skips mutants it already judged; delete that folder to
# start over after changing the tests. `.venv/bin/mutmut show NAME` shows one mutant's diff.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

declare -A MODULES=(
  [approvals]="codexd_trio.core.approvals.*"
  [eventlog]="codexd_trio.store.eventlog.* codexd_trio.store._eventlog_commit.* codexd_trio.store._eventlog_files.* codexd_trio.store._eventlog_segment.* codexd_trio.base.files.*"
  [documents]="codexd_trio.store.documents.*"
  [idempotency]="codexd_trio.store.idempotency.* codexd_trio.store._idempotency_journal.* codexd_trio.store._idempotency_records.*"
  [sessiontable]="codexd_trio.store.sessiontable.*"
  [leases]="conductor_trio.lease.file.* conductor_trio.lease.etcd.*"
  [callers]="codexd_trio.web.callers.*"
  [hub]="codexd_trio.core.hub.* codexd_trio.core.subscription.*"
)
ORDER=(approvals callers hub documents eventlog idempotency sessiontable leases)

case "${1:-}" in
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  --report) exec .venv/bin/python scripts/mutation_report.py ;;
esac
groups=("$@")
[ "${#groups[@]}" -gt 0 ] || groups=("${ORDER[@]}")
for group in "${groups[@]}"; do
  [ -n "${MODULES[$group]:-}" ] || { echo "mutation.sh: unknown group: $group (${ORDER[*]})" >&2; exit 2; }
done
for group in "${groups[@]}"; do
  echo "== mutants of $group"
  # The globs are mutmut's own patterns (split into words, never expanded by the shell).
  read -r -a patterns <<< "${MODULES[$group]}"
  nice -n 19 .venv/bin/mutmut run --max-children "${MUTMUT_CHILDREN:-1}" "${patterns[@]}"
done
.venv/bin/python scripts/mutation_report.py
