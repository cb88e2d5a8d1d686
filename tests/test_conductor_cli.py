"""``conductor`` as a process: config errors (exit 2), ready line, SIGTERM (exit 0)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.fake_codexd import open_fake_codexd, spawn_daemon, terminate

CONDUCTOR = [sys.executable, "-m", "conductor_trio"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAA_")}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--local-api", "http://10.20.30.40:4317"], {}, "BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS"),
        ([], {"BAA_CONDUCTOR_ROLE": "boss"}, "primary or standby"),
        (["--codexd-base", "http://192.168.1.5:4319"], {}, "loopback"),
        ([], {"BAA_SHARED_TOKEN_FILE": "/nonexistent/token"}, "token file"),
        (["--lease-ttl", "5", "--lease-renew", "10"], {}, "below the TTL"),
    ],
)
async def test_bad_settings_are_one_line_and_exit_2(
    args: list[str], env: dict[str, str], needle: str, tmp_path: Path
) -> None:
    result = await trio.run_process(
        [*CONDUCTOR, "start", "--state-dir", str(tmp_path), *args],
        env=_env(**env), capture_stdout=True, capture_stderr=True, check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("conductor: ")
    assert needle in lines[0]


async def test_config_resolves_defaults_env_then_flags(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok\n")
    result = await trio.run_process(
        [*CONDUCTOR, "config", "--node-id", "from-flag", "--local-api", "http://10.0.0.7:4317"],
        env=_env(BAA_NODE_ID="from-env", BAA_CONDUCTOR_ROLE="standby",
                 BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS="10.0.0.7",
                 BAA_SHARED_TOKEN_FILE=str(token_file), BAA_SHARED_TOKEN="ignored",
                 BAA_CONTROL_API_BASE="http://mini.local:4317"),
        capture_stdout=True,
    )
    config = json.loads(result.stdout)
    assert config["node_id"] == "from-flag"
    assert config["role"] == "standby"
    assert config["local_api"] == "http://10.0.0.7:4317"
    assert config["public_api_base"] == "http://mini.local:4317"
    assert (config["token_configured"], config["token_source"]) == (True, "file")
    assert "tok" not in result.stdout.decode().replace("token", "")
    assert config["codexd_base"] == "http://127.0.0.1:4319"


async def test_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_fake_codexd() as fake:
            argv = [*CONDUCTOR, "start", "--local-api", "http://127.0.0.1:0",
                    "--codexd-base", fake.url, "--state-dir", str(tmp_path), "--node-id", "proc"]
            async with spawn_daemon(argv, env=_env()) as daemon:
                assert daemon.ready["service"] == "conductor"
                async with httpx.AsyncClient(base_url=daemon.url, timeout=10) as http:
                    assert (await http.get("/rolez")).text.strip() == "leader"
                    created = await http.post("/v1/codex/sessions", json={})
                    assert created.status_code == 201
                status = await trio.run_process(
                    [*CONDUCTOR, "status", "--json", "--local-api", daemon.url],
                    env=_env(), capture_stdout=True)
                assert json.loads(status.stdout)["data"]["node"]["node_id"] == "proc"
                human = await trio.run_process(
                    [*CONDUCTOR, "status", "--local-api", daemon.url],
                    env=_env(), capture_stdout=True)
                assert "(node proc, pid " in human.stdout.decode()
                # With a public API base, `status` asks there (the address clients use), not
                # at the local one (here a port nobody listens on).
                status = await trio.run_process(
                    [*CONDUCTOR, "status", "--json", "--local-api", "http://127.0.0.1:9",
                     "--public-api-base", daemon.url],
                    env=_env(), capture_stdout=True)
                assert json.loads(status.stdout)["data"]["node"]["node_id"] == "proc"
                assert await terminate(daemon) == 0
            lease = json.loads((tmp_path / "conductor" / "lease.json").read_text())
            # Released on the graceful stop, so a standby may take over at once.
            assert lease["expires_at"] <= lease["renewed_at"]


async def test_status_exits_3_when_the_conductor_does_not_answer() -> None:
    # The same meaning as `codexd status` (and systemctl): 0 answers, 3 does not.
    result = await trio.run_process(
        [*CONDUCTOR, "status", "--local-api", "http://127.0.0.1:9"],
        env=_env(), capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 3
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("conductor: cannot reach")
    helped = await trio.run_process([*CONDUCTOR, "status", "--help"], capture_stdout=True)
    assert "exit status" in helped.stdout.decode()


async def test_console_scripts_run() -> None:
    bin_dir = Path(sys.executable).parent
    for script, service in (("conductor", "conductor"), ("status-api", "status-api")):
        result = await trio.run_process(
            [str(bin_dir / script), "config", "--local-api", "http://127.0.0.1:1"],
            env=_env(), capture_stdout=True,
        )
        assert json.loads(result.stdout)["local_api"] == "http://127.0.0.1:1", service


async def test_a_leader_frozen_past_its_ttl_never_answers_leader_when_it_wakes(
    tmp_path: Path,
) -> None:
    lease = ["--lease-ttl", "1", "--lease-renew", "0.2", "--state-dir", str(tmp_path)]
    with trio.fail_after(60):
        async with open_fake_codexd() as fake:
            base = [*CONDUCTOR, "start", "--local-api", "http://127.0.0.1:0",
                    "--codexd-base", fake.url, *lease]
            async with (
                spawn_daemon([*base, "--node-id", "a"], env=_env()) as a,
                httpx.AsyncClient(base_url=a.url, timeout=10) as http_a,
            ):
                assert (await http_a.get("/rolez")).text.strip() == "leader"
                async with (
                    spawn_daemon([*base, "--node-id", "b", "--role", "standby"],
                                 env=_env()) as b,
                    httpx.AsyncClient(base_url=b.url, timeout=10) as http_b,
                ):
                    assert (await http_b.get("/rolez")).text.strip() == "standby"
                    # The standby refuses writes and names the leader, from the lease file.
                    refused = await http_b.post("/v1/codex/sessions", json={})
                    assert refused.status_code == 503
                    error = refused.json()["error"]
                    assert error["code"] == "not_leader"
                    assert error["details"]["leader"]["nodeId"] == "a"
                    assert error["details"]["leader"]["localApiBase"] == a.url
                    assert (await http_b.get("/v1/codex/sessions")).status_code == 200
                    a.process.send_signal(signal.SIGSTOP)  # a laptop lid, a VM pause
                    try:
                        # The standby takes the lease once it has expired. Another process has
                        # no way to tell us, so we ask it until it says so (bounded above).
                        while (await http_b.get("/rolez")).text.strip() != "leader":  # noqa: ASYNC110
                            await trio.sleep(0.05)
                    finally:
                        a.process.send_signal(signal.SIGCONT)
                    # a's very first answer after waking: not leader (b is).
                    assert (await http_a.get("/rolez")).text.strip() != "leader"
                    assert (await http_a.get("/readyz")).status_code == 503
                    assert (await http_b.get("/rolez")).text.strip() == "leader"
