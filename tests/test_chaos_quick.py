"""The chaos harness's quick run (bench/chaos) on every CI run: a real node — codexd with the real
Codex child, the conductor (two sharing a real etcd when there is one), the status-api — under
load and every kind of fault for ~25 s, with no invariant violated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos.faults import kinds
from codexd_trio.base.codexbin import REPO_ROOT
from tests.etcd_fixture import etcd_binary

SEED = 20261207


@pytest.mark.real_codex
@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the chaos harness reads /proc and waits on pidfds (Linux)")
def test_quick_chaos_run_has_every_fault_and_no_violation(tmp_path: Path) -> None:
    etcd = etcd_binary() is not None
    argv = [sys.executable, "-m", "bench.chaos", "--quick", "--seed", str(SEED),
            "--out", str(tmp_path)]
    if etcd:
        argv.append("--etcd")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAA_")}
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    report_path = tmp_path / "chaos-report.json"
    assert report_path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    summary = [f"{v['invariant']}: {v['message']}" for v in report["violations"]]
    assert report["violationCount"] == 0, "\n".join(summary) + "\n" + done.stdout[-2000:]
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["seed"] == SEED
    # Every kind of fault happened, and the checks that make the run worth anything ran.
    assert set(report["faultCounts"]) == set(kinds(etcd)), report["faultCounts"]
    assert all(count >= 1 for count in report["faultCounts"].values())
    checked = report["invariantsChecked"]
    for invariant in ("seen_on_disk", "seq_contiguous", "stream_order", "turn_settles_once",
                      "daemon_exits", "graceful_stop", "no_orphans", "subscribers_released",
                      "no_internal_errors", "log_files_bounded", "keyed_retry_same_answer"):
        assert checked.get(invariant, 0) > 0, invariant
    if etcd:
        assert checked.get("one_leader", 0) > 0
    assert report["orphans"] == []
    assert report["seenOnDisk"]["verified"] > 0
    assert (tmp_path / "chaos-report.png").stat().st_size > 0
