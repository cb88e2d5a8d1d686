"""The house in layers: import-linter's contracts (``[tool.importlinter]`` in pyproject.toml) hold
on the real tree and fail on a planted forbidden import; no module is over 450 lines."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("codexd_trio", "conductor_trio")
# The longest a Python module of the project may be (the tests aside); see docs/design-notes.md.
MAX_MODULE_LINES = 450


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages under ``root``, with the contracts of its pyproject."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.is_file():
        pytest.fail(f"{lint} is missing: import-linter is a dev dependency (scripts/setup.sh)")
    # Only the copy under ``root`` may be found, not the editable install of the checkout.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(lint), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def contract_statuses(report: str) -> dict[str, str]:
    """``{contract name: "KEPT" | "BROKEN"}`` from lint-imports' summary (long names wrap)."""
    summary = " ".join(report.split("dependencies.", 1)[-1].split("Contracts:", 1)[0].split())
    found = re.findall(r"(.+?) (KEPT|BROKEN)", summary)
    return {name.strip(" -"): status for name, status in found}


def test_the_real_tree_keeps_every_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = contract_statuses(result.stdout)
    assert len(statuses) == 8, result.stdout
    assert set(statuses.values()) == {"KEPT"}, result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("codexd_trio/store/documents.py", "import quart",
         "nothing below codexd's web layer imports Quart or Hypercorn"),
        ("codexd_trio/store/eventlog.py", "from codexd_trio.web import envelope",
         "store and protocol never import the web layer"),
        ("codexd_trio/protocol/jsonrpc.py", "import codexd_trio.core.service",
         "codexd_trio layers"),
        ("codexd_trio/client/_http.py", "from codexd_trio.store import documents",
         "the client speaks HTTP"),
        ("codexd_trio/base/process.py", "import conductor_trio.config",
         "codexd_trio never imports conductor_trio"),
        ("conductor_trio/lease/file.py", "import conductor_trio.service",
         "conductor_trio layers"),
        ("conductor_trio/service.py", "import hypercorn",
         "nothing below the conductor's web layer imports Quart or Hypercorn"),
        ("conductor_trio/web/proxy.py", "from codexd_trio.core import hub",
         "conductor_trio uses codexd's client"),
    ],
)
def test_a_planted_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, planted: str, contract: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by tests/test_layers.py\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout
    statuses = contract_statuses(result.stdout)
    assert any(name.startswith(contract) and status == "BROKEN"
               for name, status in statuses.items()), result.stdout


def _modules() -> list[Path]:
    roots = [REPO / p for p in (*PACKAGES, "scripts", "bench")]
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_is_over_450_lines() -> None:
    modules = _modules()
    assert len(modules) > 50  # the walk found the project
    long = {
        str(p.relative_to(REPO)): n
        for p in modules
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"over {MAX_MODULE_LINES} lines (split along a seam): {long}"
