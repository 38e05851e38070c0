"""The relay's settings file: the sample in deploy/ is complete and current, types are
checked, and the proxy setting decides which address the limits count."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from hearth.errors import ConfigError
from relay.config import RelayConfig, load_config
from relay.server import client_address

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
        ("trust_forwarded_for = 1", "should be true or false"),
        ("heartbeat_s = 'often'", "heartbeat_s should be a number"),
        ("no_such_setting = 1", "unknown setting no_such_setting[.]"),
        (
            "max_conections = 5",
            r"unknown setting max_conections \(did you mean max_connections\?\)",
        ),
        ("disk_high_water = 1.5", "fraction"),
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


def test_forwarded_addresses_count_only_when_the_proxy_is_trusted() -> None:
    request = make_mocked_request("GET", "/", headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
    trusting = RelayConfig(trust_forwarded_for=True)
    assert client_address(request, trusting) == "203.0.113.7"
    assert client_address(request, RelayConfig()) != "203.0.113.7"


def test_a_data_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    data = tmp_path / "a-file" / "relay-data"
    relay = [sys.executable, "-m", "relay.cli", "--port", "0", "--data", str(data)]
    result = subprocess.run(relay, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"hearth-relay: cannot use {data}" in result.stderr
