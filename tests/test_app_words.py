"""The core's messages in the app's words (tui/wording.py): every command a message from
hearth/ names has the app's way to it, and the app shows that instead of the command."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tui.wording import app_way, app_words

ROOT = Path(__file__).resolve().parent.parent


def _message_strings(path: Path) -> list[tuple[int, str]]:
    """The string pieces of a module that are not docstrings (f-strings piece by piece)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def _sources_reaching_the_app() -> list[Path]:
    """The core outside the CLI, the CLI's checks the app runs too (`doctor`), and the
    relay's refusals (shown when a sync fails)."""
    core = [p for p in (ROOT / "hearth").rglob("*.py") if "cli" not in p.parts]
    return [*core, ROOT / "hearth" / "cli" / "doctor.py", ROOT / "relay" / "core.py"]


def test_every_command_a_message_names_has_the_apps_way_to_it() -> None:
    named = {}
    for path in _sources_reaching_the_app():
        for line, text in _message_strings(path):
            # In backticks, or alone: what lists the things a name is looked up among,
            # which the lookup puts in backticks (hearth.lookup.pick's `listing`).
            for words in re.findall(r"(?:`|^)hearth ([a-z][a-z -]*)", text):
                named[f"{path.relative_to(ROOT)}:{line}"] = words.strip()
    assert len(named) > 20  # the reading finds them
    missing = {where: words for where, words in named.items() if app_way(words) is None}
    assert not missing, missing
    for noun in ("resource", "need", "commitment", "member"):  # hearth.ledger.view.find's
        assert app_way(f"{noun} list") is not None, noun


@pytest.mark.parametrize(
    ("message", "in_the_app"),
    [
        (
            "Your join does not count yet. Run `hearth sync`, then try again.",
            "Your join does not count yet. Use “Sync now” (key u), then try again.",
        ),
        (
            "No identity in x yet: run `hearth init --name YOUR-NAME` first.",
            "No identity in x yet: use the app's first screen first.",
        ),
        (
            "remove it: `hearth device remove 3f2a9c`",
            "remove it: “Remove a device” (ctrl+p)",
        ),
        (
            "Add another first (`hearth relay add URL`).",
            "Add another first (“Add a relay” (ctrl+p)).",
        ),
        ("`hearth tea make` is not a command", "`hearth tea make` is not a command"),
        ("No commands here.", "No commands here."),
    ],
)
def test_a_command_in_a_message_becomes_the_apps_way(message: str, in_the_app: str) -> None:
    assert app_words(message) == in_the_app
