"""What a command module needs to register its part of the ``hearth`` grammar.

Each command module has a ``register(commands)`` function that adds its subcommands to
``commands`` and names each one's handler with ``set_defaults(handler=...)``; ``main``
builds the top of the grammar and calls it. A handler takes the parsed arguments and the
node's home and returns the exit status; most work on the opened node, and
:func:`on_node` makes one of those from a function of the arguments and the node.

A command line builds only the grammar of its own command: ``commands`` hands the other
commands' registrations a parser that keeps nothing (:class:`Skipped`), so they cost
next to nothing.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hearth.node.node import Node

    _Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _Subcommands = argparse._SubParsersAction

__all__ = [
    "Commands",
    "Handler",
    "NodeHandler",
    "Skipped",
    "code_flags",
    "json_flag",
    "on_node",
    "subcommands",
    "yes_flag",
]

Handler = Callable[[argparse.Namespace, Path], int]
"""What a command does: given the parsed arguments and the node's home, the exit status."""

NodeHandler = Callable[[argparse.Namespace, "Node"], int]
"""What most commands do: given the parsed arguments and the opened node, the exit status."""


@functools.cache
def on_node(run: NodeHandler) -> Handler:
    """The handler that opens the node of the home and runs ``run`` on it (one per
    function, so that the grammar built twice names the same handler)."""

    def handler(args: argparse.Namespace, home: Path) -> int:
        from hearth.node.node import open_node

        with open_node(home) as node:
            return run(args, node)

    handler.__doc__ = run.__doc__
    return handler


def json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json``, for scripts."""
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def code_flags(parser: argparse.ArgumentParser, yes: str) -> None:
    """The options of a command that shows an invite code and waits for it to be used."""
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="how long the code waits"
    )
    parser.add_argument("--yes", action="store_true", help=yes)
    json_flag(parser)


def yes_flag(parser: argparse.ArgumentParser) -> None:
    """``--yes``, for a command that asks first."""
    parser.add_argument("--yes", action="store_true", help="do not ask first")


class Commands(_Subcommands):
    """The top-level subcommands: every one listed when ``only`` is None, else only the
    grammar of the command ``only`` built (the others' parsers keep nothing)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.only: str | None = None

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if (
            self.only is not None
            and self.only != name
            and self.only not in kwargs.get("aliases", ())
        ):
            return Skipped()
        return super().add_parser(name, **kwargs)

    def put_in_order(self, names: Sequence[str]) -> None:
        """List the commands in the order of ``names`` (in help and in error messages),
        whichever module registered them first."""
        rank = {name: i for i, name in enumerate(names)}
        self._choices_actions.sort(key=lambda action: rank[action.dest])
        parsers = sorted(self._name_parser_map.items(), key=lambda item: rank[item[0]])
        self._name_parser_map.clear()  # in place: it is also this action's `choices`
        self._name_parser_map.update(parsers)


class Skipped(argparse.ArgumentParser):
    """Where the grammar of a command not being run goes: it takes what is added to it
    and keeps nothing (so it costs nothing to build)."""

    def __init__(self) -> None:  # no ArgumentParser.__init__: that cost is what is saved
        pass

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return _IGNORED

    def set_defaults(self, **kwargs: Any) -> None:
        pass

    def add_subparsers(self, **kwargs: Any) -> Commands:  # type: ignore[override]
        nothing = Commands(option_strings=[], prog="", parser_class=Skipped)
        nothing.only = ""  # no command's name: every parser added to it is skipped
        return nothing

    def add_mutually_exclusive_group(self, **kwargs: Any) -> argparse._MutuallyExclusiveGroup:
        return argparse.ArgumentParser(add_help=False).add_mutually_exclusive_group()


_IGNORED = argparse.Action(option_strings=[], dest="ignored")


def subcommands(commands: Commands, name: str, text: str) -> _Subcommands:
    """A command with actions of its own (``hearth resource add``): its ACTION subparsers."""
    return commands.add_parser(name, help=text).add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
