"""The relay's settings file: the sample in deploy/ is complete and current, types are
checked, and the proxy setting decides which address the limits count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import fields
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hearth.errors import ConfigError
from hearth.protocol.frames import PROTOCOL_VERSION
from relay.config import RelayConfig, load_config
from relay.forwarded import Proxies
from relay.sqlite_store import SqliteStore
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
        ("max_connections = 0", "max_connections is 0, which cannot work"),
        ("heartbeat_s = 0", "heartbeat_s is 0"),
        ("handshake_timeout_s = 0.0", "handshake_timeout_s is 0"),
        ("prune_every_s = -1", "prune_every_s is negative"),
        ("database_url = 'postgresql://hearth:s3cret@db/hearth'", "holds a password.*PGPASSWORD"),
        ("database_url = 'postgresql://db/hearth?password=s3cret'", "holds a password"),
        ("admission = 'closed'", "admission must be one of open, allow-list"),
        ("allowed_keys = ['abc']", "allowed_keys entry 'abc' is not a key"),
        (
            "peers = ['wss://relay.example.org']",
            "names no relay id: write it as wss://relay.example.org#ID",
        ),
        ("peers = ['wss://relay.example.org#3f9a']", "names no relay id"),
        ("peers = ['relay.example.org#" + "ab" * 32 + "']", "not a ws:// or wss:// address"),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, line: str, problem: str) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(f"[relay]\n{line}\n")
    with pytest.raises(ConfigError, match=problem):
        load_config(config)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("max_connections = 5\n[relay]\nport = 1\n", "max_connections outside \\[relay\\]"),
        ("[relay]\nport = 1\n[limits]\nmax_connections = 5\n", "\\[limits\\] outside"),
        ("[limits]\nmax_connections = 5\n", "unknown section \\[limits\\]"),
    ],
)
def test_settings_that_would_be_ignored_are_refused(
    tmp_path: Path, text: str, problem: str
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_config(config)


def relay_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "relay.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_check_config_prints_the_settings_in_effect(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\nmax_connections = 500\ntrusted_proxies = ["127.0.0.1"]\n')
    printed = relay_cli("check-config", str(config), "--print")
    assert printed.returncode == 0, printed.stderr
    assert "max_connections = 500\n" in printed.stdout
    assert "heartbeat_s = 30.0\n" in printed.stdout  # defaults too
    again = tmp_path / "printed.toml"
    again.write_text(printed.stdout)
    assert load_config(again) == load_config(config)  # every setting, as TOML
    bad = tmp_path / "bad.toml"
    bad.write_text("[relay]\nmax_connections = 0\n")
    refused = relay_cli("check-config", str(bad))
    assert refused.returncode == 1
    assert "max_connections is 0" in refused.stderr


def test_the_version_is_told_everywhere(tmp_path: Path) -> None:
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    version = pyproject.split('\nversion = "')[1].split('"')[0]
    told = relay_cli("--version")
    assert told.stdout.startswith(f"hearth-relay {version} (protocol ")


@pytest.mark.process
def test_sighup_reloads_the_limits_and_keeps_them_if_the_file_is_bad(tmp_path: Path) -> None:
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    version = pyproject.split('\nversion = "')[1].split('"')[0]
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\npublish_burst = 100\n")
    relay = start_relay(tmp_path / "relay", config=config)
    http = relay.url.replace("ws://", "http://")

    def info() -> dict[str, Any]:
        with urllib.request.urlopen(http + "/info", timeout=10) as got:  # noqa: S310 - loopback
            return dict(json.loads(got.read()))

    def reloads() -> int:
        with urllib.request.urlopen(http + "/metrics", timeout=10) as got:  # noqa: S310 - loopback
            text = got.read().decode()
        assert f'hearth_relay_build_info{{protocol="{PROTOCOL_VERSION}",' in text
        assert f'version="{version}"' in text
        return int(float(text.split("\nhearth_relay_reloads_total ")[1].split()[0]))

    try:
        assert info()["version"] == version
        assert info()["limits"]["publish_burst"] == 100
        with urllib.request.urlopen(http + "/metrics", timeout=10) as got:  # noqa: S310
            fresh = got.read().decode()
        assert "\nprocess_resident_memory_bytes " in fresh  # the process's own metrics
        assert '\nhearth_relay_rejections_total{reason="rate-limited"} 0.0\n' in fresh
        assert "\nhearth_relay_pruned_total 0.0\n" in fresh  # every series from the start
        peer = "ws://127.0.0.1:9#" + "ab" * 32
        config.write_text(f'[relay]\npublish_burst = 7\npeers = ["{peer}"]\n')
        relay.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while reloads() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert info()["limits"]["publish_burst"] == 7
        config.write_text("[relay]\npublish_burst = 0\n")
        relay.proc.send_signal(signal.SIGHUP)
        while reloads() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert info()["limits"]["publish_burst"] == 7  # a bad file changes nothing
        relay.kill(signal.SIGTERM)
        logged = (relay.data / "relay.log").read_text()
        assert "publish_burst is 0" in logged
        assert "peers changed: that takes a restart" in logged
    finally:
        relay.kill()


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


def test_operator_commands_find_the_settings_named_in_the_environment(tmp_path: Path) -> None:
    """As in the container image: ``hearth-relay topics`` with no --config or --data."""
    config = tmp_path / "relay.toml"
    config.write_text(f'[relay]\ndata = "{tmp_path / "data"}"\n')
    SqliteStore(tmp_path / "data" / "relay.db").close()
    env = {**os.environ, "HEARTH_RELAY_CONFIG": str(config)}
    command = [sys.executable, "-m", "relay.cli", "topics"]
    listed = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert "0 topics" in listed.stdout
