"""Edges of the caller guard that the mutation run (issue 29 §2, ``scripts/mutation.sh
callers``) found no in-process test holding: the 421's hint naming the setting that allows a
host (``tests/test_phone_security.py`` holds it against a running conductor, out of the
mutation run's reach)."""

from __future__ import annotations

import json

from codexd_trio.web.callers import CallerGuard, CallerPolicy
from tests.test_callers import PORT, Recorder, _refusal, _scope

SETTING = "--allowed-host (BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS)"
TAILNET = "mini.tailnet.ts.net"


def test_the_421_names_the_setting_that_allows_a_host() -> None:
    # A person who reaches the conductor by its tailnet name learns from the refusal which
    # setting allows that name: in the message they read and in details.setting for a UI.
    policy = CallerPolicy(daemon="conductor", listen_host="127.0.0.1", host_setting=SETTING)
    refusal = _refusal(policy, _scope(headers={"host": TAILNET}))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (421, "host_not_allowed")
    assert refusal.message == (
        f"conductor does not answer to the host '{TAILNET}'; to allow it, list it with {SETTING}")
    assert refusal.details == {"host": TAILNET, "setting": SETTING}
    # A name it answers to passes; the hint is only for a refused one.
    assert _refusal(policy, _scope(headers={"host": f"localhost:{PORT}"})) is None


async def test_the_421_hint_reaches_the_caller_in_the_json_error() -> None:
    policy = CallerPolicy(daemon="codexd", listen_host="127.0.0.1",
                          host_setting="--allowed-host (BAA_CODEXD_ALLOWED_HOSTS)")
    rec = Recorder()
    await CallerGuard(rec.app, policy)(_scope(headers={"host": TAILNET}), rec.receive, rec.send)
    assert not rec.reached
    start, body = rec.sent
    assert start["status"] == 421
    error = json.loads(body["body"])["error"]
    assert error["details"] == {"host": TAILNET,
                                "setting": "--allowed-host (BAA_CODEXD_ALLOWED_HOSTS)"}
    assert error["message"].endswith(
        "; to allow it, list it with --allowed-host (BAA_CODEXD_ALLOWED_HOSTS)")


def test_a_daemon_without_a_host_setting_gives_no_hint() -> None:
    # Nothing to point at: the 421 says only what was refused (no dangling "list it with").
    refusal = _refusal(CallerPolicy(daemon="codexd", listen_host="127.0.0.1"),
                       _scope(headers={"host": TAILNET}))
    assert refusal is not None
    assert refusal.message == f"codexd does not answer to the host '{TAILNET}'"
    assert refusal.details == {"host": TAILNET}
