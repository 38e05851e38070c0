"""Invite codes at the terminal: showing one and letting in whoever uses it (``hearth
invite``, ``device add``, ``neighbourhood invite``), and using one (``hearth join``,
``neighbourhood join``). The exchange itself is :mod:`hearth.net.invite_code_client`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from hearth.cli.prompt import ask, yes
from hearth.crypto import SigningKey
from hearth.errors import TransportError, UsageError
from hearth.net.dialled_peers import LISTENING_AT
from hearth.node.node import Node

if TYPE_CHECKING:  # spake2 and the network load only when a code is used
    from hearth.protocol.invite_code import JoinerIntroduced

__all__ = ["find_inviter_nearby", "invite_by_code", "token_for_code"]


def invite_by_code(
    args: argparse.Namespace,
    node: Node,
    *,
    make_token: Callable[[JoinerIntroduced], str] | None = None,
    who: str = "the new member's device",
    question: Callable[[str], str] = lambda name: f"Let {name} join the group? [y/N] ",
    join_command: str = "hearth join",
    done: Callable[[str], str] = lambda name: f"{name} can now join; they fetch the group next.",
) -> int:
    """A code on the first line, then wait for whoever uses it and let them in if the
    member approves (``hearth invite``, ``device add``, ``neighbourhood invite``);
    ``make_token`` records the invite and gives what is sealed to the joiner."""
    from hearth.net.invite_code_client import offer_invite

    if args.timeout <= 0:
        raise UsageError("--timeout must be more than zero seconds.")
    meeting, by_relay = _meeting_place(node)
    where = f" --relay {meeting}" if by_relay else ""
    nearby = "" if by_relay else " (on this network)"

    def say(data: dict[str, str], text: str) -> None:
        print(json.dumps(data) if args.json else text, flush=True)

    def show_code(code: str) -> None:
        say({"code": code}, code)
        if not args.json:
            print(
                f"On {who}{nearby}, run `{join_command} {code}{where}`. Waiting…",
                flush=True,
            )

    def show_phrase(phrase: str) -> None:
        say({"phrase": phrase}, f"Verification phrase: {phrase} — they should see the same.")

    async def approve(name: str) -> bool:
        if args.yes:
            return True
        return yes(await ask(question(name)))

    result = asyncio.run(
        offer_invite(
            node,
            meeting,
            timeout=args.timeout,
            show_code=show_code,
            show_phrase=show_phrase,
            approve=approve,
            make_token=make_token,
        )
    )
    if result.refused:
        say({"refused": "true"}, "Not let in. The code is used up.")
        return 1
    say({"joined": result.joined}, done(result.joined))
    return 0


def _meeting_place(node: Node) -> tuple[str, bool]:
    """Where the inviter and the joiner meet: the group's first relay, else this home's
    `hearth serve --listen`; and whether it is a relay."""
    relays = node.view().relays()
    if relays:
        return relays[0], True
    listener = _local_listener(node)
    if listener is None:
        raise TransportError(
            "The group lists no relay to meet through, and no `hearth serve --listen` runs "
            "on this device: add a relay (`hearth relay add URL`), start `hearth serve "
            "--listen 0.0.0.0:0` to invite over the local network, or hand over a token "
            "(`hearth invite --token`)."
        )
    return listener, False


def _local_listener(node: Node) -> str | None:
    """The address of this home's `hearth serve --listen`, as reached from this machine."""
    url = node.store.get_meta(LISTENING_AT)
    if not url:
        return None
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - listening on every interface
        host = "127.0.0.1"
    return f"ws://{host}:{port}"


def find_inviter_nearby(code_text: str, timeout: float) -> str:
    """The address of the node on this network holding the invite of a code (found by
    mDNS), or a :class:`TransportError` that says what to do."""
    from hearth.net.lan import find_invite
    from hearth.protocol.invite_code import parse_code

    code = parse_code(code_text)
    wait = min(timeout, 15.0)
    print(
        f"No --relay given: looking for the inviting device on this network (up to {wait:g} s)…",
        file=sys.stderr,
        flush=True,
    )
    found = asyncio.run(find_invite(code.nameplate, timeout=wait))
    if found is None:
        raise TransportError(
            "No relay was given and no inviting device answered on this network: ask the "
            "inviter which relay to use (--relay URL), or join the same network as their "
            "`hearth serve --listen`."
        )
    return found


def token_for_code(args: argparse.Namespace, relay: str, *, name: str, device: SigningKey) -> str:
    """Run the code in ``args.token`` with the inviter through the relay's mailbox,
    introducing ourselves as ``name`` with ``device`` (whose key the exchange proves);
    the token it yields once the inviter approves."""
    from hearth.net.invite_code_client import accept_invite
    from hearth.protocol.invite_code import parse_code

    code = parse_code(args.token)
    print(
        f"Meeting the inviter through {relay.strip()}; waiting for them to let you in…",
        file=sys.stderr,
        flush=True,
    )

    def show_phrase(phrase: str) -> None:
        text = f"Verification phrase: {phrase} — check the inviter sees the same."
        print(json.dumps({"phrase": phrase}) if args.json else text, flush=True)

    return asyncio.run(
        accept_invite(
            relay.strip(),
            code,
            name=name,
            device=device,
            timeout=args.timeout,
            show_phrase=show_phrase,
        )
    )
