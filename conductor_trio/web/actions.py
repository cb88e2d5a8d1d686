"""One-tap action links (issue 25): ``/v1/actions/{approval_id}/{accept|decline}?t=…``.

* ``POST`` (what ntfy's ``http`` action button sends, ``Content-Type: application/json``, body
  ``{}`` or empty): spends the link and decides that one approval on codexd, answering with the
  envelope. Used twice, late, with another approval's id or another decision, it is refused
  (409 ``action_used``, 410 ``action_expired``, 403 ``action_invalid``) and nothing is decided.
* ``GET`` (a plain link in a mail, a chat message, a notification without buttons): a small page
  saying what the approval is, with one button that makes the ``POST`` (``/console/action.js``,
  same origin); a link that cannot be used gets a page that says why. A ``GET`` never decides.

The link's token is its credential, checked by :class:`~conductor_trio.auth.actions.ActionLinks`;
the conductor then decides with its own codexd client. Host and Origin are the caller guard's,
as everywhere; a browser page elsewhere cannot POST here (JSON only, no CORS).
"""

from __future__ import annotations

import html
from urllib.parse import quote

import msgspec
from quart import Response, request
from quart_trio import QuartTrio

from codexd_trio.client import CodexdError, CodexdUnavailable
from codexd_trio.web.envelope import decode_body, envelope, error
from conductor_trio.auth.actions import ActionRefused, Retryable
from conductor_trio.contracts import ActionBody, ActionDone
from conductor_trio.service import Conductor
from conductor_trio.web.console import SECURITY_HEADERS
from conductor_trio.web.proxy import unavailable

__all__ = ["install_action_routes"]

DECIDED_BY = "notification"


def _page(title: str, text: str, status: int, *, button: str | None = None,
          detail: str = "") -> Response:
    action = (f'<button type="button" id="act" data-testid="action-confirm">{html.escape(button)}'
              '</button><script src="/console/action.js" defer></script>') if button else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><link rel="stylesheet" href="/console/console.css"></head>
<body class="action-page"><main class="card">
<h1 data-testid="action-title">{html.escape(title)}</h1>
<p data-testid="action-text">{html.escape(text)}</p>{detail}
{action}<p id="result" data-testid="action-result" role="status"></p>
<p><a href="/console">Open the console</a></p>
</main></body></html>"""
    return Response(body, status=status, content_type="text/html; charset=utf-8",
                    headers=SECURITY_HEADERS)


def install_action_routes(app: QuartTrio, conductor: Conductor) -> None:
    links = conductor.auth.actions
    client = conductor.client

    @app.get("/v1/actions/<approval_id>/<decision>")
    async def action_page(approval_id: str, decision: str) -> Response:
        try:
            links.check(approval_id, decision, request.args.get("t", ""))
        except ActionRefused as exc:
            return _page("This link cannot be used", exc.message, exc.status)
        try:
            approval = await client.get_approval(quote(approval_id, safe=""))
        except (CodexdUnavailable, CodexdError) as exc:
            return _page("The node cannot say", f"codexd did not answer: {exc}", 503)
        params = approval.params
        what = params.get("command") if isinstance(params.get("command"), str) else (
            "a file change" if approval.kind == "fileChange" else approval.kind)
        detail = (f'<pre class="output" data-testid="action-what">{html.escape(str(what))}</pre>'
                  + (f"<p>in <code>{html.escape(str(params['cwd']))}</code></p>"
                     if isinstance(params.get("cwd"), str) else ""))
        if approval.state != "pending":
            return _page("Already settled",
                         f"This approval is {approval.state}"
                         + (f" ({approval.decision} by {approval.decidedBy})"
                            if approval.decision else "") + ".", 409, detail=detail)
        verb = "Accept" if decision == "accept" else "Decline"
        return _page(f"{verb} this?", f"Codex asks (session {approval.sessionId}).", 200,
                     button=verb, detail=detail)

    @app.post("/v1/actions/<approval_id>/<decision>")
    async def action(approval_id: str, decision: str) -> Response:
        raw = await request.get_data(cache=False, as_text=False)
        assert isinstance(raw, bytes)
        if raw.strip():
            decode_body(raw, ActionBody)

        async def deliver() -> Response:
            try:
                approval = await client.decide_approval(
                    quote(approval_id, safe=""), decision, decided_by=DECIDED_BY)
            except CodexdUnavailable as exc:
                raise Retryable(str(exc)) from exc
            return envelope(ActionDone(approvalId=approval_id, decision=decision,
                                       approval=_builtins(approval)))

        try:
            return await links.spend(approval_id, decision, request.args.get("t", ""), deliver)
        except ActionRefused as exc:
            return error(exc.status, exc.code, exc.message, {"approvalId": approval_id})
        except Retryable as exc:
            return unavailable(conductor, exc)
        except CodexdError as exc:
            # codexd's own refusal (already decided elsewhere, the child gone): the link has
            # done what it could; its answer says what happened.
            return error(exc.status, exc.code, exc.message, exc.details)


def _builtins(value: object) -> dict[str, object]:
    out = msgspec.to_builtins(value)
    assert isinstance(out, dict)
    return out
