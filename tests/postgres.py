"""A private PostgreSQL server for the tests and benchmarks: Debian's binaries, a directory
of its own, a free port on 127.0.0.1, and a fresh database for each test that asks.

``.ci/run`` starts one for the whole suite (``python -m tests.postgres start DIR`` prints
its address, exported as ``HEARTH_TEST_POSTGRES``); without that, the ``postgres_server``
fixture starts one per test worker.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psycopg

__all__ = ["binaries", "fresh_database", "start", "stop"]


def binaries() -> Path | None:
    """Where PostgreSQL's server programs are (the newest Debian version), if installed."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_owner() -> list[str]:
    # PostgreSQL refuses to run as root; Debian's package made a user for it.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(directory: Path, *, durable: bool = False) -> str:
    """Initialise and start a server in ``directory`` (a new, empty one under a directory
    anyone may enter); return the address of its ``postgres`` database.

    Not ``durable``: no fsync, which tests do not need; the benchmarks ask for it.
    """
    programs = binaries()
    if programs is None:
        raise RuntimeError(
            "PostgreSQL's server is not installed (Debian: apt-get install postgresql)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    data = directory / "data"
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    subprocess.run(
        [
            *_as_owner(),
            str(programs / "initdb"),
            "-D",
            str(data),
            "-U",
            "hearth",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        **quiet,  # type: ignore[call-overload]
    )
    port = _free_port()
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c max_connections=300"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(
        [
            *_as_owner(),
            str(programs / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(directory / "server.log"),
            "-w",
            "start",
        ],
        **quiet,  # type: ignore[call-overload]
    )
    return f"postgresql://hearth@127.0.0.1:{port}/postgres"


def stop(directory: Path) -> None:
    """Stop the server started in ``directory`` and remove it."""
    programs = binaries()
    if programs is not None and (directory / "data").exists():
        subprocess.run(
            [
                *_as_owner(),
                str(programs / "pg_ctl"),
                "-D",
                str(directory / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    shutil.rmtree(directory, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its address."""
    name = "hearth_" + secrets.token_hex(6)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name


if __name__ == "__main__":
    command, where = sys.argv[1], Path(sys.argv[2])
    if command == "start":
        print(start(where))
    elif command == "stop":
        stop(where)
    else:
        sys.exit("usage: python -m tests.postgres start|stop DIR")
