"""The conductor's and the status-api's HTTP operations for ``GET /openapi.json``.

The proxied ``/v1/codex/*`` routes answer what codexd answers, so they reuse codexd's
operations (:func:`codexd_trio.web.api_doc.codexd_ops`) under the conductor's prefix, plus the
conductor's own refusals.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from codexd_trio.web.api_doc import codexd_ops
from codexd_trio.web.openapi import Op, Param, build
from conductor_trio import __version__
from conductor_trio.contracts import (
    ActionBody,
    ActionDone,
    CodexView,
    ConductorDescribe,
    ConductorHealth,
    DeviceList,
    ModeState,
    OneDevice,
    PairedDevice,
    PairingCode,
    PairingRequest,
    PairRequest,
    Ready,
    Runtime,
    StatusApiDescribe,
    StatusApiHealth,
    StatusSnapshot,
    UnreachableStatus,
)
from conductor_trio.web.access import WRITE_METHODS
from conductor_trio.web.fleet_doc import fleet_ops

__all__ = [
    "conductor_openapi", "conductor_ops", "conductor_websockets", "status_api_openapi",
    "status_api_ops",
]

# The status-api relays the conductor's snapshot, or says it could not read it.
_RELAYED_STATUS = StatusSnapshot | UnreachableStatus

# codexd routes the conductor answers itself instead: status is its own view at /v1/codex;
# the queue hold follows the conductor's mode (/v1/system/*), never a client's say-so.
_NOT_PROXIED = frozenset({"/v1/codex/status", "/v1/codex/hold"})
# Refusals of new work by mode, per proxied write.
_MODE_REFUSALS = {
    ("POST", "/v1/codex/sessions"): ("system_paused",),
    ("POST", "/v1/codex/turn"): ("system_paused", "system_draining"),
    ("POST", "/v1/codex/sessions/{session_id}/fork"): ("system_paused",),
    ("POST", "/v1/codex/sessions/{session_id}/compact"): ("system_paused", "system_draining"),
    ("POST", "/v1/codex/sessions/{session_id}/review"): ("system_paused", "system_draining"),
}


def conductor_ops(mode_change: Any, *, exposed: bool, codex_auth: bool = False) -> list[Op]:
    """The conductor's operations.

    Args:
        exposed: it listens beyond loopback (proxied writes need the shared token).
        codex_auth: codexd has a token, so every ``/v1/codex/*`` route needs the caller's own
            credential (:mod:`conductor_trio.web.access`).
    """
    proxied = []
    for op in codexd_ops(prefix="/v1/codex", events_path="/v1/codex/events"):
        # codexd routes the conductor does not proxy (status has its own view at /v1/codex).
        if not op.path.startswith("/v1/codex/") or op.path in _NOT_PROXIED:
            continue
        extra = ("codexd_unavailable", *_MODE_REFUSALS.get((op.method, op.path), ()))
        if op.method in WRITE_METHODS:
            # A standby of an etcd lease refuses writes (BAA_CONDUCTOR_STANDBY_WRITES=refuse).
            extra += ("not_leader",)
        if codex_auth or (exposed and op.method in WRITE_METHODS):
            extra += ("unauthorized",)
        proxied.append(replace(op, summary=f"{op.summary} (proxied to codexd)",
                               errors=(*op.errors, *extra)))
    mode_errors = ("unauthorized",)
    codex_ops = [*proxied]
    return [
        Op("GET", "/healthz", "liveness", data=ConductorHealth, auth_exempt=True),
        Op("GET", "/readyz", "200 when leader (a fleet node: or standby)", data=Ready,
           errors=("not_ready",)),
        Op("GET", "/rolez", "leader, standby or degraded", media="text/plain"),
        Op("GET", "/describe", "routes, auth and codex backend", data=ConductorDescribe),
        Op("GET", "/v1/runtime", "node, role, lease, loops, paths", data=Runtime),
        Op("GET", "/v1/codex", "codex backend status", data=CodexView),
        Op("GET", "/v1/codex/metrics", "codexd's Prometheus metrics (proxied to codexd)",
           media="text/plain",
           errors=("codexd_unavailable", *(("unauthorized",) if codex_auth else ()))),
        *proxied,
        Op("GET", "/v1/system/state", "mode, lease, active turns", data=ModeState),
        Op("POST", "/v1/system/pause", "pause new work", data=ModeState, body=mode_change,
           body_required=False, errors=mode_errors),
        Op("POST", "/v1/system/resume", "resume", data=ModeState, body=mode_change,
           body_required=False, errors=mode_errors),
        Op("POST", "/v1/system/drain", "refuse new turns, let running ones finish",
           data=ModeState, body=mode_change, body_required=False, errors=mode_errors),
        *device_ops(),
        *fleet_ops(codex_ops),
        Op("GET", "/v1/status", "status snapshot", data=StatusSnapshot),
        Op("GET", "/v1/status/ui", "status page", media="text/html"),
        Op("GET", "/", "links: console, status page, describe", media="text/html"),
        Op("GET", "/console", "operator console (HTML, same origin)", media="text/html"),
        Op("GET", "/console/{name}", "the console's modules, style sheet and icon",
           media="text/javascript", more_media=("text/css", "image/svg+xml")),
        Op("GET", "/console/vendor/{name}",
           "the console's vendored Markdown renderer and sanitizer, with their licences",
           media="text/javascript", more_media=("text/plain",)),
        Op("GET", "/metrics", "Prometheus metrics", media="text/plain"),
        Op("GET", "/openapi.json", "this document (OpenAPI 3.1, not an envelope)",
           envelope=False),
    ]


def device_ops() -> list[Op]:
    """Pairing, devices and one-tap action links (issue 25; conductor_trio.web.devices and
    .actions)."""
    action_params = (Param("t", "query", {"type": "string"}, "the link's signed token",
                           required=True),)
    action_path = "/v1/actions/{approval_id}/{decision}"
    return [
        Op("POST", "/v1/system/pairings", "a one-time pairing code and its URL (5 minutes)",
           data=PairingCode, status=201, body=PairingRequest, body_required=False,
           errors=("unauthorized",)),
        Op("POST", "/v1/pair", "exchange a pairing code for a device token", data=PairedDevice,
           status=201, body=PairRequest, errors=("pairing_code_invalid", "rate_limited")),
        Op("GET", "/v1/devices/me", "the device whose token is presented", data=OneDevice,
           errors=("unauthorized",)),
        Op("DELETE", "/v1/devices/me", "forget this device (revokes its token)",
           data=OneDevice, errors=("unauthorized",)),
        Op("GET", "/v1/system/devices", "every paired device", data=DeviceList,
           errors=("unauthorized",)),
        Op("DELETE", "/v1/system/devices/{device_id}",
           "revoke a device: refused at once, its relay websockets closed", data=OneDevice,
           errors=("unauthorized",)),
        Op("GET", action_path, "a one-tap action link's page (never decides)",
           media="text/html", params=action_params, error_media=("text/html",),
           errors=("action_invalid", "action_used", "action_expired", "codexd_unavailable")),
        Op("POST", action_path, "use a one-tap action link: decide that one approval",
           data=ActionDone, body=ActionBody, body_required=False, params=action_params,
           errors=("action_invalid", "action_used", "action_expired", "approval_resolved",
                   "child_unavailable", "codexd_unavailable")),
    ]


def conductor_websockets(*, codex_auth: bool = False) -> list[dict[str, Any]]:
    relay: dict[str, Any] = {
        "path": "/v1/codex/events",
        "summary": "live event stream relayed from codexd (?after=&sessionId=&batch=1)",
    }
    if codex_auth:
        # Browsers cannot set headers on an upgrade: ?token= does there what the header does.
        relay.update(auth=True, summary=relay["summary"] + "; Authorization or ?token=")
    fleet = {"path": "/v1/fleet/sessions/{session_id}/events", "auth": True,
             "summary": "a session's live events from its node (?after=&batch=1); "
             "Authorization or ?token="}
    return [relay, fleet]


def conductor_openapi(mode_change: Any, *, exposed: bool, codex_auth: bool = False
                      ) -> dict[str, Any]:
    return build(
        title="conductor",
        version=__version__,
        description="The node API (CONTRACT.md): probes, runtime, system mode, status, and "
        "the codex proxy to codexd.",
        ops=conductor_ops(mode_change, exposed=exposed, codex_auth=codex_auth),
        websockets=conductor_websockets(codex_auth=codex_auth),
    )


def status_api_ops() -> list[Op]:
    return [
        Op("GET", "/healthz", "liveness", data=StatusApiHealth, auth_exempt=True),
        Op("GET", "/describe", "this list", data=StatusApiDescribe),
        Op("GET", "/openapi.json", "this document (OpenAPI 3.1, not an envelope)",
           envelope=False),
        Op("GET", "/metrics", "Prometheus metrics", media="text/plain"),
        Op("GET", "/v1/status", "the conductor's status snapshot (source: unreachable if not)",
           data=_RELAYED_STATUS),
        Op("GET", "/v1/status/ui", "status page", media="text/html"),
        Op("GET", "/", "status page", media="text/html"),
    ]


def status_api_openapi() -> dict[str, Any]:
    return build(title="status-api", version=__version__,
                 description="Read-only status of the node.", ops=status_api_ops())
