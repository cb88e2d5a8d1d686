"""Static checks across the installed set: codexd's token as codexd and the conductor see it, an
external app-server endpoint that something serves; :func:`check_files` runs every check.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from baa_runtime.check import Loaded, _load_plist, _load_unit, check_loaded, listen_endpoint
from baa_runtime.common import APP_SERVER, UsageError, label, parse_external_endpoint, unit_name


def _load(path: Path, problems: list[str]) -> Loaded | None:
    loader = _load_plist if path.suffix == ".plist" else _load_unit
    return loader(path, problems)


def _peer(item: Loaded, service: str, peer_dirs: Sequence[Path]) -> Loaded | None:
    """The other service's file of the same kind, beside ``item`` or in one of ``peer_dirs``."""
    name = f"{label(service)}.plist" if item.kind == "plist" else unit_name(service)
    for folder in (item.path.parent, *peer_dirs):
        candidate = folder / name
        if candidate.is_file():
            # Its own problems are reported when it is checked itself, not here.
            return _load(candidate, [])
    return None


def _token_text(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip() or None
    except OSError:
        return None


def codexd_token_problem(codexd: Loaded, conductor: Loaded) -> str | None:
    """Why the conductor could not call codexd: codexd wants a token the conductor does not have.

    The same file is what ``--codexd-token-file`` renders; two different files holding the same
    token work too, so they are compared by content when both are readable.
    """
    wanted = codexd.env.get("BAA_CODEXD_TOKEN_FILE", "")
    if not wanted:
        return None
    given = conductor.env.get("BAA_CODEXD_TOKEN_FILE", "")
    where = conductor.path.name
    if not given:
        return (
            f"{where}: BAA_CODEXD_TOKEN_FILE is not set, but codexd ({codexd.path.name}) requires "
            f"the token in {wanted}: the conductor could not call codexd "
            "(render both with --codexd-token-file)"
        )
    if given == wanted:
        return None
    token = _token_text(given)
    if token is not None and token == _token_text(wanted):
        return None
    return (
        f"{where}: BAA_CODEXD_TOKEN_FILE is {given}, but codexd ({codexd.path.name}) reads its "
        f"token from {wanted}: the conductor could not call codexd "
        "(render both with --codexd-token-file)"
    )


def external_problems(
    codexd: Loaded, app: Loaded | None, pending_dirs: Sequence[Path], app_checked: bool = True
) -> tuple[list[str], list[str]]:
    """(problems, warnings) of codexd's strategy external against what should listen there.

    A unix socket that does not exist is a problem when nothing is meant to create it (a typo,
    or Codex's own daemon is not started), and only a warning when the app-server service is
    installed (it is not running, or not yet): codexd retries the endpoint with backoff.
    Nothing is said while an install is about to create the socket's folder and start the
    service (``pending_dirs``). ``app_checked`` is false when the app-server service is not among
    the files checked but an installed copy beside them: one listening elsewhere is then left
    over from an earlier setup (a warning), not a pair rendered wrong (a problem).
    """
    problems: list[str] = []
    warnings: list[str] = []
    where = codexd.path.name
    strategy = codexd.env.get("BAA_CODEXD_SERVER_STRATEGY", "spawn")
    if strategy != "external":
        if app is not None:
            warnings.append(
                f"{app.path.name}: codexd ({where}) uses strategy {strategy!r}: it spawns its own "
                "app-server and never attaches to this one (remove the service, or render codexd "
                "with --server-strategy external)"
            )
        return problems, warnings
    endpoint = codexd.env.get("BAA_CODEXD_SERVER_ENDPOINT", "")
    try:
        kind, path, _ = parse_external_endpoint(endpoint)
    except UsageError:
        return problems, warnings  # check_loaded reported it
    if app is not None and listen_endpoint(app) != endpoint:
        if app_checked:
            problems.append(
                f"{where}: codexd attaches to {endpoint}, but {app.path.name} listens on "
                f"{listen_endpoint(app)}: render both with the same --server-endpoint"
            )
            return problems, warnings
        warnings.append(
            f"{app.path.name} (installed) listens on {listen_endpoint(app)}, but codexd "
            f"({where}) attaches to {endpoint}: remove it if nothing else uses it"
        )
        app = None
    if kind != "unix":
        return problems, warnings
    socket_path = Path(path)
    if socket_path.exists():  # follows links (codex links PATH to its real socket)
        if not socket_path.is_socket():
            problems.append(f"{where}: {endpoint}: {path} exists but is not a socket")
    elif app is None:
        problems.append(
            f"{where}: nothing listens at {endpoint}: {path} does not exist (start Codex's "
            "daemon, 'codex app-server daemon start', and use its socketPath; or render the "
            "app-server service with --external-app-server)"
        )
    elif socket_path.parent not in pending_dirs:
        warnings.append(
            f"{where}: {path} does not exist: the app-server service {app.path.name} is "
            "installed but not listening (is it running? scripts/runtime/status-launchd.sh "
            f"--service {APP_SERVER}); codexd retries until it is"
        )
    return problems, warnings


def check_files(
    paths: Sequence[Path],
    pending_dirs: Sequence[Path] = (),
    peer_dirs: Sequence[Path] = (),
    warnings: list[str] | None = None,
) -> list[str]:
    """Check each file, then the codexd/conductor pair and the codexd/app-server pair: with one
    of a pair among ``paths``, the other is looked for beside it and in ``peer_dirs`` (the
    installed copies). Warnings (nothing that stops a service from working) go to ``warnings``."""
    problems: list[str] = []
    loaded: dict[str, Loaded] = {}
    for path in paths:
        item = _load(path, problems)
        if item is not None:
            problems.extend(check_loaded(item, pending_dirs))
            loaded.setdefault(item.service, item)
    if "codexd" in loaded or "conductor" in loaded:
        codexd = loaded.get("codexd") or _peer(loaded["conductor"], "codexd", peer_dirs)
        conductor = loaded.get("conductor") or _peer(loaded["codexd"], "conductor", peer_dirs)
        if codexd is not None and conductor is not None:
            problem = codexd_token_problem(codexd, conductor)
            if problem:
                problems.append(problem)
    if "codexd" in loaded or APP_SERVER in loaded:
        codexd = loaded.get("codexd") or _peer(loaded[APP_SERVER], "codexd", peer_dirs)
        if codexd is not None:
            app = loaded.get(APP_SERVER) or _peer(codexd, APP_SERVER, peer_dirs)
            more, said = external_problems(codexd, app, pending_dirs, APP_SERVER in loaded)
            problems.extend(more)
            if warnings is not None:
                warnings.extend(said)
    return problems
