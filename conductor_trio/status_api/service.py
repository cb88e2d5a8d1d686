"""The status-api: a separate, read-only process that shows the conductor's status.

``status-api start`` (console script) or ``python -m conductor_trio.status_api start``; default
``127.0.0.1:4318``. Routes: ``/healthz``, ``/describe``, ``/v1/status``, ``/v1/status/ui``, ``/``,
``/metrics``, ``/openapi.json``.
When the conductor cannot be read, ``/v1/status`` still answers 200 with
``source: "unreachable"`` and the reason, so the page says so instead of failing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec
import trio
from quart import Response
from quart_trio import QuartTrio

from codexd_trio.base.contracts import now_iso
from codexd_trio.base.logsetup import resolve_log_file, resolve_log_format, setup_logging
from codexd_trio.base.metrics import AppMetrics
from codexd_trio.web import CallerPolicy
from codexd_trio.web.app import WebSetup, install, serve_app
from codexd_trio.web.envelope import envelope as ok
from codexd_trio.web.openapi import described_routes
from conductor_trio import __version__
from conductor_trio._process import fail, first_leaf, print_ready, stop_on_signal
from conductor_trio.config import (
    ConfigError,
    StatusApiConfig,
    add_status_api_flags,
    resolve_status_api,
)
from conductor_trio.contracts import (
    ConductorUnreachable,
    OwnMetrics,
    RouteInfo,
    StatusApiDescribe,
    StatusApiHealth,
    StatusApiPart,
    UnreachableStatus,
)
from conductor_trio.health import count_families
from conductor_trio.web.api_doc import status_api_openapi, status_api_ops
from conductor_trio.web.status_page import render_page

PROG = "status-api"

# The routes /describe lists are the operations of /openapi.json (one source).
_ROUTE_INFO = msgspec.convert(described_routes(status_api_ops()), list[RouteInfo])


class StatusApi:
    """The status-api's state: its config and an HTTP client to the conductor.

    **Resource handling:** :meth:`serve` owns the HTTP client and the server.
    """

    def __init__(self, config: StatusApiConfig) -> None:
        self.config = config
        self.http = httpx.AsyncClient(base_url=config.conductor_base,
                                      timeout=config.conductor_timeout_s)
        self.started = time.monotonic()
        self.stopping = trio.Event()
        self.url: str | None = None
        self.metrics = AppMetrics("status_api")

    async def snapshot(self) -> dict[str, Any] | UnreachableStatus:
        """The conductor's ``/v1/status`` data, or an ``unreachable`` snapshot.

        The conductor's data is relayed as it came (plus ``status_api``), not decoded into
        :class:`~conductor_trio.contracts.StatusSnapshot`: a conductor of another version
        still shows.
        """
        base = self.config.conductor_base
        try:
            with trio.fail_after(self.config.conductor_timeout_s + 1):
                response = await self.http.get("/v1/status")
            body = response.json()
            if response.status_code != 200 or not body.get("ok"):
                raise ValueError(f"HTTP {response.status_code}")
            data: dict[str, Any] = body["data"]
        except (httpx.HTTPError, trio.TooSlowError, ValueError, KeyError) as exc:
            reason = str(exc) or type(exc).__name__
            return UnreachableStatus(
                observed_at=now_iso(),
                conductor=ConductorUnreachable(base_url=base, error=reason),
                warnings=[f"conductor unreachable at {base}: {reason}"],
            )
        data["source"] = "conductor"
        own = count_families(self.metrics.render().decode(), "status_api")
        data["status_api"] = StatusApiPart(
            observed_at=now_iso(), conductor_base=base,
            metrics=OwnMetrics(path="/metrics", ok=own > 0, families=own))
        return data

    def app(self) -> QuartTrio:
        app = QuartTrio("conductor_trio.status_api")
        install(
            app,
            WebSetup(
                name="status-api",
                policy=CallerPolicy(
                    daemon="status-api",
                    listen_host=self.config.listen_host,
                    allowed_hosts=self.config.allowed_hosts,
                    allowed_origins=self.config.allowed_origins,
                    host_setting="--allowed-host (BAA_STATUS_API_ALLOWED_HOSTS)",
                ),
                log=logging.getLogger("status_api.api"),
                metrics=self.metrics,
                openapi=status_api_openapi,
                max_body_bytes=64 * 1024,
            ),
        )

        @app.get("/healthz")
        async def healthz() -> Response:
            return ok(StatusApiHealth(pid=os.getpid(),
                                      uptime_s=round(time.monotonic() - self.started, 3)))

        @app.get("/describe")
        async def describe() -> Response:
            return ok(StatusApiDescribe(name="status-api", surface="read-only",
                                        version=__version__,
                                        conductor_base=self.config.conductor_base,
                                        routes=_ROUTE_INFO))

        @app.get("/v1/status")
        async def status() -> Response:
            return ok(await self.snapshot())

        page_headers = {"Cache-Control": "no-store"}
        # The console is the conductor's (the status-api is read-only): link it where it is.
        console = f"{self.config.conductor_base.rstrip('/')}/console"

        def page() -> Response:
            return Response(render_page("node status", console_href=console),
                            content_type="text/html; charset=utf-8", headers=page_headers)

        @app.get("/v1/status/ui")
        async def status_ui() -> Response:
            return page()

        @app.get("/")
        async def index() -> Response:
            return page()

        return app

    def begin_stop(self) -> None:
        self.stopping.set()

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Serve until :meth:`begin_stop` or cancellation; ``started(url)`` once listening."""
        try:
            await serve_app(
                self.app(),
                self.config.listen_host,
                self.config.listen_port,
                shutdown_trigger=self.stopping.wait,
                graceful_timeout=3.0,
                errorlog=logging.getLogger("status_api.http"),
                task_status=task_status,
            )
        finally:
            # Shielded: under a cancel, httpx's close would otherwise leave pooled sockets open.
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.http.aclose()


async def run_status_api(config: StatusApiConfig) -> None:
    """Serve until SIGTERM/SIGINT; print the ready line once listening."""
    api = StatusApi(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(stop_on_signal, api.begin_stop)

        async def serve(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            await api.serve(task_status=task_status)
            nursery.cancel_scope.cancel(reason="status-api stopped")

        print_ready("status-api", await nursery.start(serve))


def main(argv: Sequence[str] | None = None) -> int:
    """``status-api start|config``; returns the exit status."""
    parser = argparse.ArgumentParser(prog=PROG, description="Read-only status of the node.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_status_api_flags(sub.add_parser("start", help="run in the foreground"))
    add_status_api_flags(sub.add_parser("config", help="print the resolved configuration"))
    args = parser.parse_args(argv)
    try:
        config = resolve_status_api(args)
    except ConfigError as exc:
        return fail(PROG, str(exc), 2)
    # Checked for every command, so `config` does not print a setting `start` would refuse.
    try:
        log_format = resolve_log_format(args.log_format)
    except ValueError as exc:
        return fail(PROG, str(exc), 2)
    log_file = resolve_log_file(args.log_file, "BAA_STATUS_API_LOG_FILE")
    if args.command == "config":
        sys.stdout.write(json.dumps(config.as_json(), indent=2) + "\n")
        return 0
    try:
        setup_logging(log_format, log_file=log_file)
    except OSError as exc:
        return fail(PROG, f"cannot open the log file {log_file}: {exc.strerror or exc}", 2)
    status = 0
    try:
        trio.run(run_status_api, config)
    except* OSError as group:
        leaf = first_leaf(group)
        reason = leaf.strerror if isinstance(leaf, OSError) and leaf.strerror else str(leaf)
        status = fail(PROG, f"cannot serve on {config.local_api}: {reason}", 1)
    return status

