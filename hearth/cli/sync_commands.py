"""``hearth`` subcommands about getting changes between nodes: relays, sync, joining, status
and carrying bundles by hand."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hearth.cli.grammar import Commands, code_flags, json_flag, on_node, subcommands
from hearth.cli.invite_codes import find_inviter_nearby, invite_by_code, token_for_code
from hearth.cli.prompt import ask
from hearth.cli.render import emit
from hearth.crypto import SigningKey
from hearth.errors import TransportError, UsageError
from hearth.group import member_changes as members
from hearth.group.rotation import admission_key
from hearth.ledger import membership_rules
from hearth.ledger.ledger import check_relay_url
from hearth.neighbourhood import participation
from hearth.net.carrying import read_changes, write_changes, write_have
from hearth.net.dialled_peers import (
    add_peer,
    list_peers,
    peer_device,
    remove_peer,
    waiting_for,
)
from hearth.net.syncing import merged, sync_now, sync_report
from hearth.node.identity import create_identity, has_identity
from hearth.node.node import Node, open_node
from hearth.protocol.invite_token import (
    DEVICE_PREFIX,
    decode_device_token,
    decode_token,
    encode_token,
    is_token,
)
from hearth.validity.alerts import admin_alerts
from hearth.validity.intake import Verdict, damage
from hearth.validity.joins import claim_standing
from hearth.validity.retraction import removal_notices
from hearth.values import counted, format_time

if TYPE_CHECKING:  # networking loads aiohttp: only the commands that connect import it
    from hearth.net.sync_client import RelayReport

__all__ = ["register", "say_progress"]


def register(commands: Commands) -> None:
    """Add these commands to the grammar, each with its handler."""
    _register_relay(commands)
    _register_peer(commands)
    _register_sync_and_serve(commands)
    p = commands.add_parser("doctor", help="check this node end to end and say what is wrong")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S")
    json_flag(p)
    p.set_defaults(handler=on_node(_doctor))
    p = commands.add_parser("status", help="is this node in sync, and with which relays and peers")
    json_flag(p)
    p.set_defaults(handler=on_node(_status))
    _register_invite_and_join(commands)
    _register_bundle(commands)


def _register_relay(commands: Commands) -> None:
    relay = subcommands(commands, "relay", "the relays your group syncs through")
    p = relay.add_parser("add", help="list a relay (ws://HOST:PORT)")
    p.add_argument("url")
    p.set_defaults(handler=on_node(_relay_add))
    p = relay.add_parser("list", help="the group's relays")
    json_flag(p)
    p.set_defaults(handler=on_node(_relay_list))
    p = relay.add_parser("remove", help="stop using a relay")
    p.add_argument("url")
    p.add_argument("--yes", action="store_true", help="even if it is the group's only relay")
    p.set_defaults(handler=on_node(_relay_remove))
    p = relay.add_parser(
        "key", help="the group's relay key, for a relay that takes only listed groups"
    )
    json_flag(p)
    p.set_defaults(handler=on_node(_relay_key))


def _register_peer(commands: Commands) -> None:
    peer = subcommands(commands, "peer", "other members' nodes this one connects to directly")
    p = peer.add_parser("add", help="connect to a node's `hearth serve --listen` (ws://HOST:PORT)")
    p.add_argument("url")
    p.set_defaults(handler=on_node(_peer_add))
    p = peer.add_parser("list", help="this node's peers")
    json_flag(p)
    p.set_defaults(handler=on_node(_peer_list))
    p = peer.add_parser("remove", help="stop connecting to a peer")
    p.add_argument("url")
    p.set_defaults(handler=on_node(_peer_remove))


def _register_sync_and_serve(commands: Commands) -> None:
    p = commands.add_parser("sync", help="exchange changes with the group's relays and peers now")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="give up on a relay or peer after this many seconds (default 30)",
    )
    p.add_argument("--all", action="store_true", help="every group, not just the current one")
    json_flag(p)
    p.set_defaults(handler=on_node(_sync))
    p = commands.add_parser("serve", help="stay connected: send and receive changes as they happen")
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
    p.set_defaults(handler=on_node(_serve))


def _register_invite_and_join(commands: Commands) -> None:
    p = commands.add_parser(
        "invite", help="invite someone: a code to read out, then approve them by name"
    )
    p.add_argument(
        "--token",
        action="store_true",
        help="print a one-shot join token instead, for when you cannot be online together",
    )
    p.add_argument("--hours", type=float, default=24.0, help="how long a token stays valid")
    code_flags(p, "let whoever uses the code in, unasked")
    p.set_defaults(handler=on_node(_invite))
    p = commands.add_parser("join", help="join a group with the code (or token) a member gave you")
    p.add_argument("token", metavar="CODE", help="the invite code, like 7-orchard-lantern-cobalt")
    p.add_argument("--relay", metavar="URL", help="the relay the inviter uses (for a code)")
    p.add_argument("--name", help="your name, if this device has no identity yet")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S")
    json_flag(p)
    p.set_defaults(handler=_join)


def _register_bundle(commands: Commands) -> None:
    bundle = subcommands(commands, "bundle", "carry changes by hand, on a USB stick")
    p = bundle.add_parser("export", help="write the group's bundles to a file")
    p.add_argument("file")
    p.add_argument(
        "--since",
        metavar="HAVE-FILE",
        help="only what the node that wrote this file (`bundle have`) lacks",
    )
    p.set_defaults(handler=on_node(_bundle_export))
    p = bundle.add_parser("import", help="apply the bundles in a file")
    p.add_argument("file")
    json_flag(p)
    p.set_defaults(handler=on_node(_bundle_import))
    p = bundle.add_parser("have", help="write what this node has, for `export --since`")
    p.add_argument("file")
    p.set_defaults(handler=on_node(_bundle_have))


def _relay_add(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        ledger.add_relay(args.url)
    print(f"The group now syncs through {args.url.strip()}.")
    return 0


def _relay_list(args: argparse.Namespace, node: Node) -> int:
    relays = node.view().relays()
    return emit(args, relays, "\n".join(relays) or "No relays yet: `hearth relay add ws://…`.")


def _relay_remove(args: argparse.Namespace, node: Node) -> int:
    listed = node.view().relays()
    if listed == [args.url.strip()] and not args.yes:
        raise UsageError(
            f"{args.url.strip()} is the group's only relay: without one, members sync only "
            "on the same network or by file, and invite codes need a `hearth serve --listen`. "
            "Add another first (`hearth relay add URL`), or add --yes to remove it anyway."
        )
    with node.change() as ledger:
        ledger.remove_relay(args.url)
    print(f"The group no longer syncs through {args.url.strip()}.")
    return 0


def _relay_key(args: argparse.Namespace, node: Node) -> int:
    """The key relays admit the group's bundles by (public; it says nothing about members):
    what an operator running ``admission = "allow-list"`` asks for."""
    key = admission_key(node, node.group().id)
    text = (
        f"{key}\nGive this to the operator of a relay that takes only the groups it lists "
        "(`hearth-relay allow KEY`). It changes when a member is removed."
    )
    return emit(args, {"relay_key": key}, text)


def _peer_add(args: argparse.Namespace, node: Node) -> int:
    url = add_peer(node.store, args.url, node.clock.now_ms())
    print(f"This node now connects to {url} directly when it syncs.")
    return 0


def _peer_list(args: argparse.Namespace, node: Node) -> int:
    peers = list_peers(node.store)
    return emit(args, peers, "\n".join(peers) or "No peers yet: `hearth peer add ws://…`.")


def _peer_remove(args: argparse.Namespace, node: Node) -> int:
    remove_peer(node.store, args.url)
    print(f"This node no longer connects to {args.url.strip()}.")
    return 0


def _report_json(reports: list[RelayReport]) -> dict[str, object]:
    relays = [r for r in reports if not r.peer]
    peers = [r for r in reports if r.peer]
    return {
        "sent": sum(r.sent for r in reports),
        "received": sum(r.received for r in reports),
        "applied": sum(r.applied for r in reports),
        "rejected": sum(r.rejected for r in reports),
        "damaged": sum(r.damaged for r in reports),
        "relays_ok": [r.url for r in relays if r.ok],
        "relays_failed": [{"url": r.url, "error": r.error} for r in relays if not r.ok],
        "peers_ok": [r.url for r in peers if r.ok],
        "peers_failed": [{"url": r.url, "error": r.error} for r in peers if not r.ok],
    }


def say_progress(going: Sequence[RelayReport]) -> None:
    """What a sync still going has come to, on stderr (stdout keeps the result alone)."""
    parts = [
        f"{r.url}: {counted(r.received, 'bundle')} received so far"
        if r.received
        else f"{r.url}: nothing received yet"
        for r in going
    ]
    print(f"Still syncing — {'; '.join(parts)}", file=sys.stderr, flush=True)


def _sync(args: argparse.Namespace, node: Node) -> int:
    if args.timeout <= 0:
        raise UsageError("--timeout must be more than zero seconds.")
    groups = [g.id for g in node.groups()] if args.all else [node.current_group().id]
    started = node.clock.now_ms()
    reports = sync_now(
        node, groups, timeout=args.timeout, on_progress=None if args.json else say_progress
    )
    if not reports:
        raise TransportError(
            "The group lists no relays and this node has no peers: add one with "
            "`hearth relay add URL` or `hearth peer add URL`."
        )
    data = _report_json(reports)
    lines, out = sync_report(node, groups, reports, started)
    lines += out
    data["told"] = out
    emit(args, data, "\n".join(lines))
    if not any(r.ok for r in reports):
        if not args.json:
            print("No relay or peer could be reached; your changes are kept and go out next time.")
        return 1
    return 0


def _serve(args: argparse.Namespace, node: Node) -> int:
    import signal

    from hearth.net.serve import serve

    listen = _host_port(args.listen) if args.listen else None

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def listening(url: str) -> None:
            print(f"listening on {url}", flush=True)

        names = ", ".join(f"'{g.name}'" for g in node.groups()) or "no group yet"
        print(f"Serving {names}; stop with Ctrl-C.", flush=True)
        await serve(
            node,
            stop,
            listen=listen,
            on_listening=listening,
            lan=not args.no_lan,
            hello_timeout_s=args.hello_timeout,
        )

    asyncio.run(run())
    return 0


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r}: give HOST:PORT, like 0.0.0.0:8766 (port 0: any).")
    return host.strip("[]"), int(port)


def _doctor(args: argparse.Namespace, node: Node) -> int:
    from hearth.cli.doctor import examine, finding_lines

    def checking(url: str) -> None:
        if not args.json:
            print(f"Checking {url} (up to {args.timeout:g} s)…", file=sys.stderr, flush=True)

    findings = examine(node, timeout=args.timeout, checking=checking)
    data = [
        {"check": f.check, "ok": f.ok, "detail": f.detail, "advice": f.advice} for f in findings
    ]
    emit(args, data, "\n".join(finding_lines(findings)))
    return 0 if all(f.ok for f in findings) else 1


def _status(args: argparse.Namespace, node: Node) -> int:
    group = node.current_group()
    relays = [_link(node, group.id, url, peer=False) for url in node.view(group.id).relays()]
    peers = [_link(node, group.id, url, peer=True) for url in list_peers(node.store)]
    gaps = len(node.feeds.waiting(group.id))
    notices = removal_notices(node)
    broken = admin_alerts(node, group.id)
    damaged = damage(node)
    joining = claim_standing(node, group.id)
    data = {
        "group": group.name,
        "group_id": group.id,
        "relays": relays,
        "peers": peers,
        "gaps": gaps,
        "taken_back": [{"at": at, "what": what} for at, what in notices],
        "admin_alerts": [alert.as_json() for alert in broken],
        "damaged": [{"source": d.source, "count": d.count, "last_at": d.last_at} for d in damaged],
        "joining": joining,
    }
    standing = members.standing_note(node, group.id)
    data["standing"] = standing
    lines = [f"{group.name}:"] + ([f"  {standing}"] if standing else [])
    if joining:
        lines.append(f"  {joining}")
    lines += _link_lines("relay", relays) + _link_lines("peer", peers)
    if not relays:
        lines.append("  no relays: `hearth relay add ws://HOST:PORT`")
    if gaps:
        lines.append(
            f"  {counted(gaps, 'bundle')} {'is' if gaps == 1 else 'are'} waiting for earlier "
            "ones that have not arrived"
        )
    for d in damaged:
        lines.append(
            f"  {counted(d.count, 'bundle')} arrived damaged from {d.source} (the last on "
            f"{format_time(d.last_at)}); each is read again, from there or elsewhere"
        )
    lines += [f"  {format_time(at)}: {what}" for at, what in notices]
    lines += [f"  for you as an admin: {alert.what}; {alert.advice}" for alert in broken]
    return emit(args, data, "\n".join(lines))


def _link(node: Node, group_id: str, url: str, *, peer: bool) -> dict[str, object]:
    """What ``hearth status`` says of one relay or peer of the group."""
    logged = node.store.sync_log([url]).get(url)
    last_ok, last_attempt, error = (
        (logged.last_ok, logged.last_attempt, logged.last_error) if logged else (None,) * 3
    )
    found: dict[str, object] = {
        "url": url,
        "reachable": bool(last_attempt and not error),
        "last_sync": last_ok,
        "last_error": error,
        "waiting_to_send": waiting_for(node.store, url, group_id, peer=peer),
        # Records for the group's neighbourhoods go out through its relays too.
        "neighbourhood_waiting": 0
        if peer
        else sum(
            len(records)
            for hood in participation.memberships(node, group_id)
            for records in participation.outgoing(node, hood, url).values()
        ),
    }
    if peer:
        found["device"] = _whose_device(node, group_id, peer_device(node.store, url))
    return found


def _whose_device(node: Node, group_id: str, device: bytes | None) -> str | None:
    """Whose device a peer proved to be: "NAME's device", or None if not yet known."""
    if device is None:
        return None
    view = node.view(group_id)
    cards = membership_rules.cards(view.tables["members"])
    names = {m.id: m.name for m in view.members(include_gone=True)}
    owner = next((names.get(c.member_id) for c in cards if c.key == device), None)
    return f"{owner}'s device" if owner else f"device {device.hex()[:12]}"


def _link_lines(kind: str, links: list[dict[str, object]]) -> list[str]:
    """A line of ``hearth status`` for each relay (or peer) in ``links``."""
    lines = []
    for r in links:
        when = format_time(int(str(r["last_sync"]))) if r["last_sync"] else "never"
        state = "reachable" if r["reachable"] else f"not reached ({r['last_error'] or 'not tried'})"
        who = f" ({r['device']})" if r.get("device") else ""
        hood = int(str(r["neighbourhood_waiting"]))
        lines.append(
            f"  {kind} {r['url']}{who}: {state}; last synced {when}; "
            f"{counted(int(str(r['waiting_to_send'])) + hood, 'bundle')} waiting to go out"
            + (f" ({hood} for the neighbourhood)" if hood else "")
        )
    return lines


def _invite(args: argparse.Namespace, node: Node) -> int:
    if not args.token:
        return invite_by_code(args, node)
    if args.hours <= 0:
        raise UsageError("--hours must be more than zero.")
    token = node.create_invite(valid_for_ms=int(args.hours * 3_600_000))
    text = encode_token(token)
    if args.json:
        return emit(args, {"token": text, "expires_at": token.expires_at}, "")
    print(text)
    print(
        f"Give this token to the new member; it works once, until "
        f"{format_time(token.expires_at)} UTC. It holds the group's keys: share it privately.",
        file=sys.stderr,
    )
    return 0


def _join(args: argparse.Namespace, home: Path) -> int:
    """``hearth join CODE`` (or a token): create the identity if needed, join, then try a
    first sync."""
    device = None if has_identity(home) else SigningKey.generate()
    lan_peer = None
    if device is not None and not args.name and not args.token.startswith(DEVICE_PREFIX):
        args.name = _ask_name()  # before the inviter is asked to let this device in
    if is_token(args.token):
        text = args.token
    else:
        if args.relay:
            relay = check_relay_url(args.relay)
        else:
            relay = lan_peer = find_inviter_nearby(args.token, args.timeout)
        if device is None:
            with open_node(home) as node:
                name, key = node.identity.name, node.identity.device_key
        else:
            name, key = args.name or os.uname().nodename or "a new device", device
        text = token_for_code(args, relay, name=name, device=key)
    as_device = text.startswith(DEVICE_PREFIX)
    if as_device:
        if device is None:
            raise UsageError(
                "This home already has an identity; a new device needs a fresh one "
                "(use another --home)."
            )
        given = decode_device_token(text)
        token = given.token
        create_identity(
            home, name=given.member_name, member=SigningKey(given.member_secret), device=device
        )
    else:
        token = decode_token(text)
        if device is not None:
            if not args.name:
                if is_token(args.token):
                    raise UsageError("This device has no identity yet: add --name YOUR-NAME.")
                raise UsageError(
                    "This device has no identity yet, so the group could not be told your "
                    "name: ask for a new code, and join with --name YOUR-NAME."
                )
            create_identity(home, name=args.name, device=device)
    with open_node(home) as node:
        group = node.join_with_token(token, as_device=as_device)
        if lan_peer is not None:  # met over the local network: sync with the inviter there
            add_peer(node.store, lan_peer, node.clock.now_ms())
        reports = _first_sync(node, token.relays, lan_peer, group.id, args.timeout)
        if as_device and node.claim_device(group.id):
            reports = merged(
                reports + _first_sync(node, token.relays, lan_peer, group.id, args.timeout)
            )
        data = {"group": group.name, "group_id": group.id, **_report_json(reports)}
        synced = any(r.ok for r in reports)
        text = f"You joined '{group.name}'." + (
            f" Fetched {counted(sum(r.received for r in reports), 'bundle')}."
            if synced
            else " No relay could be reached yet; `hearth sync` will catch up later."
        )
        return emit(args, data, text)


def _ask_name() -> str | None:
    """A joiner's name asked at the terminal (``hearth join CODE`` on a fresh device, as
    the README shows it); nothing if nobody can answer or for another device of a member."""
    if not sys.stdin.isatty():
        return None
    said = asyncio.run(
        ask("Your name, as the group will see it (Enter if this is another device of yours): ")
    )
    return said.strip() or None


def _first_sync(
    node: Node, relays: Sequence[str], peer: str | None, group_id: str, timeout: float
) -> list[RelayReport]:
    """A joiner's first exchange: with the token's relays, and the inviter met nearby."""
    from hearth.net.sync_client import sync_relays

    reports = []
    if relays:
        reports += asyncio.run(sync_relays(node, list(relays), [group_id], timeout=timeout))
    if peer is not None:
        reports += asyncio.run(sync_relays(node, [peer], [group_id], timeout=timeout, peers=True))
    return reports


def _bundle_export(args: argparse.Namespace, node: Node) -> int:
    written = write_changes(node, node.current_group().id, args.file, since=args.since)
    print(f"Wrote {counted(written, 'bundle')} to {args.file}.")
    return 0


def _bundle_import(args: argparse.Namespace, node: Node) -> int:
    counts = read_changes(node, args.file)
    data = {v.value: n for v, n in counts.items()}
    return emit(
        args,
        data,
        f"Applied {counts[Verdict.APPLIED]}, already had "
        f"{counts[Verdict.DUPLICATE]}, waiting {counts[Verdict.WAITING]}, "
        f"rejected {counts[Verdict.REJECTED]}.",
    )


def _bundle_have(args: argparse.Namespace, node: Node) -> int:
    write_have(node, node.current_group().id, args.file)
    print(
        f"Wrote what this node has to {args.file}; take it to the other node and run "
        f"`hearth bundle export FILE --since {args.file}` there."
    )
    return 0
