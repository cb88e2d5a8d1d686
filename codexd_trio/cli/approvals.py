"""``codexd approvals`` (what Codex is asking), ``codexd approve`` and ``codexd decline``."""

from __future__ import annotations

import getpass
import json
import uuid

import msgspec

from codexd_trio.base.contracts import Approval
from codexd_trio.cli.connect import (
    EXIT_OK,
    abbreviations,
    find_approval,
    find_session,
    resolve_target,
    run_client,
    short_id,
)
from codexd_trio.cli.parsers import Parser, add_json, client_parser
from codexd_trio.cli.render import approval_subject
from codexd_trio.cli.sessions import age, table
from codexd_trio.client import CodexdClient
from codexd_trio.core.config import CodexdConfig

ID_HELP = "the approval's id, or a unique prefix of it (approval-1c9e..., 1c9e)"


def approvals_parser() -> Parser:
    parser = client_parser(
        "approvals", "List what Codex is waiting for you to approve (sessions made with "
        "--approvals clients): id, session, kind, what it asks. Decide with codexd approve "
        "or codexd decline.")
    parser.add_argument("--all", "-a", action="store_true",
                        help="decided and expired approvals too (codexd keeps the latest)")
    parser.add_argument("--session", metavar="SESSION", default=None,
                        help="only this session's (an id or a unique prefix)")
    add_json(parser, "the approvals as JSON ({\"approvals\": [...]})")
    return parser


def approve_parser() -> Parser:
    parser = client_parser("approve", "Let Codex go ahead with what it asked.")
    parser.add_argument("approval", metavar="ID", help=ID_HELP)
    parser.add_argument("--for-session", action="store_true",
                        help="and do not ask again for the same kind of thing in this session "
                        "(Codex's acceptForSession)")
    add_json(parser, "the decided approval as JSON")
    return parser


def decline_parser() -> Parser:
    parser = client_parser("decline", "Refuse what Codex asked; the turn goes on without it.")
    parser.add_argument("approval", metavar="ID", help=ID_HELP)
    parser.add_argument("--cancel", action="store_true",
                        help="refuse and interrupt the turn (Codex's cancel)")
    add_json(parser, "the decided approval as JSON")
    return parser


def approval_rows(approvals: list[Approval]) -> list[str]:
    short = abbreviations(a.approvalId for a in approvals)
    rows = [["APPROVAL", "SESSION", "STATE", "ASKED", "WHAT"]]
    for a in approvals:
        outcome = a.state if a.decision is None else f"{a.decision} ({a.decidedBy or '?'})"
        rows.append([short[a.approvalId], short_id(a.sessionId or "-"), outcome,
                     age(a.createdAt), approval_subject(msgspec.to_builtins(a))])
    return table(rows)


def cmd_approvals(config: CodexdConfig, extra: list[str]) -> int:
    opts = approvals_parser().parse_args(extra)
    target = resolve_target(config, opts.via_conductor)

    async def run(client: CodexdClient) -> int:
        approvals = await client.list_approvals(None if opts.all else "pending")
        if opts.session is not None:
            session = await find_session(client, opts.session)
            approvals = [a for a in approvals if a.sessionId == session.sessionId]
        approvals.sort(key=lambda a: a.createdAt)
        if opts.json:
            print(json.dumps({"approvals": msgspec.to_builtins(approvals)}, indent=2))
        elif not approvals:
            print("nothing to approve" if not opts.all else "no approvals")
        else:
            print("\n".join(approval_rows(approvals)))
        return EXIT_OK

    return run_client(target, run)


def _decide(config: CodexdConfig, via: str | None, text: str, decision: str,
            as_json: bool) -> int:
    target = resolve_target(config, via)

    async def run(client: CodexdClient) -> int:
        approval = await find_approval(client, text)
        decided = await client.decide_approval(
            approval.approvalId, decision, decided_by=f"cli:{_user()}",
            idempotency_key=f"cli-{uuid.uuid4()}")
        print(json.dumps(msgspec.to_builtins(decided), indent=2) if as_json
              else f"approval {decided.approvalId}: {decided.decision} "
                   f"({approval_subject(msgspec.to_builtins(decided))})")
        return EXIT_OK

    return run_client(target, run)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return "unknown"


def cmd_approve(config: CodexdConfig, extra: list[str]) -> int:
    opts = approve_parser().parse_args(extra)
    decision = "acceptForSession" if opts.for_session else "accept"
    return _decide(config, opts.via_conductor, opts.approval, decision, opts.json)


def cmd_decline(config: CodexdConfig, extra: list[str]) -> int:
    opts = decline_parser().parse_args(extra)
    decision = "cancel" if opts.cancel else "decline"
    return _decide(config, opts.via_conductor, opts.approval, decision, opts.json)
