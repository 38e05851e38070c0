"""Shared fixtures: temporary homes, the real ``hearth`` command, and a guard on ERROR logs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Dates are read and shown in the member's own time zone: the tests pin it (and so the
# processes they start) to UTC, so what they see is the same on every machine.
os.environ["TZ"] = "UTC"
time.tzset()


def hearth_command() -> list[str]:
    """The installed ``hearth`` console script next to this interpreter, or the module."""
    script = Path(sys.executable).parent / "hearth"
    if script.exists():
        return [str(script)]
    found = shutil.which("hearth")
    return [found] if found else [sys.executable, "-m", "hearth.cli.main"]


@dataclass
class Result:
    """What a finished ``hearth`` process printed and returned."""

    code: int
    out: str
    err: str


@dataclass
class Cli:
    """Runs the real ``hearth`` command against one home directory."""

    home: Path
    cwd: Path | None = None  # where it runs (relative file names), else here

    def __call__(self, *args: str, check: bool = True, timeout: float = 60) -> Result:
        env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
        proc = subprocess.run(
            [*hearth_command(), "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
            cwd=self.cwd,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"hearth {' '.join(args)} failed: {proc.stderr}{proc.stdout}")
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A ``hearth`` runner on a fresh home."""
    return Cli(tmp_path / "home")


@pytest.fixture(autouse=True)
def _no_unexpected_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail any test that logs at ERROR unless it marks that as expected."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    if errors and not any(getattr(r, "expected", False) for r in errors):
        pytest.fail("unexpected ERROR logs: " + "; ".join(r.getMessage() for r in errors))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for the tests that run the relay on PostgreSQL: the one .ci/run
    started, or a private one for this test worker."""
    from tests import postgres

    given = os.environ.get("HEARTH_TEST_POSTGRES")
    if given:
        yield given
        return
    if postgres.binaries() is None:
        message = (
            "PostgreSQL's server is not installed here (Debian: apt-get install postgresql); "
            ".ci/run installs it"
        )
        if os.environ.get("HEARTH_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    # Not under tmp_path: PostgreSQL's own user must be able to enter the directory.
    directory = Path(tempfile.mkdtemp(prefix="hearth-pg-"))
    directory.chmod(0o755)
    try:
        yield postgres.start(directory / "server")
    finally:
        postgres.stop(directory / "server")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty PostgreSQL database."""
    from tests import postgres

    return postgres.fresh_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def relay_store(request: pytest.FixtureRequest) -> list[str]:
    """The ``hearth-relay`` arguments for each kind of store: the relay tests that take
    this run once on SQLite in the data directory and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return []
    return ["--database", request.getfixturevalue("postgres_url")]
