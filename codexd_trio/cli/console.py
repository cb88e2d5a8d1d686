"""``codexd console``: a Trio REPL (like ``python -m trio``) with a connected client in scope.

Top-level ``await`` works: ``await client.status()``, ``await client.create_session()``.
The console reads input in a worker thread and runs each statement on the Trio loop, so the
client's connection pool and any websocket opened in the console live on that one loop.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import sys
from code import InteractiveConsole
from types import CodeType, FunctionType
from typing import Any

import outcome
import trio

from codexd_trio.core.config import CodexdConfig

BANNER = """codexd console (Trio {trio}) connected to {base}
In scope: client (CodexdClient), trio, config, Scenario helpers in codexd_trio.testing.
Use "await" directly, e.g.  await client.status()   s = await client.create_session()
Exit with Ctrl-D."""


class AsyncConsole(InteractiveConsole):
    """An InteractiveConsole whose code runs on the Trio loop, with top-level await."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        super().__init__(locals=namespace)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

    def runcode(self, code: CodeType) -> None:
        func = FunctionType(code, self.locals)
        if inspect.iscoroutinefunction(func):
            result = trio.from_thread.run(outcome.acapture, func)
        else:
            result = trio.from_thread.run_sync(outcome.capture, func)
        if isinstance(result, outcome.Error):
            if isinstance(result.error, SystemExit):
                raise result.error
            error = result.error
            sys.excepthook(type(error), error, error.__traceback__)


def run_console(config: CodexdConfig) -> int:
    from codexd_trio.client import CodexdClient

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history when available)

    async def main() -> None:
        async with CodexdClient(config.local_api_base, token=config.token) as client:
            namespace: dict[str, Any] = {
                "__name__": "__console__",
                "client": client,
                "trio": trio,
                "config": config,
            }
            console = AsyncConsole(namespace)
            banner = BANNER.format(trio=trio.__version__, base=config.local_api_base)
            await trio.to_thread.run_sync(partial_interact(console, banner))

    trio.run(main)
    return 0


def partial_interact(console: AsyncConsole, banner: str) -> Any:
    def interact() -> None:
        console.interact(banner=banner, exitmsg="")

    return interact
