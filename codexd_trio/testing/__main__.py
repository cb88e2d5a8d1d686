"""``python -m codexd_trio.testing``: run the scripted model standalone (Echo for every call;
with ``--prompted`` each turn's prompt picks its scenario: see ``model.scenario_for_prompt``).

Prints one JSON line ``{"ready": true, "service": "scripted-model", "url": ..., "pid": ...}`` on
stdout once listening, then serves until SIGTERM or SIGINT (exit 0). Bad arguments: one line on
stderr, exit 2. Used by ``scripts/up.sh --demo``, the benchmarks and ``codexd smoke``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio

from codexd_trio.testing import Prompted, open_scripted_model

KEEP_REQUESTS = 100


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # The launcher reads stderr line by line; argparse's usage block would be several.
        raise _UsageError(message)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m codexd_trio.testing",
        description="Scripted OpenAI Responses-API model on loopback (echoes the last user text).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: pick a free one)")
    parser.add_argument(
        "--prompted",
        action="store_true",
        help="let each prompt choose its scenario "
        "(SLOW, STREAM, SHELL, PATCH, FAIL, HTTP, DROP, HANG)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise _UsageError(f"--port must be in 0..65535, got {args.port}")
    return args


async def _serve(host: str, port: int, prompted: bool) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_scripted_model(host=host, port=port) as model:
            # A standalone model serves for hours (up.sh --demo, the chaos harness): it keeps
            # only its newest requests, not every body it was ever sent.
            model.keep_requests = KEEP_REQUESTS
            if prompted:
                model.default = Prompted()
            ready = {"ready": True, "service": "scripted-model", "url": model.base_url}
            ready["pid"] = os.getpid()
            sys.stdout.write(json.dumps(ready) + "\n")
            sys.stdout.flush()
            async for _ in signals:
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    try:
        args = _parse(sys.argv[1:] if argv is None else argv)
    except _UsageError as exc:
        print(f"scripted-model: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(_serve, args.host, args.port, args.prompted)
    except OSError as exc:
        print(f"scripted-model: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
