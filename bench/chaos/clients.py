"""The clients: a table of actions a worker picks from at random, what they learned (the world
as clients know it) and the invariants checked on every answer.

**Extension point.** :data:`ACTIONS` is the one place a client action is declared: a name, a
weight and a coroutine taking a :class:`Client`. A new verb of the API (a per-session queue,
``"whenBusy": "queue"`` on ``POST /turn``; reading a transcript) is one function and one row
there; :class:`World` is where an action records what it must be held to at the end.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import trio

from bench.chaos.context import Context, digest

TIMEOUT_S = 8.0
_TURN_END = frozenset({"app-server.turn.completed", "app-server.turn.completed.missing"})


@dataclass
class Endpoints:
    """Where the clients go: codexd itself, or a conductor (one, or two sharing etcd)."""

    codexd: str
    codexd_token: str
    conductors: list[str]
    shared_token: str
    session_cwd: str
    # Updated by the leader sampler (etcd): where writes go first.
    leader: str | None = None

    def headers(self, via: str) -> dict[str, str]:
        token = self.codexd_token if via == "codexd" else self.shared_token
        return {"Authorization": f"Bearer {token}"}


@dataclass
class Answer:
    status: int
    body: bytes
    replayed: bool

    def data(self) -> Any:
        try:
            return msgspec.json.decode(self.body).get("data")
        except (msgspec.DecodeError, AttributeError):
            return None

    @property
    def code(self) -> str | None:
        try:
            error = msgspec.json.decode(self.body).get("error")
        except (msgspec.DecodeError, AttributeError):
            return None
        return error.get("code") if isinstance(error, dict) else None


@dataclass
class SessionInfo:
    session_id: str
    approvals: str
    closed: bool = False
    running: str | None = None


@dataclass
class KeyedRecord:
    op: str
    path: str
    body: Any
    answer: tuple[int, bytes] | None = None
    attempts: int = 0


@dataclass
class World:
    """What the clients were told, to hold the node to it."""

    sessions: dict[str, SessionInfo] = field(default_factory=dict)
    # turn id -> (session id, when the 202 came) for every accepted turn.
    turns: dict[str, tuple[str, float]] = field(default_factory=dict)
    keyed: dict[str, KeyedRecord] = field(default_factory=dict)
    # approval id -> the decision a 200 answered with.
    decisions: dict[str, str] = field(default_factory=dict)
    # queue id -> (session id, when the 202 said "queued") for every queued turn.
    queued: dict[str, tuple[str, float]] = field(default_factory=dict)
    # turn id -> the terminal status a transcript first showed for it.
    transcript_status: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    def active(self) -> list[SessionInfo]:
        return [s for s in self.sessions.values() if not s.closed]

    def on_event(self, event: dict[str, Any]) -> None:
        """Follow turns from the stream, so steer/interrupt aim at running ones."""
        session = self.sessions.get(str(event.get("sessionId")))
        if session is None:
            return
        kind, turn_id = event.get("type"), event.get("turnId")
        if kind == "turn.accepted" and not (event.get("detail") or {}).get("settled"):
            session.running = turn_id
        elif kind in _TURN_END and session.running == turn_id:
            session.running = None
        elif kind == "session.closed":
            session.closed = True


@dataclass
class Client:
    """One worker's view: the run, the world, where to go and its own generator."""

    ctx: Context
    world: World
    ep: Endpoints
    http: httpx.AsyncClient
    rng: random.Random
    who: str

    def via(self) -> str:
        return self.rng.choice(("codexd", "conductor"))

    async def call(self, op: str, method: str, path: str, *, via: str | None = None,
                   body: Any = None, key: str | None = None) -> Answer | None:
        """One request; ``path`` is codexd's (``/v1/codexd/...``), rewritten for a conductor.
        None when the request did not get an answer (refused, reset, timed out)."""
        via = via or self.via()
        headers = self.ep.headers(via)
        if key is not None:
            headers["Idempotency-Key"] = key
        content = None
        if method == "POST":
            headers["Content-Type"] = "application/json"
            content = msgspec.json.encode(body if body is not None else {})
        for _ in range(2):
            base = self.ep.codexd
            target = path
            if via == "conductor":
                base = self.ep.leader if (method == "POST" and self.ep.leader) else (
                    self.rng.choice(self.ep.conductors))
                target = path.replace("/v1/codexd/", "/v1/codex/", 1)
            started = time.perf_counter()
            try:
                response = await self.http.request(method, base + target, content=content,
                                                   headers=headers)
            except httpx.HTTPError as exc:
                self.ctx.request(op, via, time.perf_counter() - started, "transport")
                self.ctx.log(self.who, f"{op} via {via}: {type(exc).__name__}")
                return None
            answer = Answer(response.status_code, response.content,
                            response.headers.get("Idempotency-Replayed") == "true")
            outcome = str(answer.status) + (f" {answer.code}" if answer.status >= 400 else "")
            self.ctx.request(op, via, time.perf_counter() - started, outcome)
            self.ctx.check("no_internal_errors")
            if answer.status == 500:
                self.ctx.violation("no_internal_errors",
                                   f"{op} via {via} answered 500: {answer.body[:300]!r}",
                                   op=op, via=via)
            self.ctx.log(self.who, f"{op} via {via} -> {answer.status} {answer.code or ''}"
                         f"{' (replayed)' if answer.replayed else ''}")
            if answer.status == 503 and answer.code == "not_leader":
                leader = ((msgspec.json.decode(answer.body).get("error") or {}).get("details")
                          or {}).get("leader") or {}
                api = leader.get("localApiBase")
                if isinstance(api, str) and api.rstrip("/") in self.ep.conductors:
                    self.ep.leader = api.rstrip("/")
                    continue
            return answer
        return answer

    async def keyed(self, op: str, path: str, body: Any, key: str,
                    via: str | None = None) -> Answer | None:
        """A keyed POST, checked against every earlier 2xx answer under the same key."""
        record = self.world.keyed.setdefault(key, KeyedRecord(op, path, body))
        record.attempts += 1
        answer = await self.call(op, "POST", path, via=via, body=body, key=key)
        if answer is not None and 200 <= answer.status < 300:
            self.ctx.check("keyed_retry_same_answer")
            if record.answer is None:
                record.answer = (answer.status, answer.body)
            elif record.answer != (answer.status, answer.body):
                self.ctx.violation(
                    "keyed_retry_same_answer",
                    f"{op} with Idempotency-Key {key} answered {answer.status} with another "
                    f"body than before ({record.answer[0]})",
                    key=key, first=record.answer[1][:400].decode(errors="replace"),
                    again=answer.body[:400].decode(errors="replace"),
                    replayed=answer.replayed)
        return answer

    def maybe_key(self, p: float = 0.4) -> str | None:
        return f"chaos-{self.ctx.run_id[:8]}-{self.world.next_id()}" if (
            self.rng.random() < p) else None


# --------------------------------------------------------------------------------------------
# What a turn asks the scripted model to do (``model.scenario_for_prompt``).

PROMPTS: list[tuple[float, Callable[[int], str]]] = [
    (30, lambda n: f"ECHO: hello {n}"),
    (20, lambda n: f"SLOW 30 6: a short slow answer {n}"),
    (10, lambda n: f"SLOW 250 16: a long slow answer to steer or interrupt {n}"),
    (10, lambda n: f"STREAM 150: burst{n}"),
    (15, lambda n: f"SHELL: touch f-{n}.txt"),
    (5, lambda n: f"FAIL: scripted failure {n}"),
    (3, lambda n: f"HTTP 500: scripted 500 {n}"),
    (3, lambda n: "DROP:"),
    (2, lambda n: "HANG:"),
]


def prompt(rng: random.Random, n: int) -> str:
    weights = [w for w, _ in PROMPTS]
    return rng.choices(PROMPTS, weights)[0][1](n)


# --------------------------------------------------------------------------------------------
# The actions


async def create_session(c: Client) -> None:
    approvals = c.rng.choice(("clients", "clients", "decline"))
    body = {"cwd": c.ep.session_cwd, "approvalPolicy": "untrusted",
            "sandbox": "workspace-write", "approvals": approvals}
    key = c.maybe_key(0.3)
    answer = (await c.keyed("create_session", "/v1/codexd/sessions", body, key) if key
              else await c.call("create_session", "POST", "/v1/codexd/sessions", body=body))
    if answer is not None and answer.status == 201:
        session_id = answer.data()["session"]["sessionId"]
        c.world.sessions.setdefault(session_id, SessionInfo(session_id, approvals))


async def start_turn(c: Client) -> None:
    idle = [s for s in c.world.active() if s.running is None] or c.world.active()
    if not idle:
        return
    session = c.rng.choice(idle)
    n = c.world.next_id()
    body = {"sessionId": session.session_id, "input": prompt(c.rng, n)}
    key = c.maybe_key(0.4)
    if key is None:
        answer = await c.call("start_turn", "POST", "/v1/codexd/turn", body=body)
    else:
        answer = await c.keyed("start_turn", "/v1/codexd/turn", body, key)
        if c.rng.random() < 0.5:
            # The retry a client makes when it is not sure the first one arrived.
            await c.keyed("start_turn_retry", "/v1/codexd/turn", body, key)
    if answer is not None and answer.status == 202:
        turn_id = answer.data()["turnId"]
        c.world.turns.setdefault(turn_id, (session.session_id, c.ctx.now()))
        if session.running is None:
            session.running = turn_id


async def steer(c: Client) -> None:
    running = [s for s in c.world.active() if s.running]
    if not running:
        return
    session = c.rng.choice(running)
    body = {"sessionId": session.session_id, "input": f"steer {c.world.next_id()}",
            "expectedTurnId": session.running}
    await c.call("steer", "POST", "/v1/codexd/turn/steer", body=body)


async def interrupt(c: Client) -> None:
    running = [s for s in c.world.active() if s.running]
    if not running:
        return
    session = c.rng.choice(running)
    body = {"sessionId": session.session_id, "turnId": session.running}
    key = c.maybe_key(0.2)
    if key:
        await c.keyed("interrupt", "/v1/codexd/turn/interrupt", body, key)
    else:
        await c.call("interrupt", "POST", "/v1/codexd/turn/interrupt", body=body)


async def decide_approval(c: Client) -> None:
    answer = await c.call("list_approvals", "GET", "/v1/codexd/approvals?state=pending")
    if answer is None or answer.status != 200:
        return
    pending = answer.data()["approvals"]
    if not pending:
        return
    approval_id = c.rng.choice(pending)["approvalId"]
    decision = c.rng.choice(("accept", "decline"))
    path = f"/v1/codexd/approvals/{approval_id}"
    body = {"decision": decision, "decidedBy": c.who}
    key = c.maybe_key(0.3)
    got = (await c.keyed("decide", path, body, key) if key
           else await c.call("decide", "POST", path, body=body))
    record(c, approval_id, decision, got)
    if c.rng.random() < 0.25:
        other = "decline" if decision == "accept" else "accept"
        again = await c.call("decide_again", "POST", path,
                             body={"decision": other, "decidedBy": c.who})
        record(c, approval_id, other, again)


def record(c: Client, approval_id: str, decision: str, answer: Answer | None) -> None:
    """A 200 to a decision is a promise: at most one per approval, and it is what Codex got."""
    if answer is None or answer.status != 200:
        return
    c.ctx.check("approval_decided_once")
    if answer.replayed:
        return
    earlier = c.world.decisions.get(approval_id)
    if earlier is None:
        c.world.decisions[approval_id] = decision
    else:
        c.ctx.violation("approval_decided_once",
                        f"approval {approval_id} accepted a second decision ({decision}) after "
                        f"{earlier}", approvalId=approval_id)


async def read_session(c: Client) -> None:
    if not c.world.sessions:
        return
    session = c.rng.choice(list(c.world.sessions.values()))
    answer = await c.call("read_session", "GET", f"/v1/codexd/sessions/{session.session_id}")
    if answer is None:
        return
    c.ctx.check("acknowledged_sessions_exist")
    if answer.status == 404:
        c.ctx.violation("acknowledged_sessions_exist",
                        f"session {session.session_id} was created (201) but is unknown now",
                        sessionId=session.session_id)
    elif answer.status == 200:
        for event in answer.data().get("recentEvents") or []:
            c.ctx.saw(int(event["seq"]), digest(event), f"{c.who}/recent")


async def list_sessions(c: Client) -> None:
    cursor: str | None = None
    order = c.rng.choice(("created", "activity"))
    for _ in range(3):
        query = f"?limit=20&order={order}" + (f"&cursor={cursor}" if cursor else "")
        answer = await c.call("list_sessions", "GET", "/v1/codexd/sessions" + query)
        if answer is None or answer.status != 200:
            return
        cursor = answer.data().get("nextCursor")
        if not cursor:
            return


async def events_page(c: Client) -> None:
    after = max(0, c.ctx.max_seen_seq - c.rng.randint(0, 500))
    answer = await c.call("events_page", "GET", f"/v1/codexd/events?after={after}&limit=200")
    if answer is None or answer.status != 200:
        return
    events = answer.data()["events"]
    c.ctx.check("pages_contiguous")
    previous = None
    for event in events:
        seq = int(event["seq"])
        if seq <= after or (previous is not None and seq != previous + 1):
            c.ctx.violation("pages_contiguous",
                            f"GET events?after={after} gave seq {seq} after {previous}",
                            after=after)
            return
        previous = seq
        c.ctx.saw(seq, digest(event), f"{c.who}/page")


async def close_session(c: Client) -> None:
    idle = [s for s in c.world.active() if s.running is None]
    if len(c.world.active()) <= 2 or not idle:
        return
    session = c.rng.choice(idle)
    answer = await c.call("close_session", "POST",
                          f"/v1/codexd/sessions/{session.session_id}/close", via="codexd")
    if answer is not None and answer.status == 200:
        session.closed = True


async def status(c: Client) -> None:
    if c.rng.random() < 0.5:
        await c.call("status", "GET", "/v1/codexd/status", via="codexd")
    else:
        await c.call("status", "GET", "/v1/codex", via="conductor")


async def queue_turn(c: Client) -> None:
    """A turn posted with ``whenBusy: "queue"``, aimed at a busy session so that it waits."""
    active = c.world.active()
    busy = [s for s in active if s.running] or active
    if not busy:
        return
    session = c.rng.choice(busy)
    body = {"sessionId": session.session_id, "input": prompt(c.rng, c.world.next_id()),
            "whenBusy": "queue"}
    key = c.maybe_key(0.3)
    answer = (await c.keyed("queue_turn", "/v1/codexd/turn", body, key) if key
              else await c.call("queue_turn", "POST", "/v1/codexd/turn", body=body))
    if answer is None or answer.status != 202:
        return
    data = answer.data()
    if data.get("queued"):
        c.world.queued.setdefault(str(data["queueId"]), (session.session_id, c.ctx.now()))
    else:  # the session was idle: it started at once
        c.world.turns.setdefault(str(data["turnId"]), (session.session_id, c.ctx.now()))


async def unqueue(c: Client) -> None:
    """Take a queued turn back (it may have started meanwhile: a 409, or gone: a 404)."""
    if not c.world.queued:
        return
    queue_id = c.rng.choice(sorted(c.world.queued))
    session_id = c.world.queued[queue_id][0]
    await c.call("unqueue", "DELETE", f"/v1/codexd/sessions/{session_id}/queue/{queue_id}")


async def read_transcript(c: Client) -> None:
    """The newest turns of a session: each turn once, and a turn's ending never changes."""
    if not c.world.sessions:
        return
    session = c.rng.choice(list(c.world.sessions.values()))
    answer = await c.call("read_transcript", "GET",
                          f"/v1/codexd/sessions/{session.session_id}/transcript"
                          "?order=desc&limit=10")
    if answer is None or answer.status != 200:
        return
    c.ctx.check("transcript_stable")
    turns = answer.data()["turns"]
    ids = [str(t["turnId"]) for t in turns]
    if len(set(ids)) != len(ids):
        c.ctx.violation("transcript_stable", f"a transcript page of {session.session_id} "
                        f"lists a turn twice: {ids}", sessionId=session.session_id)
    for turn in turns:
        status = turn.get("status")
        if status not in ("completed", "failed", "interrupted"):
            continue
        first = c.world.transcript_status.setdefault(str(turn["turnId"]), str(status))
        if first != status:
            c.ctx.violation("transcript_stable", f"turn {turn['turnId']} read {status} in a "
                            f"transcript after it had read {first}", turnId=turn["turnId"])


@dataclass(frozen=True)
class Action:
    weight: Callable[[World, int], float]
    run: Callable[[Client], Awaitable[None]]


def _fixed(weight: float) -> Callable[[World, int], float]:
    return lambda world, most: weight


# The one table of client actions (see the module docstring).
ACTIONS: dict[str, Action] = {
    "create_session": Action(lambda w, most: 3.0 if len(w.active()) < most else 0.0,
                             create_session),
    "start_turn": Action(_fixed(6.0), start_turn),
    "steer": Action(_fixed(2.0), steer),
    "interrupt": Action(_fixed(1.5), interrupt),
    "decide_approval": Action(_fixed(3.0), decide_approval),
    "read_session": Action(_fixed(1.0), read_session),
    "list_sessions": Action(_fixed(0.7), list_sessions),
    "events_page": Action(_fixed(1.5), events_page),
    "close_session": Action(lambda w, most: 1.0 if len(w.active()) >= most else 0.2,
                            close_session),
    "status": Action(_fixed(0.5), status),
    "queue_turn": Action(_fixed(1.5), queue_turn),
    "unqueue": Action(lambda w, most: 0.3 if w.queued else 0.0, unqueue),
    "read_transcript": Action(_fixed(1.0), read_transcript),
}


async def worker(ctx: Context, world: World, ep: Endpoints, index: int) -> None:
    """One client: picks an action from :data:`ACTIONS` at the run's rate until told to stop."""
    rng = ctx.rng(f"client-{index}")
    names = list(ACTIONS)
    rate = ctx.settings.rate / max(1, ctx.settings.workers)
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        client = Client(ctx, world, ep, http, rng, f"client-{index}")
        while not ctx.stop_clients.is_set():
            # Pacing the load, not waiting for anything.
            await trio.sleep(rng.expovariate(rate))
            weights = [ACTIONS[n].weight(world, ctx.settings.max_sessions) for n in names]
            name = rng.choices(names, weights)[0]
            with trio.move_on_after(30):
                await ACTIONS[name].run(client)
