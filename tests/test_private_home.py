"""R15: a node's home holds epoch secrets and the plain ledger, so no other local user may
read any of it — the home and its folders 0700, every file 0600 (the store's WAL and SHM
files too), a looser home made private when a node opens it, with a notice; what a member
exports goes where and as they ask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hearth.node.identity import create_identity
from hearth.node.node import open_node
from tests.conftest import Cli


def modes(home: Path) -> dict[str, int]:
    """Relative path -> permission bits of the home and everything in it."""
    found = {".": stat.S_IMODE(home.stat().st_mode)}
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            path = Path(root, name)
            found[str(path.relative_to(home))] = stat.S_IMODE(path.stat().st_mode)
    return found


def loose(home: Path) -> dict[str, int]:
    """What in a home another user could read, write or enter."""
    return {path: mode for path, mode in modes(home).items() if mode & 0o077}


@pytest.fixture
def wide_umask() -> object:
    """The usual umask of a desktop session (022): files come out 0644 unless Hearth asks."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_home_is_private_from_the_start(cli: Cli, wide_umask: object) -> None:
    cli("init", "--name", "Ada")
    cli("group", "create", "Elm Street Tools")
    cli("resource", "add", "Ladder")
    found = modes(cli.home)
    assert found["."] == 0o700
    assert found["keys"] == 0o700
    assert {found[f] for f in ("hearth.db", "identity.json", "keys/device.key")} == {0o600}
    assert not loose(cli.home), loose(cli.home)


def test_the_store_s_wal_and_shm_files_are_private_while_a_node_runs(
    tmp_path: Path, wide_umask: object
) -> None:
    home = tmp_path / "home"
    create_identity(home, name="Ada")
    with open_node(home) as node:
        node.create_group("Allotment")
        with node.change() as ledger:
            ledger.add_resource("Spade")
        beside = sorted(p.name for p in home.iterdir() if p.name.startswith("hearth.db-"))
        assert beside == ["hearth.db-shm", "hearth.db-wal"]  # what this test is about
        assert not loose(home), loose(home)


def test_a_loose_home_is_made_private_when_opened_and_the_member_told(
    cli: Cli, wide_umask: object
) -> None:
    cli("init", "--name", "Ada")
    cli("group", "create", "Elm Street Tools")
    # As an older Hearth, a copy made by hand, or a backup tool restoring it, left it.
    for path in [cli.home, cli.home / "keys"]:
        path.chmod(0o755)
    for path in [cli.home / "hearth.db", cli.home / "identity.json", cli.home / "keys/member.key"]:
        path.chmod(0o644)
    assert len(loose(cli.home)) == 5

    listed = cli("resource", "list")
    assert not loose(cli.home), loose(cli.home)
    assert "could be read by other users of this computer (5 files or folders)" in listed.err
    assert "now private to you" in listed.err
    assert "could be read" not in cli("resource", "list").err  # told once


def test_exports_go_where_and_as_the_member_asks(
    cli: Cli, tmp_path: Path, wide_umask: object
) -> None:
    cli("init", "--name", "Ada")
    cli("group", "create", "Elm Street Tools")
    cli("resource", "add", "Ladder")
    target = tmp_path / "for the treasurer.csv"
    cli("export", "--format", "csv", "-o", str(target))
    assert "Ladder" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # the member's umask, not the home's
