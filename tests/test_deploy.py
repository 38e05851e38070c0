"""The files in deploy/ as an operator uses them: the slim relay image holds what the
relay imports and nothing of the app, its base is pinned, compose rotates logs and does
not override the mounted settings, each hearth-serve@ instance listens where its own file
says, and the shipped Caddyfile, run by a real Caddy in front of a real relay, keeps
/metrics private and lets the relay tell members apart."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from relay.config import load_config
from tests.conftest import Cli, hearth_command
from tests.test_sync_processes import start_relay

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"


def copied_into_image(tree: Path) -> Path:
    """The files the Dockerfile copies (COPY SRC... DEST) laid out under ``tree``; where
    the relay's code is (its WORKDIR)."""
    workdir = Path("/")
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("WORKDIR "):
            workdir = Path(line.split()[1])
        if not line.startswith("COPY "):
            continue
        *sources, dest = line.split()[1:]
        target = tree / (workdir / dest).relative_to("/")
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                into = target / path.name if dest.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, into)
    return tree / workdir.relative_to("/")


def test_the_relay_image_holds_the_relay_and_its_locked_dependencies_only(
    tmp_path: Path,
) -> None:
    code = copied_into_image(tmp_path)
    assert not (code / "tui").exists()
    # Import everything the relay runs, from the image's copy, and see which installed
    # distributions that took.
    script = (
        "import importlib.metadata as m, sys, json\n"
        "import relay.cli, relay.server, relay.postgres_store, relay.moderation_cli\n"
        "assert relay.cli.__file__.startswith(sys.argv[1]), relay.cli.__file__\n"
        # Every module of ours from the image's copy: an editable install of this tree
        # would otherwise answer for one the image lacks.
        "elsewhere = sorted(n for n, mod in list(sys.modules.items())\n"
        "    if n.split('.')[0] in ('hearth', 'relay') and getattr(mod, '__file__', None)\n"
        "    and not mod.__file__.startswith(sys.argv[1]))\n"
        "assert not elsewhere, ('not in the image', elsewhere)\n"
        "dists = m.packages_distributions()\n"
        "used = {d for name in list(sys.modules) for d in dists.get(name.split('.')[0], [])}\n"
        "print(json.dumps(sorted(used)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(code)}
    ran = subprocess.run(
        [sys.executable, "-c", script, str(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    used = {re.sub(r"[-_.]+", "-", d).lower() for d in __import__("json").loads(ran.stdout)}
    used.discard("hearth")  # the editable install of this checkout: the copy was imported
    used.discard("setuptools")  # its start-up hook (_distutils_hack) in every virtualenv
    lock = (DEPLOY / "relay-requirements.txt").read_text()
    locked = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in lock.splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert used <= locked, f"the relay imports {used - locked}, which the image lacks"
    assert not {"textual", "zeroconf", "automerge"} & locked
    # The image's own settings work as they are, and nothing on its command line overrides them.
    assert load_config(tmp_path / "etc/hearth/relay.toml").data == "/data"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["hearth-relay", "--config", "/etc/hearth/relay.toml"]' in dockerfile
    assert "\nCMD []" in dockerfile
    assert "HEARTH_RELAY_CONFIG=/etc/hearth/relay.toml" in dockerfile


def test_the_base_image_is_pinned_by_digest_and_the_context_is_small() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"\nARG PYTHON_IMAGE=python:[\w.-]+@sha256:[0-9a-f]{64}\n", dockerfile)
    assert "\nFROM ${PYTHON_IMAGE}\n" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") - 1].startswith("#")  # everything, then exceptions
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert any(source.startswith(keep[1:]) for keep in ignored if keep.startswith("!"))


def test_compose_rotates_logs_builds_once_and_keeps_the_mounted_settings() -> None:
    for name in ("compose.yaml", "compose.postgres.yaml"):
        text = (DEPLOY / name).read_text()
        assert 'max-size: "10m"' in text
        assert "./relay.container.toml:/etc/hearth/relay.toml:ro" in text
        for flag in ("--host", "--port", "--data", "--config"):
            assert flag not in text.split("services:")[1], (name, flag)
    postgres = (DEPLOY / "compose.postgres.yaml").read_text()
    assert postgres.count("build:") == 1
    assert postgres.count("logging: *logging") == 2  # the database and the relay template


def test_each_hearth_serve_instance_listens_where_its_own_file_says(tmp_path: Path) -> None:
    unit = (DEPLOY / "hearth-serve@.service").read_text()
    assert "EnvironmentFile=-/etc/hearth/serve/%i.env" in unit
    # What systemd runs for an instance whose file says HEARTH_LISTEN=127.0.0.1:0.
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = exec_start.removeprefix("ExecStart=").split()
    assert argv[0] == "/opt/hearth/bin/hearth"
    argv = [*hearth_command(), *(a.replace("${HEARTH_LISTEN}", "127.0.0.1:0") for a in argv[1:])]
    home = tmp_path / "allotment"
    Cli(home)("init", "--name", "Shed")
    env = {**os.environ, "HEARTH_HOME": str(home)}
    serving = subprocess.Popen([*argv, "--no-lan"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert serving.stdout is not None
        lines = [serving.stdout.readline() for _ in range(2)]
        assert any(line.startswith("listening on ws://127.0.0.1:") for line in lines), lines
    finally:
        serving.send_signal(signal.SIGTERM)
        serving.wait(timeout=15)
        if serving.stdout:
            serving.stdout.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def statuses(port: int, source: str, forwarded_for: str, count: int) -> list[int]:
    """Open ``count`` WebSockets through the proxy at ``port`` from ``source`` (a loopback
    address of its own); the HTTP status of each handshake (101: open)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    got = []
    async with aiohttp.ClientSession(connector=connector) as http:
        opened = []
        for _ in range(count):
            try:
                opened.append(
                    await http.ws_connect(
                        f"ws://127.0.0.1:{port}/", headers={"X-Forwarded-For": forwarded_for}
                    )
                )
                got.append(101)
            except aiohttp.WSServerHandshakeError as exc:
                got.append(exc.status)
        for ws in opened:
            await ws.close()
    return got


@pytest.mark.process
def test_the_shipped_caddyfile_keeps_metrics_private_and_members_apart(
    tmp_path: Path,
) -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        message = "Caddy is not installed here (Debian: apt-get install caddy); .ci/run installs it"
        if os.environ.get("HEARTH_REQUIRE_CADDY"):
            pytest.fail(message)
        pytest.skip(message)
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\nmax_connections_per_ip = 2\n")  # proxies: the default
    relay = start_relay(tmp_path / "relay", config=config)
    relay_port = relay.url.rsplit(":", 1)[1]
    port = free_port()
    # The shipped file, for a test address instead of a domain (no certificates).
    shipped = (DEPLOY / "Caddyfile").read_text()
    assert "relay.example.org {" in shipped
    site = shipped.replace("relay.example.org {", f"http://127.0.0.1:{port} {{")
    site = site.replace("127.0.0.1:8765", f"127.0.0.1:{relay_port}")
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text("{\n\tadmin off\n}\n" + site)
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    with (tmp_path / "caddy.log").open("w") as caddy_log:
        proxy = subprocess.Popen(
            [caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=caddy_log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(base + "/info", timeout=5) as got:  # noqa: S310
                    assert got.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, (tmp_path / "caddy.log").read_text()
                time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as private:
            urllib.request.urlopen(base + "/metrics", timeout=5)  # noqa: S310 - loopback
        assert private.value.code == 404
        private.value.close()

        # A member claiming other addresses is still one member; two members are two.
        assert asyncio.run(statuses(port, "127.0.0.2", "10.0.0.1", 3)) == [101, 101, 503]
        assert asyncio.run(statuses(port, "127.0.0.3", "10.0.0.2", 2)) == [101, 101]
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=15)
        relay.kill()
