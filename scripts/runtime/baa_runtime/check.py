"""Static checks of one rendered (or installed) plist or unit: loading it, then what it must say.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from baa_runtime.common import (
    APP_SERVER,
    DEFAULT_CODEXD_BASE,
    DEFAULT_CONDUCTOR_API,
    DEFAULT_EVENT_STREAM_PATH,
    DEFAULT_GRACE_S,
    DEFAULT_STATUS_API,
    KNOWN_SERVICES,
    MODULES,
    ORIGIN_VARS,
    SECRET_WORDS,
    SYSTEM_PATH,
    TOKEN_VARS,
    UsageError,
    _which,
    bad_origins,
    check_listen_endpoint,
    endpoint_problem,
    is_loopback,
    listen_problem,
    parse_external_endpoint,
    service_of_label,
    split_base,
)

# --------------------------------------------------------------------------- static checks


@dataclass
class Loaded:
    """A rendered plist or unit, normalised to the fields the checks look at."""

    path: Path
    service: str
    kind: str  # "plist" | "unit"
    program: list[str]
    working_dir: str
    env: dict[str, str]
    stdout_path: str
    stderr_path: str
    stop_timeout: int | None
    restart_ok: bool
    restart_detail: str
    extra: dict[str, str]


def _load_plist(path: Path, problems: list[str]) -> Loaded | None:
    try:
        with path.open("rb") as f:
            data = plistlib.load(f)
    except (OSError, plistlib.InvalidFileException, ValueError) as exc:
        problems.append(f"{path}: not a readable plist ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: plist top level is not a dictionary")
        return None
    service = service_of_label(str(data.get("Label", "")))
    if service is None:
        problems.append(f"{path}: Label {data.get('Label')!r} is not a baa service label")
        return None
    keep = data.get("KeepAlive")
    restart_ok = keep == {"SuccessfulExit": False} and data.get("RunAtLoad") is True
    exit_timeout = data.get("ExitTimeOut")
    program = data.get("ProgramArguments")
    env = data.get("EnvironmentVariables")
    return Loaded(
        path=path,
        service=service,
        kind="plist",
        program=[str(a) for a in program] if isinstance(program, list) else [],
        working_dir=str(data.get("WorkingDirectory", "")),
        env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
        stdout_path=str(data.get("StandardOutPath", "")),
        stderr_path=str(data.get("StandardErrorPath", "")),
        stop_timeout=exit_timeout if isinstance(exit_timeout, int) else None,
        restart_ok=restart_ok,
        restart_detail=(
            "RunAtLoad must be true and KeepAlive must be {SuccessfulExit: false} "
            f"(got RunAtLoad={data.get('RunAtLoad')!r}, KeepAlive={keep!r})"
        ),
        extra={"ThrottleInterval": str(data.get("ThrottleInterval", ""))},
    )


def _unit_directives(text: str) -> Iterator[tuple[str, str, str]]:
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        yield section, key.strip(), value.strip()


def _unescape(value: str) -> str:
    return value.replace("%%", "%")


def _load_unit(path: Path, problems: list[str]) -> Loaded | None:
    try:
        text = path.read_text()
    except OSError as exc:
        problems.append(f"{path}: not readable ({exc})")
        return None
    name = path.name
    service = name[len("baa-") : -len(".service")] if name.startswith("baa-") else ""
    if service not in KNOWN_SERVICES or not name.endswith(".service"):
        problems.append(f"{path}: not a baa unit (expected baa-<service>.service)")
        return None
    svc: dict[str, str] = {}
    env: dict[str, str] = {}
    for section, key, value in _unit_directives(text):
        if section != "Service":
            continue
        if key == "Environment":
            for word in shlex.split(value):
                k, _, v = _unescape(word).partition("=")
                env[k] = v
        else:
            svc[key] = value
    program = [_unescape(w).replace("$$", "$") for w in shlex.split(svc.get("ExecStart", ""))]

    def append_target(key: str) -> str:
        value = _unescape(svc.get(key, ""))
        return value[len("append:") :] if value.startswith("append:") else ""

    try:
        stop_timeout: int | None = int(svc.get("TimeoutStopSec", ""))
    except ValueError:
        stop_timeout = None
    restart_ok = svc.get("Restart") == "on-failure"
    return Loaded(
        path=path,
        service=service,
        kind="unit",
        program=program,
        working_dir=_unescape(svc.get("WorkingDirectory", "")),
        env=env,
        stdout_path=append_target("StandardOutput"),
        stderr_path=append_target("StandardError"),
        stop_timeout=stop_timeout,
        restart_ok=restart_ok,
        restart_detail=f"Restart must be on-failure (got {svc.get('Restart')!r})",
        extra={
            "KillMode": svc.get("KillMode", ""),
            "KillSignal": svc.get("KillSignal", ""),
        },
    )


def _vendored_codex(repo: Path) -> list[Path]:
    return sorted(
        p
        for p in (repo / "vendor" / "codex" / "node_modules" / "@openai").glob(
            "codex-*/vendor/*/bin/codex"
        )
        if p.is_file()
    )




def spawn_command_problems(item: Loaded, need_dir: Callable[[str, str], None]) -> list[str]:
    """codexd's strategy spawn: the command it spawns resolves, with 'app-server' among its
    arguments, and the child's working directory exists."""
    problems: list[str] = []
    where, env = item.path.name, item.env
    repo = Path(env.get("BAA_CODEXD_REPO_ROOT") or item.working_dir or ".")
    command = env.get("BAA_CODEXD_SERVER_COMMAND", "codex")
    if command == "codex":
        if not _vendored_codex(repo) and not env.get("BAA_CODEX_BIN"):
            problems.append(
                f"{where}: app-server command 'codex' needs the vendored binary under "
                f"{repo}/vendor/codex (run scripts/setup.sh)"
            )
    elif "/" in command:
        if not (Path(command).is_file() and os.access(command, os.X_OK)):
            problems.append(f"{where}: app-server command is not executable: {command}")
    elif _which(command, env.get("PATH", SYSTEM_PATH)) is None:
        problems.append(f"{where}: app-server command {command!r} is not on the service PATH")
    args = env.get("BAA_CODEXD_SERVER_ARGS", "app-server").split()
    if "app-server" not in args:
        problems.append(
            f"{where}: app-server arguments must include 'app-server', got {' '.join(args)!r}"
        )
    cwd = env.get("BAA_CODEXD_SERVER_CWD", "")
    if cwd:
        need_dir("app-server cwd (BAA_CODEXD_SERVER_CWD)", cwd)
    return problems


def listen_endpoint(item: Loaded) -> str | None:
    """The endpoint an app-server service listens on (its ``--listen`` argument)."""
    program = item.program
    if len(program) >= 2 and program[-2] == "--listen":
        return program[-1]
    return None


def app_server_problems(item: Loaded, pending_dirs: Sequence[Path] = ()) -> list[str]:
    """The app-server service's program: ``<native codex> … app-server … --listen <endpoint>``,
    the binary exists, the endpoint is one codexd and codex accept, the socket's folder exists."""
    where, program = item.path.name, item.program
    endpoint = listen_endpoint(item)
    if endpoint is None or "app-server" not in program[1:-2]:
        return [
            f"{where}: program must be '<codex> app-server --listen <endpoint>', "
            f"got {' '.join(program)!r}"
        ]
    problems: list[str] = []
    binary = Path(program[0])
    if not binary.is_absolute():
        problems.append(f"{where}: the codex binary must be an absolute path, got {program[0]!r}")
    elif not (binary.is_file() and os.access(binary, os.X_OK)):
        problems.append(
            f"{where}: codex binary {binary} does not exist or is not executable "
            "(run scripts/setup.sh, or render with --server-command)"
        )
    elif binary.name == "codex.js":
        problems.append(
            f"{where}: {binary} is the npm launcher; run the native binary it starts "
            "(killing the launcher orphans the app-server)"
        )
    try:
        check_listen_endpoint(endpoint)
        kind, path, _ = parse_external_endpoint(endpoint)
    except UsageError as exc:
        problems.append(f"{where}: --listen {endpoint}: {exc}")
        return problems
    folder = Path(path).parent
    if kind == "unix" and folder not in pending_dirs and not folder.is_dir():
        problems.append(
            f"{where}: the folder of the app-server socket does not exist: {folder} "
            "(install-launchd.sh creates it)"
        )
    return problems


def check_loaded(item: Loaded, pending_dirs: Sequence[Path] = ()) -> list[str]:
    """Static checks of one rendered file; returns one line per problem.

    ``pending_dirs`` are directories an install is about to create; their absence is not a
    problem (used by ``check-launchd.sh --dry-run``).
    """
    problems: list[str] = []
    where = f"{item.path.name}"
    pending = {str(p) for p in pending_dirs}

    def need_dir(what: str, raw: str) -> None:
        if not raw:
            problems.append(f"{where}: {what} is not set")
        elif not Path(raw).is_absolute():
            problems.append(f"{where}: {what} must be an absolute path, got {raw}")
        elif raw in pending:
            return
        elif not Path(raw).is_dir():
            problems.append(f"{where}: {what} does not exist: {raw}")

    if item.service == APP_SERVER:
        problems.extend(app_server_problems(item, pending_dirs))
    else:
        module = MODULES[item.service]
        if item.program[1:] != ["-m", module, "start"] or not item.program:
            problems.append(
                f"{where}: program must be '<python> -m {module} start', "
                f"got {' '.join(item.program)!r}"
            )
        elif not (Path(item.program[0]).is_file() and os.access(item.program[0], os.X_OK)):
            problems.append(
                f"{where}: python {item.program[0]} does not exist "
                "(run scripts/setup.sh in the repo)"
            )
    for arg in item.program:
        if any(word in arg.lower() for word in SECRET_WORDS):
            problems.append(f"{where}: program arguments carry a secret-looking value: {arg!r}")
    need_dir("WorkingDirectory", item.working_dir)
    if not item.restart_ok:
        problems.append(f"{where}: {item.restart_detail}")

    grace_raw = item.env.get("BAA_CODEXD_SHUTDOWN_GRACE_S", str(DEFAULT_GRACE_S))
    try:
        grace = float(grace_raw)
    except ValueError:
        problems.append(f"{where}: BAA_CODEXD_SHUTDOWN_GRACE_S is not a number: {grace_raw!r}")
        grace = DEFAULT_GRACE_S
    stop_key = "ExitTimeOut" if item.kind == "plist" else "TimeoutStopSec"
    if item.stop_timeout is None:
        problems.append(f"{where}: {stop_key} is not set")
    elif item.stop_timeout <= grace:
        problems.append(
            f"{where}: {stop_key} ({item.stop_timeout}s) must be longer than codexd's shutdown "
            f"grace ({grace:g}s)"
        )
    if item.kind == "plist":
        try:
            if int(item.extra["ThrottleInterval"]) < 1:
                raise ValueError
        except ValueError:
            problems.append(f"{where}: ThrottleInterval must be a positive whole number")
    else:
        if item.extra["KillMode"] not in ("mixed", "control-group"):
            problems.append(
                f"{where}: KillMode must be mixed or control-group, got {item.extra['KillMode']!r}"
            )
        if item.extra["KillSignal"] not in ("SIGTERM", "TERM", "15"):
            signal = item.extra["KillSignal"]
            problems.append(f"{where}: KillSignal must be SIGTERM, got {signal!r}")

    for what, raw in (("stdout log", item.stdout_path), ("stderr log", item.stderr_path)):
        if not raw:
            problems.append(f"{where}: {what} path is not set")
            continue
        need_dir(f"{what} dir", str(Path(raw).parent))

    env = item.env
    for var, (what, _flag) in TOKEN_VARS.items():
        if var in env:
            problems.append(f"{where}: {var} is written inline; use {var}_FILE instead")
        token_file = env.get(f"{var}_FILE", "")
        if token_file:
            token_path = Path(token_file)
            if not token_path.is_file():
                problems.append(f"{where}: {what} file does not exist: {token_file}")
            elif token_path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                problems.append(
                    f"{where}: {what} file is readable by others (chmod 600): {token_file}"
                )
            elif (
                os.access(token_path, os.R_OK)
                and not token_path.read_text(errors="replace").strip()
            ):
                problems.append(f"{where}: {what} file is empty: {token_file}")
    for var in ORIGIN_VARS.values():
        for origin in bad_origins(env.get(var, "")):
            # The daemon refuses to start on it (exit 2), so launchd/systemd would restart-loop.
            problems.append(f"{where}: {var}: {origin!r} is not an origin like http://host:port")

    def need_loopback(var: str) -> None:
        base = env.get(var, DEFAULT_CODEXD_BASE)
        try:
            host, _ = split_base(var, base)
        except UsageError as exc:
            problems.append(f"{where}: {exc}")
            return
        if not is_loopback(host):
            problems.append(
                f"{where}: codexd listen address is not loopback: {host} ({var}={base})"
            )

    def need_url(var: str, default: str, allowed_var: str = "") -> None:
        # With allowed_var, var is a listen address: non-loopback needs the allow-list entry.
        base = env.get(var, default)
        try:
            split_base(var, base)
            problem = (
                listen_problem(var, base, allowed_var, env.get(allowed_var, ""))
                if allowed_var
                else None
            )
        except UsageError as exc:
            problem = str(exc)
        if problem:
            problems.append(f"{where}: {problem}")

    if item.service == "codexd":
        need_loopback("BAA_CODEXD_LOCAL_API_BASE")
        stream = env.get("BAA_CODEXD_EVENT_STREAM_PATH", DEFAULT_EVENT_STREAM_PATH)
        if not stream.startswith("/") or any(c.isspace() for c in stream) or "?" in stream:
            problems.append(f"{where}: event stream path must start with '/', got {stream!r}")
        need_dir("logs dir (BAA_CODEXD_LOGS_DIR)", env.get("BAA_CODEXD_LOGS_DIR", ""))
        need_dir("state dir (BAA_CODEXD_STATE_DIR)", env.get("BAA_CODEXD_STATE_DIR", ""))
        strategy = env.get("BAA_CODEXD_SERVER_STRATEGY", "spawn")
        problem = endpoint_problem(strategy, env.get("BAA_CODEXD_SERVER_ENDPOINT", ""))
        if problem:
            # codexd would refuse to start (exit 2) and the service manager would restart-loop.
            problems.append(f"{where}: BAA_CODEXD_SERVER_STRATEGY={strategy}: {problem}")
        if strategy != "external":
            problems.extend(spawn_command_problems(item, need_dir))
        if env.get("CODEX_HOME"):
            need_dir("CODEX_HOME", env["CODEX_HOME"])
    elif item.service == APP_SERVER:
        if env.get("CODEX_HOME"):
            need_dir("CODEX_HOME", env["CODEX_HOME"])
    elif item.service == "conductor":
        need_loopback("BAA_CODEXD_LOCAL_API_BASE")
        need_url(
            "BAA_CONDUCTOR_LOCAL_API",
            DEFAULT_CONDUCTOR_API,
            "BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS",
        )
        role = env.get("BAA_CONDUCTOR_ROLE", "primary")
        if role not in ("primary", "standby"):
            problems.append(f"{where}: BAA_CONDUCTOR_ROLE must be primary or standby, got {role!r}")
        need_dir("state dir (BAA_CONDUCTOR_STATE_DIR)", env.get("BAA_CONDUCTOR_STATE_DIR", ""))
        need_dir("logs dir (BAA_CONDUCTOR_LOGS_DIR)", env.get("BAA_CONDUCTOR_LOGS_DIR", ""))
    else:
        need_url("BAA_STATUS_API_LOCAL_API", DEFAULT_STATUS_API, "BAA_STATUS_API_ALLOWED_HOSTS")
        need_url("BAA_CONDUCTOR_LOCAL_API", DEFAULT_CONDUCTOR_API)
    return problems
