"""The ``hearth`` command: argument parsing, the node home, and turning errors into words.

Each command module registers its own subcommands, each with its handler
(:mod:`hearth.cli.grammar`); :data:`COMMANDS` says which module registers which command,
so that a command line imports only its own. Errors a member can act on
(:class:`~hearth.errors.HearthError`) print one line to stderr and exit 1; argument
mistakes exit 2 with argparse's usage message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hearth import __version__
from hearth.cli.grammar import Commands, Handler
from hearth.errors import HearthError

__all__ = ["COMMANDS", "build_parser", "main", "resolve_home"]

_GROUP = "hearth.cli.group_commands"
_LEDGER = "hearth.cli.ledger_commands"
_SYNC = "hearth.cli.sync_commands"
_NEIGHBOURHOOD = "hearth.cli.neighbourhood_commands"

#: The module that registers each command, in the order ``hearth --help`` lists them: a
#: command line imports only its own command's module; the whole grammar imports them all.
COMMANDS: dict[str, str] = {
    "init": _GROUP,
    "whoami": _GROUP,
    "group": _GROUP,
    "member": _GROUP,
    "leave": _GROUP,
    "device": _GROUP,
    "resource": _LEDGER,
    "need": _LEDGER,
    "commitment": _LEDGER,
    "lend": _LEDGER,
    "return": _LEDGER,
    "produce": _LEDGER,
    "consume": _LEDGER,
    "give": _LEDGER,
    "history": _LEDGER,
    "conflicts": _LEDGER,
    "export": _LEDGER,
    "relay": _SYNC,
    "peer": _SYNC,
    "sync": _SYNC,
    "serve": _SYNC,
    "doctor": _SYNC,
    "status": _SYNC,
    "invite": _SYNC,
    "join": _SYNC,
    "neighbourhood": _NEIGHBOURHOOD,
    "offer": _NEIGHBOURHOOD,
    "request": _NEIGHBOURHOOD,
    "bundle": _SYNC,
    "demo": _GROUP,
}


def resolve_home(given: str | None) -> Path:
    """The node home: ``--home``, else ``HEARTH_HOME``, else the platform's data directory."""
    if given:
        return Path(given).expanduser()
    env = os.environ.get("HEARTH_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("hearth", appauthor=False))


def build_parser(for_args: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command-line grammar: all of it, or, given the arguments it is for, the part
    they use (the same answers, errors and help for them).

    Building all seventy-odd parsers is a sixth of the start-up of a command, which uses
    one of them: with ``for_args`` naming a command, only its module is imported and only
    its grammar built. Arguments whose command is not plain to see without parsing get
    the whole grammar.
    """
    word = _command_word(for_args) if for_args is not None else None
    parser, commands = _top()
    if word in COMMANDS:
        commands.only = word
        _registration(COMMANDS[word])(commands)
        return parser
    for module in dict.fromkeys(COMMANDS.values()):
        _registration(module)(commands)
    commands.put_in_order(list(COMMANDS))
    return parser


def _registration(module: str) -> Callable[[Commands], None]:
    """The ``register`` function of a command module."""
    register: Callable[[Commands], None] = importlib.import_module(module).register
    return register


_PLAIN_FLAGS = frozenset({"-v", "--verbose", "-h", "--help", "--version"})


def _command_word(args: Sequence[str]) -> str | None:
    """The command the arguments run, if they spell it plainly (``[--home DIR] [-v]
    COMMAND ...``); ``None`` for anything else, which the whole grammar then judges."""
    rest = list(args)
    while rest:
        first = rest.pop(0)
        if first == "--home" and rest:
            rest.pop(0)
        elif first.startswith("--home=") or first in _PLAIN_FLAGS:
            continue
        elif first.startswith("-"):
            return None  # an abbreviation, a typo, `--`: argparse's to read
        else:
            return first
    return None


def _top() -> tuple[argparse.ArgumentParser, Commands]:
    """The grammar's top: the options before the command, and the commands (none yet)."""
    parser = argparse.ArgumentParser(
        prog="hearth",
        description="Hearth: your group's shared ledger of things, needs and promises. "
        "Run without a command to open the app.",
    )
    parser.add_argument(
        "--home",
        metavar="DIR",
        help="the node's home directory (default: $HEARTH_HOME or your data directory)",
    )
    parser.add_argument("--version", action="version", version=f"hearth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", action=Commands)
    assert isinstance(commands, Commands)
    return parser, commands


def main(argv: Sequence[str] | None = None, *, args: argparse.Namespace | None = None) -> int:
    """Run the ``hearth`` command (from ``argv``, or ``args`` already parsed from it);
    returns the exit status. Ctrl-C ends it with exit status 130 and a short word."""
    try:
        return _main(argv, args)
    except KeyboardInterrupt:
        print("\nhearth: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _main(argv: Sequence[str] | None, args: argparse.Namespace | None) -> int:
    if args is None:
        args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        # Bare `hearth` run as `python -m hearth.cli.main`: the app lives in `tui`.
        print("The Hearth app opens with the installed `hearth` command; `--help` lists the rest.")
        return 0
    handler: Handler = args.handler
    try:
        return handler(args, resolve_home(args.home))
    except HearthError as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
