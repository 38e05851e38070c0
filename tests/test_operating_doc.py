"""Every command docs/operating.md shows, run as an operator would: the ``hearth-relay``
and ``hearth`` commands against a real relay holding a real group's topic, the PostgreSQL
role set-up against a real server; only what needs a host of its own (systemd, Docker,
pip into /opt, users) is set aside, by name, and deploy/'s files for those are tested in
tests/test_deploy.py."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.test_sync_processes import start_relay

pytestmark = pytest.mark.process

DOC = Path(__file__).parent.parent / "docs" / "operating.md"
BIN = Path(sys.executable).parent
BASH = shutil.which("bash") or "/bin/bash"

# Commands that need a machine of their own to run (the test would change this one).
HOST_ONLY = ("python3", "pip", "systemctl", "useradd", "install", "echo", "systemd-run")


def doc_commands() -> list[str]:
    """The command lines of the doc's ``sh`` blocks, continuations joined, comments cut."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line:
                lines.append(re.sub(r"\s+", " ", line))
    return lines


def program(line: str) -> str:
    """The program a command line runs (past VAR=value assignments and a path)."""
    words = [w for w in line.split() if not re.match(r"^[A-Z_]+=", w)]
    return words[0].rsplit("/", 1)[-1]


def test_the_doc_shows_no_command_this_test_does_not_know() -> None:
    known = {"hearth-relay", "hearth", "kill", "createuser", "createdb", *HOST_ONLY}
    assert {program(line) for line in doc_commands()} <= known


def test_every_command_in_the_operating_doc_works(tmp_path: Path, postgres_server: str) -> None:
    relay = start_relay(tmp_path / "relay")
    member = Cli(tmp_path / "member")
    member("init", "--name", "Ada")
    member("group", "create", "Elm Street", "--relay", relay.url)
    member("sync")
    with sqlite3.connect(f"file:{relay.data / 'relay.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT topic, relay_key FROM topics").fetchone()
    topic, key = bytes(row[0]).hex(), bytes(row[1]).hex()  # what TOPIC and KEY stand for
    role = "relay_" + secrets.token_hex(4)
    server = re.match(r"postgresql://(\w+)@([\d.]+):(\d+)/", postgres_server)
    assert server is not None
    pg_user, pg_host, pg_port = server.groups()
    config = tmp_path / "etc" / "relay.toml"
    config.parent.mkdir()
    sample = (Path(__file__).parent.parent / "deploy" / "relay.toml").read_text()
    config.write_text(
        sample.replace("port = 8765", "port = 0").replace(
            'data = "relay-data"', f'data = "{tmp_path / "config-data"}"'
        )
    )
    (tmp_path / "backups").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k != "HEARTH_HOME"},
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HEARTH_HOME": str(member.home),
        "PGHOST": pg_host,
        "PGPORT": pg_port,
        "PGUSER": pg_user,
    }
    fresh = iter(range(100))
    invite = ["CODE"]  # the code `hearth-relay invite` printed, once it has run

    def substituted(line: str) -> str:
        """The doc's example paths, names and values, made this test's."""
        line = line.replace("/opt/hearth/bin/", "")
        line = line.replace("/var/lib/hearth-relay-new", str(tmp_path / "restored"))
        line = line.replace("/etc/hearth/relay.toml", str(config))
        line = line.replace("--config relay.toml", f"--config {config}")
        line = line.replace("/backups/", f"{tmp_path / 'backups'}/")
        line = line.replace(
            "postgresql://hearth@db.example.org/hearth",
            f"postgresql://{role}@{pg_host}:{pg_port}/{role}",
        )
        line = re.sub(r"\b(createuser --pwprompt|createdb --owner) hearth\b", rf"\1 {role}", line)
        line = line.replace(f"--owner {role} hearth", f"--owner {role} {role}")
        line = line.replace("PGPASSWORD=...", "PGPASSWORD=secret")
        line = line.replace('"$(pidof hearth-relay)"', str(relay.proc.pid))
        line = line.replace("3f9a…c2", "ab" * 32)
        line = line.replace("8b1d…e4", "cd" * 32)
        line = line.replace("wss://relay.example.org", "ws://127.0.0.1:9")
        line = re.sub(r"--port \d+", "--port 0", line)
        line = re.sub(r"\bTOPIC\b", topic, line)
        line = re.sub(r"\bKEY\b", key, line)
        line = re.sub(r"\bCODE\b", invite[0], line)
        return line.replace("/var/lib/hearth-relay", str(relay.data))

    ran = []
    for line in doc_commands():
        name = program(line)
        if name in HOST_ONLY:
            continue
        command = substituted(line)
        serves = (name == "hearth-relay" and " --port " in f" {command} ") or (
            " --peer " in command or " --accept-peer " in command
        )
        if serves:  # a relay that runs until stopped: it must start, on a data dir of its own
            data = tmp_path / f"served-{next(fresh)}"
            if "--database" in command:
                data = tmp_path / "served-postgres"  # both processes share relay.key
            command = re.sub(r"--data \S+", f"--data {data}", command)
            if "--data" not in command:
                command += f" --data {data}"
            started = subprocess.Popen(
                [BASH, "-c", f"exec env {command}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert started.stdout is not None
            first = started.stdout.readline()
            started.send_signal(signal.SIGTERM)
            _, err = started.communicate(timeout=30)
            assert first.startswith("listening on ws://"), (line, command, err)
        else:
            done = subprocess.run(
                [BASH, "-c", command],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                input="secret\nsecret\n",
                start_new_session=True,
                check=False,
            )
            assert done.returncode == 0, (line, command, done.stdout, done.stderr)
            if command.startswith("hearth-relay invite"):
                invite[0] = done.stdout.split()[0]
            if command == "hearth relay key":  # what the member gives the operator
                assert done.stdout.split()[0] == key
        ran.append(line)
    relay.kill()
    assert len(ran) >= 20
    assert any(line.startswith("createuser") for line in ran)
    assert (tmp_path / "restored" / "relay.db").exists()
    assert invite[0] != "CODE"
    assert f"?admit={invite[0]}" in member("relay", "list").out
