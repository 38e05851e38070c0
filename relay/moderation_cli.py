"""``hearth-relay topics``, ``freeze``, ``drop``, ``ban`` and the rest: moderation an
operator runs on the host, while the relay runs, on either store (relay/moderation.py).

Each action goes into the store with a line in its moderation log; running relay
processes apply it within a couple of seconds (or at once on SIGHUP).
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from hearth.errors import ConfigError, StorageError
from relay.config import RelayConfig
from relay.moderation import TAG_PREFIX, ModerationError, TopicInfo, parse_target
from relay.sqlite_store import STORE_FILE
from relay.storage import OperatorStore
from relay.stores import open_store

__all__ = ["COMMANDS", "add_parsers", "run"]

log = logging.getLogger("relay.moderation")

_HELP = {
    "topics": "list the topics stored: size, bundles, first seen, last write, state",
    "freeze": "take no more bundles for a topic (it is still served)",
    "unfreeze": "take a topic's bundles again",
    "drop": "delete everything a topic holds and refuse it from then on",
    "ban": "refuse a client address or range (CIDR), a client's tag from today's log, "
    "or a relay key / peer relay id",
    "unban": "lift a ban",
    "allow": 'let a relay key register topics (admission = "allow-list")',
    "disallow": "take a relay key off the allow-list",
    "invite": "make an admission code a group adds to this relay's address (allow-list mode)",
    "uninvite": "revoke an admission code",
    "moderation": "show the bans, allowed keys, dropped topics and the moderation log",
}
COMMANDS = tuple(_HELP)

_DONE = {
    "freeze": "Froze topic {t}: its bundles are refused from now on; it is still served.",
    "unfreeze": "Unfroze topic {t}: its bundles are taken again.",
    "drop": "Dropped topic {t}: everything it held is deleted, and it is refused from now on.",
    "ban": "Banned {t}.",
    "unban": "Lifted the ban on {t}.",
    "allow": "Allowed relay key {t} to register topics.",
    "disallow": "Took relay key {t} off the allow-list.",
    "invite": "Made an admission invite.",
    "uninvite": "Revoked that admission invite.",
}
_UNCHANGED = {
    "freeze": "Topic {t} is frozen already, or not stored here (see `hearth-relay topics`).",
    "unfreeze": "Topic {t} is not frozen by the operator, or not stored here.",
    "drop": "Topic {t} was dropped already.",
    "ban": "{t} is banned already.",
    "unban": "{t} is not banned.",
    "allow": "Relay key {t} is allowed already.",
    "disallow": "Relay key {t} is not on the allow-list.",
    "invite": "That invite exists already.",
    "uninvite": "That is not a live admission invite.",
}


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    """The moderation subcommands; returns them for the store options every one takes."""
    made = []
    for name, text in _HELP.items():
        command = sub.add_parser(name, help=text, description=text)
        if name == "topics":
            command.add_argument("--json", action="store_true", help="one JSON object per topic")
            command.add_argument(
                "--sort",
                choices=("size", "bundles", "first", "last"),
                default="size",
                help="biggest, most bundles, newest first seen, or most recently written first",
            )
        elif name == "moderation":
            command.add_argument(
                "--log", type=_log_lines, default=20, metavar="N", help="log lines (0 to 100000)"
            )
        elif name == "invite":
            command.add_argument("--reason", default="", help="whom it is for, for the log")
        else:
            what = "TOPIC" if name in ("freeze", "unfreeze", "drop") else "TARGET"
            command.add_argument("target", metavar=what)
            command.add_argument("--reason", default="", help="why, for the moderation log")
            if name == "drop":
                command.add_argument(
                    "--yes", action="store_true", help="yes, delete what the topic holds"
                )
        made.append(command)
    return made


_MOST_LOG_LINES = 100_000


def _log_lines(text: str) -> int:
    """``--log N``: a count of lines a store can be asked for (argparse names the option
    in its refusal)."""
    try:
        lines = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= lines <= _MOST_LOG_LINES:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and {_MOST_LOG_LINES}")
    return lines


def run(args: argparse.Namespace, config: RelayConfig) -> int:
    """Carry out one moderation subcommand."""
    if not config.database_url and not (Path(config.data) / STORE_FILE).exists():
        raise StorageError(
            f"There is no relay store in {config.data}; give the relay's --data or --config."
        )
    store = open_store(config)
    try:
        if args.command == "invite":
            return _invite(store, args.reason)
        if args.command == "topics":
            _topics(store, args.sort, args.json)
        elif args.command == "moderation":
            _show(store, args.log)
        else:
            return _act(store, args.command, args.target, args.reason, getattr(args, "yes", True))
    finally:
        store.close()
    return 0


def _act(store: OperatorStore, action: str, target: str, reason: str, sure: bool) -> int:
    try:
        value = parse_target(action, target)
    except ModerationError as exc:
        raise ConfigError(str(exc)) from exc
    if action == "drop" and not sure:
        raise ConfigError(
            f"Dropping deletes everything topic {value} holds, for good; add --yes to do it."
        )
    changed = store.moderate(action, value, reason, time.time())
    if not changed:
        print(_UNCHANGED[action].format(t=value))
        return 0 if action != "freeze" or store.topic(bytes.fromhex(value)) else 1
    # The log says what was done; an address range in it shows as [address] like any other.
    log.info("moderation: %s %s", action, value, extra={"reason": reason or "-"})
    print(_DONE[action].format(t=value) + " Running relays apply it within seconds.")
    if value.startswith(TAG_PREFIX) and action == "ban":
        print(
            "A tag is the client as today's log of one relay process shows it: the ban "
            "holds until the tag changes at midnight (UTC)."
        )
    return 0


def _invite(store: OperatorStore, reason: str) -> int:
    code = secrets.token_hex(16)  # no leading "-" for a command line to take as an option
    store.moderate("invite", parse_target("invite", code), reason, time.time())
    log.info("moderation: invite", extra={"reason": reason or "-"})
    print(
        f"{code}\nThe group adds this relay with the code in its address, e.g.\n"
        f"  hearth relay add wss://relay.example.org/?admit={code}\n"
        "Its nodes may then register their groups here while the relay takes only listed "
        'ones (admission = "allow-list"). The code is shown this once; '
        "`hearth-relay uninvite CODE` revokes it."
    )
    return 0


_ORDER: dict[str, Callable[[TopicInfo], float]] = {
    "size": lambda t: t.bytes,
    "bundles": lambda t: t.bundles,
    "first": lambda t: t.first_seen,
    "last": lambda t: t.last_write,
}


def _when(seconds: float) -> str:
    if not seconds:
        return "-"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GiB"


def _state(topic: TopicInfo, now: float) -> str:
    if topic.held:
        return "frozen (operator)"
    if topic.frozen_at and now >= topic.frozen_at:
        return "frozen (group)"
    return "open"


def _topics(store: OperatorStore, sort: str, as_json: bool) -> None:
    topics = sorted(store.topic_list(), key=_ORDER[sort], reverse=True)
    now = time.time()
    if as_json:
        for t in topics:
            row = {
                "topic": t.topic.hex(),
                "bytes": t.bytes,
                "bundles": t.bundles,
                "first_seen": t.first_seen or None,
                "last_write": t.last_write or None,
                "state": _state(t, now),
            }
            print(json.dumps(row))
        return
    print(
        f"{'topic':<64}  {'size':>10}  {'bundles':>8}  {'first seen':<16}  "
        f"{'last write':<16}  state"
    )
    for t in topics:
        print(
            f"{t.topic.hex()}  {_size(t.bytes):>10}  {t.bundles:>8}  {_when(t.first_seen):<16}  "
            f"{_when(t.last_write):<16}  {_state(t, now)}"
        )
    print(f"{len(topics)} topics, {_size(sum(t.bytes for t in topics))} (times in UTC)")


def _show(store: OperatorStore, lines: int) -> None:
    entries = sorted(store.moderation_lists())
    titles = {
        "ban": "banned",
        "allow": "allowed keys",
        "drop": "dropped topics",
        "invite": "admission invites (digests)",
    }
    for kind, title in titles.items():
        mine = [e for e in entries if e[0] == kind]
        print(f"{title}: {len(mine)}")
        for _, value, reason, at in mine:
            print(f"  {value}  since {_when(at)}" + (f"  ({reason})" if reason else ""))
    print("moderation log (newest first):")
    for at, action, target, reason in store.moderation_log(lines):
        print(f"  {_when(at)}  {action} {target}" + (f"  ({reason})" if reason else ""))
