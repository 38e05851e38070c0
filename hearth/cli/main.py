"""The ``hearth`` command: argument parsing, the node home, and turning errors into words.

Each subcommand is a function in :mod:`hearth.cli.commands` taking the parsed arguments
and a :class:`~hearth.cli.commands.Context`. Errors a member can act on
(:class:`~hearth.errors.HearthError`) print one line to stderr and exit 1; argument
mistakes exit 2 with argparse's usage message.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hearth import __version__
from hearth.errors import HearthError

__all__ = ["build_parser", "main", "resolve_home"]

_KINDS = ["tool", "food", "space", "skill", "money", "other"]


def resolve_home(given: str | None) -> Path:
    """The node home: ``--home``, else ``HEARTH_HOME``, else the platform's data directory."""
    if given:
        return Path(given).expanduser()
    env = os.environ.get("HEARTH_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("hearth", appauthor=False))


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _code_flags(parser: argparse.ArgumentParser, yes: str) -> None:
    """The options of a command that shows an invite code and waits for it to be used."""
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="how long the code waits"
    )
    parser.add_argument("--yes", action="store_true", help=yes)
    _json_flag(parser)


def build_parser(for_args: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command-line grammar: all of it, or, given the arguments it is for, the part
    they use (the same answers, errors and help for them).

    Building all seventy-odd parsers is a sixth of the start-up of a command, which uses
    one of them: with ``for_args`` naming a command, the others are left out. Arguments
    whose command is not plain to see without parsing get the whole grammar.
    """
    word = _command_word(for_args) if for_args is not None else None
    if word is not None:
        parser, sub = _grammar(only=word)
        if sub.built:
            return parser
    return _grammar(only=None)[0]


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


if TYPE_CHECKING:
    _Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _Subcommands = argparse._SubParsersAction


class _OneCommand(_Subcommands):
    """The top-level subcommands, each listed, but only the grammar of ``only`` built
    (every one when ``only`` is None); ``built`` says whether ``only`` was one of them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.only: str | None = None
        self.built = False

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if (
            self.only is not None
            and self.only != name
            and self.only not in kwargs.get("aliases", ())
        ):
            return _Skipped()
        self.built = True
        return super().add_parser(name, **kwargs)


class _Skipped(argparse.ArgumentParser):
    """Where the grammar of a command not being run goes: it takes what is added to it
    and keeps nothing (so it costs nothing to build)."""

    def __init__(self) -> None:  # no ArgumentParser.__init__: that cost is what is saved
        pass

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return _IGNORED

    def add_subparsers(self, **kwargs: Any) -> _OneCommand:  # type: ignore[override]
        nothing = _OneCommand(option_strings=[], prog="", parser_class=_Skipped)
        nothing.only = ""  # no command's name: every parser added to it is skipped
        return nothing

    def add_mutually_exclusive_group(self, **kwargs: Any) -> argparse._MutuallyExclusiveGroup:
        return argparse.ArgumentParser(add_help=False).add_mutually_exclusive_group()


_IGNORED = argparse.Action(option_strings=[], dest="ignored")


def _grammar(only: str | None) -> tuple[argparse.ArgumentParser, _OneCommand]:
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=_OneCommand)
    assert isinstance(sub, _OneCommand)
    sub.only = only

    p = sub.add_parser("init", help="create your identity on this device")
    p.add_argument("--name", required=True, help="your name as the group will see it")
    p.add_argument("--device-name", help="a name for this device (default: the host name)")
    _json_flag(p)

    p = sub.add_parser("whoami", help="show your identity")
    _json_flag(p)

    group = sub.add_parser("group", help="create, list and choose groups").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = group.add_parser("create", help="create a group (you become its first admin)")
    p.add_argument("name")
    p.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="URL",
        help="a relay the group syncs through (repeatable)",
    )
    p.add_argument(
        "--another",
        action="store_true",
        help="start it even though you are in a group with that name already",
    )
    _json_flag(p)
    p = group.add_parser("list", help="list your groups")
    _json_flag(p)
    p = group.add_parser("use", help="choose the group commands act on")
    p.add_argument("group", metavar="ID|NAME")

    member = sub.add_parser("member", help="the group's members").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = member.add_parser("list", help="list members")
    p.add_argument("--all", action="store_true", help="also those removed or gone")
    _json_flag(p)
    p = member.add_parser(
        "remove", help="take someone out of the group (admins; the group gets a new key)"
    )
    p.add_argument("member", help="name or id")
    p.add_argument("--yes", action="store_true", help="do not ask first")
    _json_flag(p)
    for verb, text in (("promote", "make a member an admin"), ("demote", "make an admin a member")):
        p = member.add_parser(verb, help=f"{text} (admins)")
        p.add_argument("member", help="name or id")
        _json_flag(p)
    p = sub.add_parser("leave", help="leave the current group")
    p.add_argument("--yes", action="store_true", help="do not ask first")
    _json_flag(p)

    device = sub.add_parser("device", help="the devices you use Hearth on").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = device.add_parser("add", help="use Hearth on another device too: a code to type in there")
    _code_flags(p, "let the device in, unasked")
    p = device.add_parser("list", help="your devices in the current group")
    p.add_argument("--all", action="store_true", help="every member's devices")
    _json_flag(p)
    p = device.add_parser("remove", help="stop a lost or old device writing for you")
    p.add_argument("device", help="its id (from `hearth device list`)")
    p.add_argument("--yes", action="store_true", help="do not ask first")
    _json_flag(p)

    res = sub.add_parser("resource", help="the group's things").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = res.add_parser("add", help="add a resource")
    p.add_argument("name")
    p.add_argument("--kind", choices=_KINDS, default="other")
    p.add_argument("--qty", default="1", help="how many (default 1)")
    p.add_argument("--unit", default="")
    p.add_argument("--location", default="")
    p.add_argument("--note", default="")
    p.add_argument("--shareable", action="store_true", help="willing to share with other groups")
    _json_flag(p)
    p = res.add_parser("list", help="list resources")
    p.add_argument("--kind", choices=_KINDS)
    p.add_argument("--search", help="only those whose name contains this")
    p.add_argument("--removed", action="store_true", help="include removed resources")
    _json_flag(p)
    p = res.add_parser("show", help="show one resource and its history")
    p.add_argument("resource", metavar="ID")
    _json_flag(p)
    p = res.add_parser("edit", help="change a resource's details")
    p.add_argument("resource", metavar="ID")
    p.add_argument("--name")
    p.add_argument("--kind", choices=_KINDS)
    p.add_argument("--qty", help="the quantity actually there (recorded as a correction)")
    p.add_argument("--unit")
    p.add_argument("--location")
    p.add_argument("--note")
    p.add_argument("--keeper", metavar="MEMBER", help="who looks after it")
    share = p.add_mutually_exclusive_group()
    share.add_argument("--shareable", dest="shareable", action="store_true", default=None)
    share.add_argument("--not-shareable", dest="shareable", action="store_false")
    _json_flag(p)
    p = res.add_parser("remove", help="remove a resource (its history stays)")
    p.add_argument("resource", metavar="ID")
    _json_flag(p)

    need = sub.add_parser("need", help="what members need").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = need.add_parser("add", help="record a need")
    p.add_argument("what")
    p.add_argument("--qty")
    p.add_argument("--unit", default="")
    p.add_argument(
        "--by", "--due", dest="by", metavar="DATE", help="needed by (2026-12-01, friday, +3d)"
    )
    _json_flag(p)
    p = need.add_parser("list", help="list open needs")
    p.add_argument("--all", action="store_true", help="include closed needs")
    _json_flag(p)
    p = need.add_parser("close", help="close a need")
    p.add_argument("need", metavar="ID")
    _json_flag(p)

    com = sub.add_parser("commitment", help="promises between members").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = com.add_parser("add", help="propose a commitment")
    p.add_argument("what")
    p.add_argument("--from", dest="giver", required=True, metavar="MEMBER")
    p.add_argument("--to", dest="receiver", required=True, metavar="MEMBER")
    p.add_argument("--resource", metavar="ID")
    p.add_argument("--qty")
    p.add_argument("--due", "--by", dest="due", metavar="DATE", help="by when")
    _json_flag(p)
    p = com.add_parser("list", help="list commitments")
    p.add_argument("--mine", action="store_true", help="only those you give or receive")
    p.add_argument("--open", action="store_true", help="only proposed and accepted ones")
    p.add_argument("--overdue", action="store_true", help="only open ones past their date")
    _json_flag(p)
    for verb in ("accept", "decline", "fulfil", "cancel"):
        aliases = ["fulfill"] if verb == "fulfil" else []
        p = com.add_parser(verb, help=f"{verb} a commitment", aliases=aliases)
        p.add_argument("commitment", metavar="ID")
        _json_flag(p)

    p = sub.add_parser("lend", help="record that a member borrowed a resource")
    p.add_argument("resource", metavar="RESOURCE")
    p.add_argument("--to", required=True, metavar="MEMBER")
    p.add_argument("--until", metavar="DATE")
    _json_flag(p)
    p = sub.add_parser("return", help="record that a borrowed resource came back")
    p.add_argument("resource", metavar="RESOURCE")
    p.add_argument("--from", dest="borrower", metavar="MEMBER", help="only this borrower's lend")
    _json_flag(p)
    for verb, text in (
        ("produce", "record that more of a resource exists"),
        ("consume", "record that some of a resource was used up"),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("resource", metavar="RESOURCE")
        p.add_argument("--qty", required=True)
        p.add_argument("--note", default="")
        _json_flag(p)
    p = sub.add_parser("give", help="record that some of a resource went to a member")
    p.add_argument("resource", metavar="RESOURCE")
    p.add_argument("--to", required=True, metavar="MEMBER")
    p.add_argument("--qty", required=True)
    _json_flag(p)

    p = sub.add_parser("history", help="who did what, when")
    p.add_argument("--resource", metavar="ID")
    p.add_argument("--limit", type=int, default=50, help="how many lines (0 for all)")
    _json_flag(p)
    p = sub.add_parser("conflicts", help="problems that need members to sort out")
    _json_flag(p)
    p = sub.add_parser("export", help="the whole ledger as JSON, CSV or ValueFlows JSON-LD")
    p.add_argument("--format", choices=["json", "csv", "valueflows"], default="json")
    p.add_argument("--output", "-o", metavar="FILE", help="write to a file instead of stdout")

    relay = sub.add_parser("relay", help="the relays your group syncs through").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = relay.add_parser("add", help="list a relay (ws://HOST:PORT)")
    p.add_argument("url")
    p = relay.add_parser("list", help="the group's relays")
    _json_flag(p)
    p = relay.add_parser("remove", help="stop using a relay")
    p.add_argument("url")
    p.add_argument("--yes", action="store_true", help="even if it is the group's only relay")
    p = relay.add_parser(
        "key", help="the group's relay key, for a relay that takes only listed groups"
    )
    _json_flag(p)

    peer = sub.add_parser(
        "peer", help="other members' nodes this one connects to directly"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = peer.add_parser("add", help="connect to a node's `hearth serve --listen` (ws://HOST:PORT)")
    p.add_argument("url")
    p = peer.add_parser("list", help="this node's peers")
    _json_flag(p)
    p = peer.add_parser("remove", help="stop connecting to a peer")
    p.add_argument("url")

    p = sub.add_parser("sync", help="exchange changes with the group's relays and peers now")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="give up on a relay or peer after this many seconds (default 30)",
    )
    p.add_argument("--all", action="store_true", help="every group, not just the current one")
    _json_flag(p)

    p = sub.add_parser("serve", help="stay connected: send and receive changes as they happen")
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="also accept other members' nodes here (port 0 picks a free one), and find "
        "and be found by them on the local network",
    )
    p.add_argument(
        "--no-lan",
        action="store_true",
        help="with --listen: do not announce this node or look for others on the network",
    )
    p.add_argument(
        "--hello-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="with --listen: close a connection that has not proven a device of one of this "
        "node's groups (or joined an invite) within this many seconds (default 10)",
    )

    p = sub.add_parser("doctor", help="check this node end to end and say what is wrong")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S")
    _json_flag(p)

    p = sub.add_parser("status", help="is this node in sync, and with which relays and peers")
    _json_flag(p)

    p = sub.add_parser(
        "invite", help="invite someone: a code to read out, then approve them by name"
    )
    p.add_argument(
        "--token",
        action="store_true",
        help="print a one-shot join token instead, for when you cannot be online together",
    )
    p.add_argument("--hours", type=float, default=24.0, help="how long a token stays valid")
    _code_flags(p, "let whoever uses the code in, unasked")
    p = sub.add_parser("join", help="join a group with the code (or token) a member gave you")
    p.add_argument("token", metavar="CODE", help="the invite code, like 7-orchard-lantern-cobalt")
    p.add_argument("--relay", metavar="URL", help="the relay the inviter uses (for a code)")
    p.add_argument("--name", help="your name, if this device has no identity yet")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S")
    _json_flag(p)

    _neighbourhood_commands(sub)

    bundle = sub.add_parser("bundle", help="carry changes by hand, on a USB stick").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = bundle.add_parser("export", help="write the group's bundles to a file")
    p.add_argument("file")
    p.add_argument(
        "--since",
        metavar="HAVE-FILE",
        help="only what the node that wrote this file (`bundle have`) lacks",
    )
    p = bundle.add_parser("import", help="apply the bundles in a file")
    p.add_argument("file")
    _json_flag(p)
    p = bundle.add_parser("have", help="write what this node has, for `export --since`")
    p.add_argument("file")

    p = sub.add_parser("demo", help="see Hearth working on an example group")
    p.add_argument(
        "--headless", action="store_true", help="print a summary instead of opening the app"
    )
    return parser, sub


def _neighbourhood_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``neighbourhood``, ``offer`` and ``request``: sharing with neighbouring groups."""
    hood = sub.add_parser(
        "neighbourhood", help="groups of groups that share surplus with each other"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = hood.add_parser("create", help="start a neighbourhood with your group in it (admins)")
    p.add_argument("name")
    _json_flag(p)
    p = hood.add_parser("invite", help="a code for another group's admin to join with (admins)")
    p.add_argument("--neighbourhood", metavar="NAME", help="which one, if the group is in several")
    _code_flags(p, "let whichever group uses the code in, unasked")
    p = hood.add_parser("join", help="take your group into a neighbourhood with a code (admins)")
    p.add_argument("token", metavar="CODE")
    p.add_argument("--relay", metavar="URL", help="the relay the inviting group uses")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S")
    _json_flag(p)
    p = hood.add_parser("list", help="the group's neighbourhoods and who is in them")
    _json_flag(p)
    p = hood.add_parser("leave", help="take your group out of a neighbourhood (admins)")
    p.add_argument("name", nargs="?", help="which one, if the group is in several")
    p.add_argument("--yes", action="store_true", help="do not ask first")
    _json_flag(p)

    offer = sub.add_parser(
        "offer", help="surplus your group shares with its neighbourhoods"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    p = offer.add_parser("add", help="offer part of a shareable resource to neighbour groups")
    p.add_argument("resource", metavar="RESOURCE")
    p.add_argument("--qty", required=True)
    p.add_argument("--neighbourhood", metavar="NAME", help="which one, if the group is in several")
    p.add_argument("--until", metavar="DATE", help="when the offer ends (default: never)")
    p.add_argument("--note", default="")
    _json_flag(p)
    p = offer.add_parser("list", help="your group's offers and those of neighbour groups")
    _json_flag(p)
    p = offer.add_parser("withdraw", help="take back one of your group's offers")
    p.add_argument("offer", metavar="ID")
    _json_flag(p)

    p = sub.add_parser(
        "request",
        help="ask a neighbour group for its offer (`request OFFER --qty N`), or "
        "`request list`, `request accept ID`, `request decline ID`",
    )
    p.add_argument("target", metavar="OFFER|list|accept|decline")
    p.add_argument("id", nargs="?", metavar="ID", help="the request to accept or decline")
    p.add_argument("--qty")
    p.add_argument("--note", default="")
    _json_flag(p)


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
    from hearth.cli import commands

    try:
        if args.command is None:
            return commands.open_app(args, resolve_home(args.home))
        return commands.run(args, resolve_home(args.home))
    except HearthError as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
