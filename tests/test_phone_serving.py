"""Serving the console beyond loopback (issue 25 §2): what ``scripts/up.sh`` passes the conductor
for ``--listen``, ``--allowed-host`` and ``--public-url``, and that a bad value fails at once."""

from __future__ import annotations

import pytest

from conductor_trio.config import resolve_conductor
from conductor_trio.node_up.preflight import UsageError, conductor_listen_args, parse


def _flags(*argv: str) -> list[str]:
    return conductor_listen_args(parse(list(argv)))


def test_up_passes_the_listen_address_allowed_hosts_and_public_url() -> None:
    assert _flags() == ["--local-api", "http://127.0.0.1:4317"]
    # A tailnet address: the conductor must be allowed to listen there.
    assert _flags("--listen", "100.64.0.7", "--allowed-host", "mini.tail1234.ts.net") == [
        "--local-api", "http://100.64.0.7:4317",
        "--allowed-host", "mini.tail1234.ts.net", "--allowed-host", "100.64.0.7"]
    # Behind `tailscale serve`: links name the public URL, whose host and origin are allowed.
    assert _flags("--public-url", "https://mini.tail1234.ts.net/", "--conductor-port", "4400") == [
        "--local-api", "http://127.0.0.1:4400",
        "--public-api-base", "https://mini.tail1234.ts.net",
        "--allowed-origin", "https://mini.tail1234.ts.net",
        "--allowed-host", "mini.tail1234.ts.net"]
    assert _flags("--listen", "::1")[:2] == ["--local-api", "http://[::1]:4317"]


def test_what_up_passes_is_what_the_conductor_accepts() -> None:
    import argparse

    from conductor_trio.config import add_conductor_flags

    parser = argparse.ArgumentParser()
    add_conductor_flags(parser)
    args = parser.parse_args(_flags("--listen", "100.64.0.7", "--public-url",
                                    "https://mini.tail1234.ts.net"))
    config = resolve_conductor(args, env={})
    assert config.exposed
    assert set(config.allowed_hosts) == {"100.64.0.7", "mini.tail1234.ts.net"}
    assert config.allowed_origins == ("https://mini.tail1234.ts.net",)
    assert config.public_api_base == "https://mini.tail1234.ts.net"


@pytest.mark.parametrize("argv", [
    ["--public-url", "mini.tail1234.ts.net"], ["--public-url", "ftp://x"],
    ["--listen", "http://100.64.0.7"], ["--listen", ""],
])
def test_bad_serving_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse(argv)
