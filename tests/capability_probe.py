"""Not collected by the suite (the name does not start with ``test_``): run by
``tests/test_capabilities.py`` to see what a missing capability does to a run."""

from __future__ import annotations

import pytest

from tests.capabilities import missing, reason


def test_needs_etcd_in_its_body() -> None:
    missing("etcd", "the probe pretends etcd is missing")


@pytest.mark.skipif(True, reason=reason("browser", "the probe pretends chromium is missing"))
def test_needs_a_browser_by_its_mark() -> None:
    raise AssertionError("never runs")


def test_skips_for_another_reason() -> None:
    pytest.skip("not a capability: never a failure")
