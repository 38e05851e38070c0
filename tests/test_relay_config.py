"""The relay's settings file: the sample in deploy/ is complete and current, types are
checked, and the proxy setting decides which address the limits count."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import aiohttp
import pytest

from hearth.errors import ConfigError
from relay.config import RelayConfig, load_config
from relay.forwarded import Proxies
from tests.test_sync_processes import start_relay

SAMPLE = Path(__file__).parent.parent / "deploy" / "relay.toml"


def test_the_sample_config_names_every_setting_with_its_default() -> None:
    assert load_config(SAMPLE) == RelayConfig()
    text = SAMPLE.read_text()
    missing = [f.name for f in fields(RelayConfig) if f"\n{f.name} = " not in text]
    assert missing == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("max_connections = true", "max_connections should be a whole number, not True"),
        ("trust_forwarded_for = true", "trust_forwarded_for is gone.*trusted_proxies"),
        ("trusted_proxies = ['10.0.0.0/33']", "'10.0.0.0/33' is not an address or range"),
        ("heartbeat_s = 'often'", "heartbeat_s should be a number"),
        ("no_such_setting = 1", "unknown setting no_such_setting[.]"),
        (
            "max_conections = 5",
            r"unknown setting max_conections \(did you mean max_connections\?\)",
        ),
        ("disk_high_water = 1.5", "fraction"),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, line: str, problem: str) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(f"[relay]\n{line}\n")
    with pytest.raises(ConfigError, match=problem):
        load_config(config)


@pytest.mark.process
async def test_members_behind_the_proxy_are_told_apart_and_cannot_pose_as_others(
    tmp_path: Path,
) -> None:
    """A relay behind a proxy on 127.0.0.1 (an nginx that appends to X-Forwarded-For):
    each member counts as itself, and writing addresses into the header gains nothing."""
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\ntrusted_proxies = ["127.0.0.1"]\nmax_connections_per_ip = 2\n')
    relay = start_relay(tmp_path / "relay", config=config)
    try:
        async with aiohttp.ClientSession() as http:
            opened = []

            async def connect(forwarded_for: str) -> int:
                """The HTTP status the WebSocket handshake got (101: open)."""
                try:
                    ws = await http.ws_connect(
                        relay.url, headers={"X-Forwarded-For": forwarded_for}
                    )
                except aiohttp.WSServerHandshakeError as exc:
                    return exc.status
                opened.append(ws)
                return 101

            # One client claiming a fresh address each time, as the proxy passes it on.
            posing = [await connect(f"10.0.{n}.1, 198.51.100.4") for n in range(4)]
            assert posing == [101, 101, 503, 503]
            # Other members behind the same proxy are each their own address.
            assert [await connect(f"198.51.100.{n}") for n in range(10, 14)] == [101] * 4
            for ws in opened:
                await ws.close()
    finally:
        relay.kill()


def test_the_client_is_what_our_proxies_appended_never_what_it_wrote_itself() -> None:
    proxies = Proxies.of(["127.0.0.1", "172.16.0.0/12", "::1"])
    # nginx's $proxy_add_x_forwarded_for: whatever the client sent, then its address.
    assert proxies.client("127.0.0.1", "10.0.7.1, 198.51.100.4") == "198.51.100.4"
    assert proxies.client("127.0.0.1", "10.0.8.1, 198.51.100.4") == "198.51.100.4"
    # Two proxies of ours in a row (Caddy in a container before the relay's): past both.
    assert proxies.client("127.0.0.1", "6.6.6.6, 198.51.100.4, 172.18.0.1") == "198.51.100.4"
    assert proxies.client("::1", "2001:db8::7") == "2001:db8::7"
    assert proxies.client("::ffff:127.0.0.1", "198.51.100.4") == "198.51.100.4"
    # Not from a proxy of ours: the header is the client's own word, and ignored.
    assert proxies.client("198.51.100.9", "10.0.7.1") == "198.51.100.9"
    assert proxies.client("127.0.0.1", "") == "127.0.0.1"
    assert proxies.client("127.0.0.1", "not-an-address") == "127.0.0.1"


def test_a_data_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    data = tmp_path / "a-file" / "relay-data"
    relay = [sys.executable, "-m", "relay.cli", "--port", "0", "--data", str(data)]
    result = subprocess.run(relay, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"hearth-relay: cannot use {data}" in result.stderr
