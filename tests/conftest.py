"""Shared pytest configuration. Fixtures that several test modules need live in
``codexd_trio.testing.fixtures`` (a pytest plugin) so they are importable and typed.

Skips for a missing capability (``tests/capabilities.py``) become failures under
``BAA_REQUIRE``; otherwise the summary names what was missing.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.capabilities import CAPABILITIES, capability_of, required

pytest_plugins = ["codexd_trio.testing.fixtures"]

_missing: dict[str, int] = {}


def pytest_configure(config: pytest.Config) -> None:
    required()  # an unknown name in BAA_REQUIRE is a usage error, before anything runs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return
    capability = capability_of(str(report.longrepr[2]))
    if capability is None:
        return
    if capability in required():
        # A skipif mark (evaluated before any test code runs) lands here too.
        report.outcome = "failed"
        report.longrepr = (f"{report.longrepr[2]} — a failure: BAA_REQUIRE names "
                           f"'{capability}'")
    else:
        _missing[capability] = _missing.get(capability, 0) + 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _missing:
        return
    terminalreporter.section("missing capabilities", sep="-", yellow=True)
    for capability, count in sorted(_missing.items()):
        terminalreporter.write_line(
            f"{capability}: {count} test(s) skipped — {CAPABILITIES[capability]}")
    terminalreporter.write_line(
        "This run did not test those; CI sets BAA_REQUIRE=" + ",".join(sorted(CAPABILITIES))
        + " so that such a skip fails.")
