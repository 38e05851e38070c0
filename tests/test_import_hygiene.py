"""Dependency direction (STYLE.md 9): what importing each layer drags in."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return set(out.split())


def test_importing_hearth_is_light() -> None:
    loaded = modules_after("import hearth")
    assert not {"automerge", "cryptography", "aiohttp", "textual", "sqlite3"} & loaded


def test_the_core_never_loads_the_ui_or_the_relay() -> None:
    loaded = modules_after(
        "import hearth.cli.main, hearth.node.node, hearth.cli.demo\nhearth.cli.main.build_parser()"
    )
    assert not {m for m in loaded if m.split(".")[0] in {"tui", "relay", "textual"}}


def test_only_the_adapter_imports_automerge() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+automerge\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("hearth", "relay", "tui")
        for path in (ROOT / package).rglob("*.py")
        if pattern.search(path.read_text()) and path.name != "automerge_doc.py"
    ]
    assert offenders == []


def test_the_protocol_loads_no_io() -> None:
    loaded = modules_after(
        "import hearth.protocol.connection, hearth.protocol.sync, hearth.protocol.bundle"
    )
    assert not {"aiohttp", "asyncio", "socket", "sqlite3", "automerge"} & loaded
    assert not {
        m for m in loaded if m.startswith(("hearth.node.node", "hearth.store", "hearth.ledger"))
    }


def test_a_ledger_command_loads_neither_networking_nor_the_app(tmp_path: Path) -> None:
    """What a scripted command costs to start is mostly imports: listing resources loads
    the node and the ledger, not aiohttp, Textual, zeroconf or the neighbourhood code."""
    from tests.conftest import Cli

    home = tmp_path / "home"
    cli = Cli(home)
    cli("init", "--name", "Ada")
    cli("group", "create", "Elm Street")
    loaded = modules_after(
        "import contextlib, io\nfrom tui.main import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['--home', {str(home)!r}, 'resource', 'list']) == 0"
    )
    assert "hearth.node.node" in loaded  # it did run the command
    assert not {"aiohttp", "textual", "zeroconf"} & {m.split(".")[0] for m in loaded}
    assert (
        not {
            "hearth.neighbourhood.participation",
            "hearth.group.member_changes",
            "hearth.validity.alerts",
        }
        & loaded
    )
    # Of the command modules, only the one that registers `resource` is imported.
    from hearth.cli.main import COMMANDS

    assert set(COMMANDS.values()) & loaded == {COMMANDS["resource"]}


def test_a_command_is_parsed_alike_by_its_own_grammar_and_the_whole() -> None:
    """``build_parser(args)`` builds only the grammar of the command in ``args``: for each
    of these, the same values, exit status, output and errors as the whole grammar."""
    import contextlib
    import io

    from hearth.cli.main import build_parser

    def parse(args: list[str], whole: bool) -> tuple[object, ...]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                return (vars(build_parser(None if whole else args).parse_args(args)), "", "")
            except SystemExit as stop:
                return (stop.code, out.getvalue(), err.getvalue())

    for args in (
        ["resource", "list"],
        ["--home", "h", "-v", "resource", "add", "Drill", "--kind", "tool", "--qty", "2"],
        ["--home=h", "sync", "--timeout", "3", "--all"],
        ["resource", "edit", "a", "--shareable", "--not-shareable"],
        ["commitment", "fulfill", "x"],
        ["resource", "--help"],
        ["resource"],
        ["resource", "add", "x", "--kind", "cat"],
        ["resource", "list", "--bogus"],
        ["history", "--limit", "many"],
        ["neighbourhood", "invite", "--yes", "--timeout", "5"],
        ["request", "accept", "r1"],
        ["frobnicate"],
        ["--hom", "sync", "resource", "list"],
        ["--help"],
        [],
    ):
        assert parse(args, whole=False) == parse(args, whole=True), args


def test_each_command_module_registers_the_commands_the_table_gives_it() -> None:
    """``COMMANDS`` says which module to import for a command: it must be the module that
    registers it, and every command the grammar knows must run a handler."""
    import argparse
    import importlib

    from hearth.cli.grammar import Commands
    from hearth.cli.main import COMMANDS, build_parser

    for module in set(COMMANDS.values()):
        commands = argparse.ArgumentParser().add_subparsers(action=Commands)
        assert isinstance(commands, Commands)
        importlib.import_module(module).register(commands)
        assert set(commands.choices) == {w for w, m in COMMANDS.items() if m == module}

    def leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            return [parser]
        return [leaf for a in actions for p in a.choices.values() for leaf in leaves(p)]

    whole = leaves(build_parser())
    assert len(whole) > 60
    assert all(callable(leaf.get_default("handler")) for leaf in whole)
