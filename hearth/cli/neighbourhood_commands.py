"""``hearth neighbourhood``, ``hearth offer`` and ``hearth request``: sharing surplus with
neighbouring groups (:mod:`hearth.neighbourhood.participation`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from hearth.cli.grammar import Commands, code_flags, json_flag, on_node, subcommands, yes_flag
from hearth.cli.invite_codes import find_inviter_nearby, invite_by_code, token_for_code
from hearth.cli.prompt import confirm
from hearth.cli.render import emit, table
from hearth.crypto import SigningKey
from hearth.errors import UsageError
from hearth.ledger import entry_ids
from hearth.ledger.ledger import check_relay_url
from hearth.neighbourhood import participation
from hearth.neighbourhood.rules import Offer, Request, State
from hearth.node.node import Node
from hearth.values import format_date, format_quantity, parse_date, parse_quantity

if TYPE_CHECKING:  # spake2 and the network load only for the commands that use them
    from hearth.protocol.invite_code import JoinerIntroduced

__all__ = ["register"]


def register(commands: Commands) -> None:
    """Add ``neighbourhood``, ``offer`` and ``request`` to the grammar, each with its
    handler."""
    _register_neighbourhood(commands)
    _register_offer(commands)
    p = commands.add_parser(
        "request",
        help="ask a neighbour group for its offer (`request OFFER --qty N`), or "
        "`request list`, `request accept ID`, `request decline ID`",
    )
    p.add_argument("target", metavar="OFFER|list|accept|decline")
    p.add_argument("id", nargs="?", metavar="ID", help="the request to accept or decline")
    p.add_argument("--qty")
    p.add_argument("--note", default="")
    json_flag(p)
    p.set_defaults(handler=on_node(_request))


def _register_neighbourhood(commands: Commands) -> None:
    hood = subcommands(
        commands, "neighbourhood", "groups of groups that share surplus with each other"
    )
    p = hood.add_parser("create", help="start a neighbourhood with your group in it (admins)")
    p.add_argument("name")
    json_flag(p)
    p.set_defaults(handler=on_node(_create))
    p = hood.add_parser("invite", help="a code for another group's admin to join with (admins)")
    p.add_argument("--neighbourhood", metavar="NAME", help="which one, if the group is in several")
    code_flags(p, "let whichever group uses the code in, unasked")
    p.set_defaults(handler=on_node(_invite))
    p = hood.add_parser("join", help="take your group into a neighbourhood with a code (admins)")
    p.add_argument("token", metavar="CODE")
    p.add_argument("--relay", metavar="URL", help="the relay the inviting group uses")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S")
    json_flag(p)
    p.set_defaults(handler=on_node(_join))
    p = hood.add_parser("list", help="the group's neighbourhoods and who is in them")
    json_flag(p)
    p.set_defaults(handler=on_node(_list))
    p = hood.add_parser("leave", help="take your group out of a neighbourhood (admins)")
    p.add_argument("name", nargs="?", help="which one, if the group is in several")
    yes_flag(p)
    json_flag(p)
    p.set_defaults(handler=on_node(_leave))


def _register_offer(commands: Commands) -> None:
    offer = subcommands(commands, "offer", "surplus your group shares with its neighbourhoods")
    p = offer.add_parser("add", help="offer part of a shareable resource to neighbour groups")
    p.add_argument("resource", metavar="RESOURCE")
    p.add_argument("--qty", required=True)
    p.add_argument("--neighbourhood", metavar="NAME", help="which one, if the group is in several")
    p.add_argument("--until", metavar="DATE", help="when the offer ends (default: never)")
    p.add_argument("--note", default="")
    json_flag(p)
    p.set_defaults(handler=on_node(_offer_add))
    p = offer.add_parser("list", help="your group's offers and those of neighbour groups")
    json_flag(p)
    p.set_defaults(handler=on_node(_offer_list))
    p = offer.add_parser("withdraw", help="take back one of your group's offers")
    p.add_argument("offer", metavar="ID")
    json_flag(p)
    p.set_defaults(handler=on_node(_offer_withdraw))


def _offer_json(offer: Offer, current: State, mine: bytes) -> dict[str, object]:
    return {
        "id": offer.id,
        "group": offer.group_name,
        "mine": offer.group == mine,
        "what": offer.what,
        "quantity": format_quantity(offer.quantity),
        "unit": offer.unit,
        "until": offer.until,
        "note": offer.note,
        "neighbourhood": current.name,
        "neighbourhood_id": current.id,
    }


def _request_json(item: Request, offer: Offer, hood: str, direction: str) -> dict[str, object]:
    return {
        "id": item.id,
        "direction": direction,
        "offer": offer.id,
        "what": offer.what,
        "quantity": format_quantity(item.quantity),
        "unit": offer.unit,
        "from_group": item.group_name,
        "to_group": offer.group_name,
        "note": item.note,
        "status": item.status,
        "fulfilled": item.fulfilled,
        "given": item.given,
        "neighbourhood": hood,
    }


# --- neighbourhoods -------------------------------------------------------------------


def _create(args: argparse.Namespace, node: Node) -> int:
    group = node.current_group()
    membership = participation.create(node, group.id, args.name)
    data = {"id": membership.id, "name": membership.name, "group": group.name}
    return emit(
        args,
        data,
        f"'{group.name}' started the neighbourhood '{membership.name}'. Invite other groups "
        "with `hearth neighbourhood invite`.",
    )


def _list(args: argparse.Namespace, node: Node) -> int:
    group = node.current_group()
    now = node.clock.now_ms()
    data: list[dict[str, object]] = []
    rows: list[list[str]] = []
    keyless = []
    for membership in participation.memberships(node, group.id):
        current = participation.state(node, membership)
        groups = sorted(current.groups.values(), key=str.casefold)
        offers = len(current.open_offers(now))
        standing = participation.standing(node, membership)
        data.append(
            {
                "id": membership.id,
                "name": membership.name,
                "groups": groups,
                "offers": offers,
                "handoffs": len(current.handoffs()),
                "standing": standing,
            }
        )
        rows.append([membership.name, ", ".join(groups), str(offers)])
        if standing == "no-key":
            keyless.append(membership.name)
    if args.json or not data:
        return emit(args, data, f"'{group.name}' is in no neighbourhood yet.")
    print(table(["neighbourhood", "groups", "offers"], rows))
    said, advice = participation.STANDINGS["no-key"]
    for name in keyless:
        print(
            f"\nIn '{name}' {said}; someone who left your group may have tried to keep "
            f"speaking for it. {advice}"
        )
    return 0


def _leave(args: argparse.Namespace, node: Node) -> int:
    group = node.current_group()
    membership = participation.find(node, group.id, args.name or "")
    confirm(
        args,
        f"Take '{group.name}' out of '{membership.name}'? Its offers and requests there end; "
        "to come back, another group must invite it again.",
    )
    participation.leave(node, group.id, membership.id)
    return emit(args, {"left": membership.name}, f"'{group.name}' left '{membership.name}'.")


def _invite(args: argparse.Namespace, node: Node) -> int:
    """A code for another group's admin; approve their group by name; they are in."""
    group = node.current_group()
    membership = participation.find(node, group.id, args.neighbourhood or "")
    participation.require_admin(node, group.id, "invite groups into a neighbourhood")

    def admit(event: JoinerIntroduced) -> str:
        participation.admit(node, membership, event.device_key, event.name)
        return participation.encode_token(membership)

    return invite_by_code(
        args,
        node,
        make_token=admit,
        who="the other group",
        question=lambda name: f"Let the group '{name}' into '{membership.name}'? [y/N] ",
        join_command="hearth neighbourhood join",
        done=lambda name: f"'{name}' is in '{membership.name}' now.",
    )


def _join(args: argparse.Namespace, node: Node) -> int:
    from hearth.net.syncing import sync_now

    group = node.current_group()
    participation.require_admin(node, group.id, "join a neighbourhood")
    relays = [check_relay_url(args.relay)] if args.relay else node.view(group.id).relays()
    meeting = relays[0] if relays else find_inviter_nearby(args.token, args.timeout)
    key = SigningKey.generate(node.random_bytes)
    token = token_for_code(args, meeting, name=group.name, device=key)
    membership = participation.join(node, group.id, token, key)
    reports = sync_now(node, [group.id], timeout=args.timeout)
    current = participation.state(node, membership)
    data = {
        "id": membership.id,
        "name": membership.name,
        "groups": sorted(current.groups.values(), key=str.casefold),
        "synced": any(r.ok for r in reports),
    }
    return emit(args, data, f"'{group.name}' joined the neighbourhood '{membership.name}'.")


# --- offers --------------------------------------------------------------------------


def _offer_add(args: argparse.Namespace, node: Node) -> int:
    group = node.current_group()
    until = parse_date(args.until, now_ms=node.clock.now_ms()) if args.until else None
    offer = participation.add_offer(
        node,
        group.id,
        args.resource,
        parse_quantity(args.qty),
        neighbourhood=args.neighbourhood or "",
        until=until,
        note=args.note,
    )
    membership = participation.find(node, group.id, args.neighbourhood or "")
    current = participation.state(node, membership)
    unit = f" {offer.unit}" if offer.unit else ""
    return emit(
        args,
        _offer_json(offer, current, membership.key.public),
        f"Offered {format_quantity(offer.quantity)}{unit} of {offer.what} to "
        f"'{current.name}' (offer {offer.id[:8]}); neighbours see it after the next sync.",
    )


def _offer_list(args: argparse.Namespace, node: Node) -> int:
    group = node.current_group()
    now = node.clock.now_ms()
    data = []
    for membership in participation.memberships(node, group.id):
        current = participation.state(node, membership)
        data += [_offer_json(o, current, membership.key.public) for o in current.open_offers(now)]
    if args.json or not data:
        return emit(args, data, "No offers in this group's neighbourhoods right now.")
    rows = [
        [
            str(d["id"])[:8],
            str(d["group"]) + (" (you)" if d["mine"] else ""),
            str(d["what"]),
            f"{d['quantity']} {d['unit']}".strip(),
            format_date(int(d["until"])) if d["until"] else "",  # type: ignore[call-overload]
            str(d["neighbourhood"]),
        ]
        for d in data
    ]
    print(table(["id", "group", "what", "quantity", "until", "neighbourhood"], rows))
    return 0


def _offer_withdraw(args: argparse.Namespace, node: Node) -> int:
    offer = participation.withdraw(node, node.current_group().id, args.offer)
    return emit(args, {"id": offer.id, "withdrawn": True}, f"Withdrew the offer of {offer.what}.")


# --- requests ------------------------------------------------------------------------


def _request(args: argparse.Namespace, node: Node) -> int:
    # `request list`, `request accept ID`, `request decline ID`; else TARGET is an offer.
    if args.target == "list":
        return _request_list(args, node)
    if args.target in ("accept", "decline"):
        return _request_answer(args, node, accept=args.target == "accept")
    if args.id:
        raise UsageError(
            f"Unexpected {args.id!r}: to ask for an offer, `hearth request OFFER --qty N`."
        )
    if args.qty is None:
        raise UsageError("Say how much you ask for: --qty N.")
    group = node.current_group()
    membership, offer = participation.find_offer(node, group.id, args.target)
    item = participation.request(node, group.id, offer.id, parse_quantity(args.qty), note=args.note)
    return emit(
        args,
        _request_json(item, offer, membership.name, "outgoing"),
        f"Asked {offer.group_name} for {format_quantity(item.quantity)} {offer.unit} of "
        f"{offer.what} (request {item.id[:8]}); they answer after the next sync.".replace(
            "  ", " "
        ),
    )


def _request_list(args: argparse.Namespace, node: Node) -> int:
    found = participation.requests(node, node.current_group().id)
    data = [
        _request_json(item, current.offers[item.offer], current.name, direction)
        for _, current, item, direction in found
    ]
    if args.json or not data:
        return emit(args, data, "No requests to or from this group.")
    rows = [
        [
            str(d["id"])[:8],
            str(d["direction"]),
            str(d["what"]),
            f"{d['quantity']} {d['unit']}".strip(),
            str(d["from_group"] if d["direction"] == "incoming" else d["to_group"]),
            str(d["status"])
            + (
                ", fulfilled"
                if d["fulfilled"]
                else ", handed over: waiting for them to confirm"
                if d["given"] and d["direction"] == "incoming"
                else ", handed over: confirm with `hearth commitment fulfil`"
                if d["given"]
                else ""
            ),
        ]
        for d in data
    ]
    print(table(["id", "way", "what", "quantity", "group", "status"], rows))
    return 0


def _request_answer(args: argparse.Namespace, node: Node, *, accept: bool) -> int:
    if not args.id:
        raise UsageError(f"Say which request to {'accept' if accept else 'decline'}: its id.")
    group = node.current_group()
    item = participation.answer(node, group.id, args.id, accept=accept)
    [(membership, current, _, direction)] = [
        f for f in participation.requests(node, group.id) if f[2].id == item.id
    ]
    text = "Declined."
    if accept:
        # Kept under the request's ref, made a handoff id in groups whose ids are tagged.
        keys = {item.id, entry_ids.handoff_id(item.id)}
        promised = [c for c in node.view().commitments() if c.handoff in keys]
        text = (
            f"Accepted: it is now a commitment in the ledgers of {group.name} and "
            f"{item.group_name}"
            + (
                f"; `hearth commitment fulfil {promised[0].id[:8]}` once it is handed over."
                if promised
                else "."
            )
        )
    offer = current.offers[item.offer]
    return emit(args, _request_json(item, offer, membership.name, direction), text)
