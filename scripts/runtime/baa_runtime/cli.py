"""The command line of ``scripts/runtime/render.py``: ``render``, ``check``, ``probe``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from baa_runtime.check_peers import check_files
from baa_runtime.common import (
    DEFAULT_CODEXD_BASE,
    DEFAULT_CONDUCTOR_API,
    DEFAULT_STATUS_API,
    SCRIPT_REPO,
    UsageError,
    split_base,
)
from baa_runtime.config import add_config_flags, default_manager, resolve_config
from baa_runtime.probe import probe_node
from baa_runtime.render import dirs_to_create, render_all

# --------------------------------------------------------------------------- command line


DESCRIPTION = (
    "Render, check and probe the node's service-manager files (launchd plists, systemd units)."
)


def _prog() -> str:
    # The shell scripts export their own name so that errors read as theirs.
    return os.environ.get("BAA_RUNTIME_PROG") or "render.py"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, exit 2: the shell scripts relay it as is.
        print(f"{_prog()}: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="render.py", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("render", help="render plists or units")
    add_config_flags(r)
    r.add_argument("--templates", default=str(SCRIPT_REPO), help="folder holding launchd/ systemd/")
    group = r.add_mutually_exclusive_group(required=True)
    group.add_argument("--out-dir")
    group.add_argument("--stdout", action="store_true")

    c = sub.add_parser("check", help="static checks of rendered files")
    c.add_argument("files", nargs="+")
    c.add_argument(
        "--pending-dir",
        action="append",
        default=[],
        help="a directory the install will create (its absence is not a problem)",
    )
    c.add_argument(
        "--peer-dir",
        action="append",
        default=[],
        help="where to find the installed codexd/conductor file that is not among FILES",
    )

    pr = sub.add_parser("probe", help="runtime probes of a running node")
    pr.add_argument("--manager", choices=("launchd", "systemd"), default=default_manager())
    pr.add_argument("--codexd-api-base", default=DEFAULT_CODEXD_BASE)
    pr.add_argument("--conductor-api", default=DEFAULT_CONDUCTOR_API)
    pr.add_argument("--status-api", default=DEFAULT_STATUS_API)
    pr.add_argument("--expect-role", default="leader", choices=("leader", "standby", "degraded"))
    pr.add_argument("--node-id", default="")
    pr.add_argument("--codexd-token-file", default="", help="codexd's token (mode 600)")
    pr.add_argument(
        "--installed-codexd",
        default="",
        help="installed codexd plist/unit whose BAA_CODEXD_TOKEN_FILE to use when none is given",
    )
    pr.add_argument("--shared-token-file", default="", help="the conductor's shared token")
    pr.add_argument(
        "--installed-conductor",
        default="",
        help="installed conductor plist/unit whose BAA_SHARED_TOKEN_FILE to use when none is "
        "given",
    )
    pr.add_argument(
        "--installed-app-server",
        default="",
        help="installed codex-app-server plist/unit (its logs; a hint when it does not listen)",
    )
    pr.add_argument("--server-strategy", default="", help="expect codexd to run this strategy")
    pr.add_argument(
        "--server-endpoint", default="", help="expect codexd to attach here (implies external)"
    )
    pr.add_argument("--logs-dir", default=str(SCRIPT_REPO / "var" / "logs"))
    pr.add_argument("--skip-logs", action="store_true")
    pr.add_argument("--timeout", default="5")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        if ns.command == "render":
            config = resolve_config(ns)
            rendered = render_all(config, Path(ns.templates))
            if ns.stdout:
                for _service, (_name, body) in rendered.items():
                    sys.stdout.write(body.decode())
                return 0
            out_dir = Path(ns.out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            for service, (name, body) in rendered.items():
                target = out_dir / name
                target.write_bytes(body)
                print(f"file\t{service}\t{target}")
            for folder in dirs_to_create(config):
                print(f"dir\t{folder}")
            if config.socket_dir is not None:
                # codex app-server --listen unix://PATH does not create the folder of PATH. Not
                # a "dir": that may be any folder (/tmp, ~/.codex), which an install must not
                # chown to --user unless it creates it.
                print(f"sockdir\t{config.socket_dir}")
            return 0
        if ns.command == "check":
            warnings: list[str] = []
            problems = check_files(
                [Path(f) for f in ns.files],
                [Path(d) for d in ns.pending_dir],
                [Path(d) for d in ns.peer_dir],
                warnings,
            )
            for line in warnings:
                # On stderr: the scripts read problems from stdout, and a warning is not one.
                print(f"warning: {line}", file=sys.stderr)
            for line in problems:
                print(line)
            return 1 if problems else 0
        for key in ("codexd_api_base", "conductor_api", "status_api"):
            split_base("--" + key.replace("_", "-"), getattr(ns, key))
        try:
            float(ns.timeout)
        except ValueError:
            raise UsageError(f"--timeout must be a number of seconds, got {ns.timeout!r}") from None
        probes = probe_node(ns)
        for item in probes:
            tag = "ok  " if item.ok else "FAIL"
            print(f"{tag} {item.what}" + (f": {item.detail}" if item.detail else ""))
        return 0 if all(item.ok for item in probes) else 1
    except UsageError as exc:
        print(f"{_prog()}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{_prog()}: {exc}", file=sys.stderr)
        return 2
