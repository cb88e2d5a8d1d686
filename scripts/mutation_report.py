"""The score of each module mutmut has run (``mutants/**/*.meta``), for docs/testing.md.

Killed counts the mutants a test failed on, timed out on (the mutant hung: the run noticed) or
crashed on; survived counts those every selected test passed with, and those no selected test
reaches ("no tests"). ``--survivors`` lists the survivors' names (``mutmut show NAME``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}


def main() -> int:
    survivors = "--survivors" in sys.argv
    rows = []
    for meta in sorted(set((ROOT / "mutants").rglob("*.py.meta"))):
        module = str(meta.relative_to(ROOT / "mutants"))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        statuses = {key: status_by_exit_code[code] for key, code in codes.items()}
        checked = {k: s for k, s in statuses.items() if s != "not checked"}
        if not checked:
            continue
        killed = sum(s in DETECTED for s in checked.values())
        rows.append((module, len(statuses), len(checked), killed))
        if survivors:
            for key, status in sorted(checked.items()):
                if status not in DETECTED:
                    print(f"  {status:9} {key}")
    print(f"{'module':48} {'mutants':>7} {'run':>5} {'killed':>6} {'score':>6}")
    for module, total, run, killed in rows:
        print(f"{module:48} {total:7} {run:5} {killed:6} {100 * killed / run:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
