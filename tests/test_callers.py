"""The caller guard at the ASGI level, in process: each rule of CONTRACT.md "Who may call", its
order, its answer, and what passes through untouched (``tests/test_security.py`` holds the same
rules against the running daemons, and a real browser in ``test_browser_attack.py``)."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from codexd_trio.web.callers import (
    LOOPBACK_NAMES,
    CallerGuard,
    CallerPolicy,
    Refusal,
    bearer_matches,
    guard,
)

PORT = 4319


def _scope(kind: str = "http", *, method: str = "GET", path: str = "/v1/codexd/status",
           headers: dict[str, str] | None = None, query: bytes = b"",
           server: tuple[str, int] | None = ("127.0.0.1", PORT),
           extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": kind, "method": method, "path": path, "query_string": query,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in (headers or {"host": f"127.0.0.1:{PORT}"}).items()],
        "server": server,
    }
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


def _refusal(policy: CallerPolicy, scope: dict[str, Any]) -> Refusal | None:
    try:
        CallerGuard(_never, policy).check(scope)
    except Refusal as refusal:
        return refusal
    return None


async def _never(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not reached")


CODEXD = CallerPolicy(daemon="codexd", listen_host="127.0.0.1")


def test_bearer_matches_only_the_exact_token_in_a_bearer_header() -> None:
    assert bearer_matches("Bearer s3cret", "s3cret")
    assert bearer_matches("bearer s3cret ", "s3cret")  # scheme case, trailing space
    assert not bearer_matches("Bearer s3cre", "s3cret")
    assert not bearer_matches("Basic s3cret", "s3cret")
    assert not bearer_matches("Bearers3cret", "s3cret")
    assert not bearer_matches("", "s3cret")
    assert not bearer_matches(None, "s3cret")


def test_host_names_and_origins() -> None:
    policy = CallerPolicy(daemon="conductor", listen_host="[::1]",
                          allowed_hosts=("Mini.Tailnet",),
                          allowed_origins=("http://phone.example:8080/", "not an origin"))
    names = policy.host_names("10.0.0.7")
    assert names == LOOPBACK_NAMES | {"mini.tailnet", "10.0.0.7"}
    assert policy.host_names(None) == LOOPBACK_NAMES | {"mini.tailnet"}
    origins = policy.origins(["localhost", "::1"], 4317)
    assert origins == {"http://localhost:4317", "http://[::1]:4317",
                       "http://phone.example:8080"}
    assert policy.origins(["localhost"], 80) == {"http://localhost", "http://phone.example:8080"}
    assert "http://localhost" in policy.origins(["localhost"], None)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (f"127.0.0.1:{PORT}", True),
        (f"localhost:{PORT}", True),
        ("localhost", True),  # no port: the default one is not compared
        (f"[::1]:{PORT}", True),
        (f"LOCALHOST:{PORT}", True),
        (f"evil.example:{PORT}", False),  # DNS rebinding
        ("127.0.0.1:9999", False),  # another port
        ("", False),
        ("127.0.0.1:notaport", False),
    ],
)
def test_the_host_header_must_name_this_daemon(host: str, allowed: bool) -> None:
    refusal = _refusal(CODEXD, _scope(headers={"host": host}))
    if allowed:
        assert refusal is None
    else:
        assert refusal is not None
        assert (refusal.status, refusal.code) == (421, "host_not_allowed")
        assert refusal.details == {"host": host}


def test_no_host_header_is_not_refused() -> None:
    assert _refusal(CODEXD, _scope(headers={})) is None


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (f"http://127.0.0.1:{PORT}", True),
        (f"http://localhost:{PORT}", True),
        ("https://evil.example", False),
        (f"http://127.0.0.1:{PORT + 1}", False),
        ("null", False),
        ("garbage", False),
    ],
)
def test_an_origin_must_be_the_daemons_own_or_configured(origin: str, allowed: bool) -> None:
    refusal = _refusal(CODEXD, _scope(headers={"host": f"127.0.0.1:{PORT}", "origin": origin}))
    if allowed:
        assert refusal is None
    else:
        assert refusal is not None
        assert (refusal.status, refusal.code) == (403, "origin_not_allowed")
        assert refusal.details == {"origin": origin}
    configured = CallerPolicy(daemon="codexd", listen_host="127.0.0.1",
                              allowed_origins=("https://evil.example",))
    assert _refusal(configured, _scope(headers={
        "host": f"127.0.0.1:{PORT}", "origin": "https://evil.example"})) is None


def test_a_configured_token_is_needed_except_on_exempt_paths() -> None:
    policy = CallerPolicy(daemon="codexd", listen_host="127.0.0.1", token="tok")
    host = {"host": f"127.0.0.1:{PORT}"}
    refusal = _refusal(policy, _scope(headers=host))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (401, "unauthorized")
    assert refusal.details == {"header": "Authorization"}
    assert _refusal(policy, _scope(headers={**host, "authorization": "Bearer tok"})) is None
    assert _refusal(policy, _scope(headers={**host, "authorization": "Bearer no"})) is not None
    assert _refusal(policy, _scope(path="/healthz", headers=host)) is None
    # ?token= counts for a websocket upgrade (browsers cannot set its headers), never for HTTP.
    assert _refusal(policy, _scope("websocket", headers=host, query=b"token=tok")) is None
    assert _refusal(policy, _scope("websocket", headers=host,
                                   query=b"token=no&token=tok")) is None  # the last counts
    assert _refusal(policy, _scope("websocket", headers=host, query=b"token=no")) is not None
    assert _refusal(policy, _scope("websocket", headers=host, query=b"")) is not None
    assert _refusal(policy, _scope(headers=host, query=b"token=tok")) is not None


@pytest.mark.parametrize(
    ("method", "content_type", "allowed"),
    [
        ("POST", "application/json", True),
        ("POST", "Application/JSON; charset=utf-8", True),
        ("PUT", "application/json", True),
        ("POST", "text/plain", False),
        ("PATCH", "application/x-www-form-urlencoded", False),
        ("POST", None, False),
        ("GET", None, True),
        ("DELETE", None, True),
    ],
)
def test_a_body_must_be_json(method: str, content_type: str | None, allowed: bool) -> None:
    headers = {"host": f"127.0.0.1:{PORT}"}
    if content_type is not None:
        headers["content-type"] = content_type
    refusal = _refusal(CODEXD, _scope(method=method, headers=headers))
    if allowed:
        assert refusal is None
    else:
        assert refusal is not None
        assert (refusal.status, refusal.code) == (415, "unsupported_media_type")
        assert refusal.details == {"contentType": content_type}


def test_the_rules_apply_in_order() -> None:
    policy = CallerPolicy(daemon="codexd", listen_host="127.0.0.1", token="tok")
    every_rule_broken = {"host": "evil.example", "origin": "https://evil.example",
                         "content-type": "text/plain"}
    codes = []
    for drop in ([], ["host"], ["host", "origin"]):
        headers = {k: v for k, v in every_rule_broken.items() if k not in drop}
        refusal = _refusal(policy, _scope(method="POST", headers=headers))
        assert refusal is not None
        codes.append(refusal.code)
    assert codes == ["host_not_allowed", "origin_not_allowed", "unauthorized"]
    refusal = _refusal(policy, _scope(method="POST", headers={
        "content-type": "text/plain", "authorization": "Bearer tok"}))
    assert refusal is not None
    assert refusal.code == "unsupported_media_type"


def test_a_refusal_body_is_the_error_envelope() -> None:
    body = json.loads(Refusal(403, "origin_not_allowed", "no", origin="x").body())
    assert body == {"ok": False, "error": {"code": "origin_not_allowed", "message": "no",
                                           "details": {"origin": "x"}}}


class Recorder:
    def __init__(self, incoming: list[dict[str, Any]] | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.incoming = incoming or []
        self.reached = False

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        self.reached = True
        self.called_with = (scope, receive, send)

    async def receive(self) -> MutableMapping[str, Any]:
        return self.incoming.pop(0)

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(dict(message))


async def test_an_allowed_request_and_lifespan_reach_the_app() -> None:
    for scope in (_scope(), {"type": "lifespan"}):
        rec = Recorder()
        await CallerGuard(rec.app, CODEXD)(scope, rec.receive, rec.send)
        assert rec.reached
        assert rec.called_with == (scope, rec.receive, rec.send)
        assert rec.sent == []


async def test_a_refused_http_request_is_answered_without_the_app() -> None:
    rec = Recorder()
    await CallerGuard(rec.app, CODEXD)(_scope(headers={"host": "evil.example"}),
                                       rec.receive, rec.send)
    assert not rec.reached
    start, body = rec.sent
    assert start["type"] == "http.response.start"
    assert start["status"] == 421
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert body["type"] == "http.response.body"
    assert json.loads(body["body"])["error"]["code"] == "host_not_allowed"


async def test_a_refused_websocket_is_answered_before_it_is_accepted() -> None:
    bad = {"host": "evil.example"}
    rec = Recorder([{"type": "websocket.connect"}])
    scope = _scope("websocket", headers=bad, extensions={"websocket.http.response": {}})
    await CallerGuard(rec.app, CODEXD)(scope, rec.receive, rec.send)
    assert not rec.reached
    start, body = rec.sent
    assert (start["type"], start["status"]) == ("websocket.http.response.start", 421)
    assert b"connection" not in dict(start["headers"])
    assert body["type"] == "websocket.http.response.body"
    assert json.loads(body["body"])["error"]["code"] == "host_not_allowed"
    # Without the extension: a plain close (the server answers 403 itself).
    rec = Recorder([{"type": "websocket.connect"}])
    await CallerGuard(rec.app, CODEXD)(_scope("websocket", headers=bad), rec.receive, rec.send)
    assert rec.sent == [{"type": "websocket.close", "code": 1008}]
    # The client went away before connecting: nothing to answer.
    rec = Recorder([{"type": "websocket.disconnect"}])
    await CallerGuard(rec.app, CODEXD)(_scope("websocket", headers=bad), rec.receive, rec.send)
    assert rec.sent == []


def test_guard_installs_itself_in_front_of_the_app() -> None:
    class App:
        def __init__(self) -> None:
            self.asgi_app: Any = _never

    app = App()
    guard(app, CODEXD)
    assert isinstance(app.asgi_app, CallerGuard)
    assert app.asgi_app.app is _never
    assert app.asgi_app.policy is CODEXD


def test_each_refusal_says_which_daemon_and_why() -> None:
    policy = CallerPolicy(daemon="conductor", listen_host="127.0.0.1", token="tok")
    host = {"host": f"127.0.0.1:{PORT}"}
    messages = []
    for headers, method in (({"host": "evil.example"}, "GET"),
                            ({**host, "origin": "https://evil.example"}, "GET"),
                            (host, "GET"),
                            ({**host, "authorization": "Bearer tok"}, "POST")):
        refusal = _refusal(policy, _scope(method=method, headers=headers))
        assert refusal is not None
        assert str(refusal) == refusal.message
        messages.append(refusal.message)
    assert messages == [
        "conductor does not answer to the host 'evil.example'",
        "conductor does not serve requests from the origin 'https://evil.example'",
        "conductor needs Authorization: Bearer <token> (a token is configured)",
        "request bodies must be sent as Content-Type: application/json",
    ]


def test_host_names_are_compared_lowercase_and_without_brackets() -> None:
    policy = CallerPolicy(daemon="conductor", listen_host="Mini.Local",
                          allowed_hosts=("[fd00::7]",))
    assert {"mini.local", "fd00::7"} <= policy.host_names(None)
    assert "myhost" in policy.host_names("MyHost")
    assert "fd00::9" in policy.host_names("[fd00::9]")
    for host in (f"mini.local:{PORT}", f"MINI.local:{PORT}", f"[fd00::7]:{PORT}"):
        assert _refusal(policy, _scope(headers={"host": host})) is None, host
    # The address the daemon is bound to is a name it answers to.
    bound = _scope(headers={"host": f"10.0.0.7:{PORT}"}, server=("10.0.0.7", PORT))
    assert _refusal(policy, bound) is None
    assert _refusal(policy, _scope(headers={"host": f"10.0.0.7:{PORT}"})) is not None


def test_only_the_media_type_of_a_content_type_counts() -> None:
    headers = {"host": f"127.0.0.1:{PORT}",
               "content-type": "application/json; charset=utf-8; profile=x"}
    assert _refusal(CODEXD, _scope(method="POST", headers=headers)) is None


def test_a_websocket_scope_without_a_query_string_needs_the_header() -> None:
    policy = CallerPolicy(daemon="codexd", listen_host="127.0.0.1", token="tok")
    scope = _scope("websocket")
    del scope["query_string"]
    refusal = _refusal(policy, scope)
    assert refusal is not None
    assert refusal.code == "unauthorized"
