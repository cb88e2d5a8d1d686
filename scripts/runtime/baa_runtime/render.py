"""Rendering: the launchd plists and systemd units filled from ``launchd/`` and ``systemd/``.
"""

from __future__ import annotations

import plistlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from baa_runtime.common import _PLACEHOLDER, APP_SERVER, UsageError, label, unit_name
from baa_runtime.config import RuntimeConfig, TemplateValue, service_environment, template_values

# --------------------------------------------------------------------------- rendering


def _fill_plist(node: Any, values: Mapping[str, TemplateValue], env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)
    if isinstance(node, list):
        items: list[Any] = []
        for item in node:
            filled = _fill_plist(item, values, env)
            if isinstance(item, str) and isinstance(filled, list):
                items.extend(filled)  # a list placeholder (ProgramArguments) becomes its words
            else:
                items.append(filled)
        return items
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, item in node.items():
            if key == "EnvironmentVariables":
                # The template names the variables; the renderer owns their values so that
                # launchd and systemd get exactly the same environment.
                out[key] = dict(env)
                continue
            filled = _fill_plist(item, values, env)
            if filled != "":
                out[key] = filled
        return out
    return node


def render_plist(config: RuntimeConfig, service: str, template_dir: Path) -> bytes:
    template = template_dir / f"{label(service)}.plist.in"
    with template.open("rb") as f:
        data = plistlib.load(f)
    env = service_environment(config, service)
    unknown = sorted(
        set(env) - set(data.get("EnvironmentVariables", {})) - {k for k, _ in config.extra_env}
    )
    if unknown:
        raise UsageError(f"{template} does not list environment variables {', '.join(unknown)}")
    rendered = _fill_plist(data, template_values(config, service), env)
    return plistlib.dumps(rendered, fmt=plistlib.FMT_XML, sort_keys=False)


def _systemd_escape(value: str) -> str:
    return value.replace("%", "%%")


def _systemd_word(value: str) -> str:
    """One ExecStart word: specifiers and ``$`` escaped, quoted when it has spaces."""
    value = _systemd_escape(value).replace("$", "$$")
    if re.search(r"[\s\"'\\;]", value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _systemd_env_line(key: str, value: str) -> str:
    quoted = _systemd_escape(f"{key}={value}").replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{quoted}"'


def render_unit(config: RuntimeConfig, service: str, template_dir: Path) -> bytes:
    template = (template_dir / f"baa-{service}.service.in").read_text()
    values = template_values(config, service)
    escaped: dict[str, str] = {
        k: _systemd_escape(str(v)) for k, v in values.items() if not isinstance(v, list)
    }
    escaped["PYTHON"] = _systemd_word(str(config.python))
    escaped["EXEC_START"] = " ".join(
        _systemd_word(word) for word in (config.app_server_argv if service == APP_SERVER else [])
    )
    if config.scope != "daemon":
        escaped["USER_NAME"] = ""
    env_lines = [_systemd_env_line(k, v) for k, v in service_environment(config, service).items()]
    out = [
        f"# Rendered by scripts/runtime/render.py from systemd/baa-{service}.service.in;",
        "# edit the template or the flags and re-run scripts/runtime/install-launchd.sh.",
    ]
    lines = template.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)  # the template's own header talks about placeholders
    for line in lines:
        if line.startswith("#"):
            out.append(line)
            continue
        if line.strip() == "@ENVIRONMENT@":
            out.extend(env_lines)
            continue
        names = _PLACEHOLDER.findall(line)
        if any(escaped[name] == "" for name in names):
            # An optional setting that is not configured: drop the whole directive.
            continue
        out.append(_PLACEHOLDER.sub(lambda m: escaped[m.group(1)], line))
    return ("\n".join(out) + "\n").encode()


def rendered_name(config: RuntimeConfig, service: str) -> str:
    return f"{label(service)}.plist" if config.manager == "launchd" else unit_name(service)


def render_all(config: RuntimeConfig, template_root: Path) -> dict[str, tuple[str, bytes]]:
    """Render every selected service; returns ``{service: (file name, bytes)}``."""
    out: dict[str, tuple[str, bytes]] = {}
    for service in config.services:
        if config.manager == "launchd":
            body = render_plist(config, service, template_root / "launchd")
        else:
            body = render_unit(config, service, template_root / "systemd")
        out[service] = (rendered_name(config, service), body)
    return out


def dirs_to_create(config: RuntimeConfig) -> list[Path]:
    return [config.logs_dir, config.manager_logs_dir, config.state_dir]
