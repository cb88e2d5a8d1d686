"""Every setting has a default, an environment variable and a flag (CONTRACT.md, "Configuration"),
and codexd can be given allowed hosts ("Who may call"). Parsing is checked in-process (fast); the
one-line exit 2 and the Host rule are checked on the real processes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.base.settings import ConfigError
from codexd_trio.core.config import resolve_config
from codexd_trio.testing import ScriptedModel
from codexd_trio.testing.daemon import running_codexd
from conductor_trio.config import (
    add_conductor_flags,
    add_status_api_flags,
    resolve_conductor,
    resolve_shared_token,
    resolve_status_api,
)

GUARD = 120


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAA_")}
    env.update(extra)
    return env


def _run(module: str, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=_env(**(env or {})), timeout=60, check=False)


def _one_line_exit_2(result: subprocess.CompletedProcess[str], prog: str, needle: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{prog}: "), lines
    assert needle in lines[0], lines


def _conductor_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_conductor_flags(parser)
    return parser.parse_args(list(argv))


def _status_api_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_status_api_flags(parser)
    return parser.parse_args(list(argv))


# ------------------------------------------------------------------------------------------
# codexd


def test_codexd_request_timeout_default_env_flag() -> None:
    assert resolve_config([], {})[0].request_timeout_s == 30.0
    env = {"BAA_CODEXD_REQUEST_TIMEOUT_S": "12.5"}
    assert resolve_config([], env)[0].request_timeout_s == 12.5
    assert resolve_config(["--request-timeout", "7"], env)[0].request_timeout_s == 7.0


def test_codexd_allowed_hosts_default_env_flag() -> None:
    assert resolve_config([], {})[0].allowed_hosts == ()
    env = {"BAA_CODEXD_ALLOWED_HOSTS": "Mini.Local, [fd7a::1],10.0.0.7"}
    assert resolve_config([], env)[0].allowed_hosts == ("mini.local", "fd7a::1", "10.0.0.7")
    config, _ = resolve_config(["--allowed-host", "a.test", "--allowed-host", "b.test"], env)
    assert config.allowed_hosts == ("a.test", "b.test")
    assert config.as_json()["allowed_hosts"] == ["a.test", "b.test"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--request-timeout", "soon"], "request timeout must be a number"),
        (["--request-timeout", "0"], "request timeout must be at least"),
        (["--allowed-host", "http://mini.local"], "BAA_CODEXD_ALLOWED_HOSTS"),
        (["--allowed-host", "mini.local:4319"], "no scheme, port or path"),
        (["--allowed-host", "mini.local/x"], "BAA_CODEXD_ALLOWED_HOSTS"),
    ],
)
def test_codexd_bad_new_settings_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.split(" must")[0]):
        resolve_config(args, {})
    _one_line_exit_2(_run("codexd_trio", "config", *args), "codexd", needle)


def test_codexd_bad_env_value_is_exit_2() -> None:
    result = _run("codexd_trio", "config", env={"BAA_CODEXD_ALLOWED_HOSTS": "x.test,a b"})
    _one_line_exit_2(result, "codexd", "'a b'")


@pytest.mark.real_codex
async def test_codexd_serves_an_allowed_host_and_refuses_others(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home, "--allowed-host", "mini.test",
                           env={"BAA_CODEXD_ALLOWED_HOSTS": "ignored.test"}) as codexd,
            httpx.AsyncClient(base_url=codexd.url) as http,
        ):
            port = int(codexd.url.rsplit(":", 1)[1])
            for host in ("mini.test", f"mini.test:{port}", f"MINI.TEST:{port}"):
                answer = await http.get("/v1/codexd/sessions", headers={"host": host})
                assert answer.status_code == 200, (host, answer.text)
            # Its own origin is allowed with it, as for the conductor's allowed hosts.
            answer = await http.get("/v1/codexd/sessions", headers={
                "host": f"mini.test:{port}", "origin": f"http://mini.test:{port}"})
            assert answer.status_code == 200, answer.text
            # The flag replaces the variable; another name, or another port, stays refused.
            for host in ("ignored.test", "other.test", f"mini.test:{port + 1}"):
                answer = await http.get("/v1/codexd/sessions", headers={"host": host})
                assert answer.status_code == 421, host
                assert answer.json()["error"]["code"] == "host_not_allowed"


# ------------------------------------------------------------------------------------------
# conductor


def test_conductor_new_settings_default_env_flag(tmp_path: Path) -> None:
    config = resolve_conductor(_conductor_args(), {})
    assert (config.codexd_timeout_s, config.max_body_bytes, config.shutdown_grace_s) == (
        10.0, 1024 * 1024, 5.0)
    assert config.codexd_token is None
    env = {"BAA_CONDUCTOR_CODEXD_TIMEOUT_S": "4", "BAA_CONDUCTOR_MAX_BODY_BYTES": "2048",
           "BAA_CONDUCTOR_SHUTDOWN_GRACE_S": "0", "BAA_CODEXD_TOKEN": "from-env"}
    config = resolve_conductor(_conductor_args(), env)
    assert (config.codexd_timeout_s, config.max_body_bytes, config.shutdown_grace_s) == (
        4.0, 2048, 0.0)
    assert config.codexd_token == "from-env"
    token_file = tmp_path / "codexd-token"
    token_file.write_text("from-file\n")
    token_file.chmod(0o600)
    config = resolve_conductor(_conductor_args(
        "--codexd-timeout", "2.5", "--max-body-bytes", "4096", "--shutdown-grace", "1",
        "--codexd-token-file", str(token_file)), env)
    assert (config.codexd_timeout_s, config.max_body_bytes, config.shutdown_grace_s) == (
        2.5, 4096, 1.0)
    assert config.codexd_token == "from-file"


def test_shared_token_is_read_one_way_for_the_conductor_and_its_callers(tmp_path: Path) -> None:
    token_file = tmp_path / "shared-token"
    token_file.write_text("from-file\n")
    env = {"BAA_SHARED_TOKEN_FILE": str(token_file), "BAA_SHARED_TOKEN": "from-env"}
    assert resolve_shared_token(env) == ("from-file", "file")
    assert resolve_shared_token({"BAA_SHARED_TOKEN": "from-env"}) == ("from-env", "env")
    assert resolve_shared_token({}) == (None, "none")
    config = resolve_conductor(_conductor_args(), env)
    assert (config.shared_token, config.token_source) == resolve_shared_token(env)
    with pytest.raises(ConfigError, match="cannot read the shared token file"):
        resolve_shared_token({}, token_file=str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--codexd-timeout", "x"], {}, "BAA_CONDUCTOR_CODEXD_TIMEOUT_S must be a number"),
        ([], {"BAA_CONDUCTOR_CODEXD_TIMEOUT_S": "0"}, "BAA_CONDUCTOR_CODEXD_TIMEOUT_S must be"),
        (["--max-body-bytes", "1.5"], {}, "BAA_CONDUCTOR_MAX_BODY_BYTES must be a whole"),
        (["--max-body-bytes", "10"], {}, "BAA_CONDUCTOR_MAX_BODY_BYTES must be at least 1024"),
        (["--shutdown-grace", "-1"], {}, "BAA_CONDUCTOR_SHUTDOWN_GRACE_S must be at least"),
        (["--codexd-token-file", "/nonexistent/token"], {}, "cannot read the codexd token"),
        (["--log-format", "xml"], {}, "log format must be json or text"),
        ([], {"BAA_LOG_FORMAT": "xml"}, "log format must be json or text"),
    ],
)
@pytest.mark.parametrize("command", ["config", "start"])
def test_conductor_bad_settings_are_one_line_and_exit_2(
    command: str, args: list[str], env: dict[str, str], needle: str, tmp_path: Path
) -> None:
    result = _run("conductor_trio", command, "--state-dir", str(tmp_path), *args, env=env)
    _one_line_exit_2(result, "conductor", needle)


def test_conductor_config_prints_the_new_settings() -> None:
    result = _run("conductor_trio", "config", "--codexd-timeout", "3", "--log-format", "json",
                  env={"BAA_CONDUCTOR_MAX_BODY_BYTES": "65536"})
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert (config["codexd_timeout_s"], config["max_body_bytes"]) == (3.0, 65536)
    assert config["shutdown_grace_s"] == 5.0


# ------------------------------------------------------------------------------------------
# status-api


def test_status_api_conductor_timeout_default_env_flag() -> None:
    assert resolve_status_api(_status_api_args(), {}).conductor_timeout_s == 3.0
    env = {"BAA_STATUS_API_CONDUCTOR_TIMEOUT_S": "1.5"}
    assert resolve_status_api(_status_api_args(), env).conductor_timeout_s == 1.5
    args = _status_api_args("--conductor-timeout", "8")
    assert resolve_status_api(args, env).conductor_timeout_s == 8.0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--conductor-timeout", "never"], "BAA_STATUS_API_CONDUCTOR_TIMEOUT_S must be a number"),
        (["--conductor-timeout", "0"], "BAA_STATUS_API_CONDUCTOR_TIMEOUT_S must be at least"),
        (["--log-format", "xml"], "log format must be json or text"),
    ],
)
def test_status_api_bad_settings_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    _one_line_exit_2(_run("conductor_trio.status_api", "config", *args), "status-api", needle)
