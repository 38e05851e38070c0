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
    loaded = modules_after("import hearth.cli.commands, hearth.node, hearth.demo")
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
    assert not {m for m in loaded if m.startswith(("hearth.node", "hearth.store", "hearth.ledger"))}
