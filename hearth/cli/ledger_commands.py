"""``hearth`` subcommands about the group's ledger: resources, needs, commitments, what
happens to a resource (lend, return, produce, consume, give), and looking back (history,
conflicts, export).

Handlers resolve what the member typed (id prefixes, member names, dates, quantities)
through the ledger's view, make the change inside :meth:`Node.change` so it is stored
before anything is printed, then print words or, with ``--json``, an object.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from decimal import Decimal

from hearth.cli import render
from hearth.cli.grammar import Commands, json_flag, on_node, subcommands
from hearth.cli.render import emit
from hearth.errors import UsageError
from hearth.files import write_file
from hearth.ledger import (
    CommitmentStatus,
    Kind,
    Resource,
    find_conflicts,
    history,
    present,
)
from hearth.ledger.export import (
    as_commitment,
    as_conflict,
    as_need,
    as_resource,
    export_csv,
    export_json,
    export_valueflows,
)
from hearth.ledger.ledger import Ledger
from hearth.node.node import Node
from hearth.values import format_date, format_time, parse_date, parse_quantity

__all__ = ["register"]

_KINDS = [kind.value for kind in Kind]


def register(commands: Commands) -> None:
    """Add these commands to the grammar, each with its handler."""
    _register_resource(commands)
    _register_need(commands)
    _register_commitment(commands)
    _register_resource_events(commands)
    p = commands.add_parser("history", help="who did what, when")
    p.add_argument("--resource", metavar="ID")
    p.add_argument("--limit", type=int, default=50, help="how many lines (0 for all)")
    json_flag(p)
    p.set_defaults(handler=on_node(_history))
    p = commands.add_parser("conflicts", help="problems that need members to sort out")
    json_flag(p)
    p.set_defaults(handler=on_node(_conflicts))
    p = commands.add_parser("export", help="the whole ledger as JSON, CSV or ValueFlows JSON-LD")
    p.add_argument("--format", choices=["json", "csv", "valueflows"], default="json")
    p.add_argument("--output", "-o", metavar="FILE", help="write to a file instead of stdout")
    p.set_defaults(handler=on_node(_export))


def _register_resource(commands: Commands) -> None:
    res = subcommands(commands, "resource", "the group's things")
    p = res.add_parser("add", help="add a resource")
    p.add_argument("name")
    p.add_argument("--kind", choices=_KINDS, default="other")
    p.add_argument("--qty", default="1", help="how many (default 1)")
    p.add_argument("--unit", default="")
    p.add_argument("--location", default="")
    p.add_argument("--note", default="")
    p.add_argument("--shareable", action="store_true", help="willing to share with other groups")
    json_flag(p)
    p.set_defaults(handler=on_node(_resource_add))
    p = res.add_parser("list", help="list resources")
    p.add_argument("--kind", choices=_KINDS)
    p.add_argument("--search", help="only those whose name contains this")
    p.add_argument("--removed", action="store_true", help="include removed resources")
    json_flag(p)
    p.set_defaults(handler=on_node(_resource_list))
    p = res.add_parser("show", help="show one resource and its history")
    p.add_argument("resource", metavar="ID")
    json_flag(p)
    p.set_defaults(handler=on_node(_resource_show))
    _register_resource_edit(res.add_parser("edit", help="change a resource's details"))
    p = res.add_parser("remove", help="remove a resource (its history stays)")
    p.add_argument("resource", metavar="ID")
    json_flag(p)
    p.set_defaults(handler=on_node(_resource_remove))


def _register_resource_edit(p: argparse.ArgumentParser) -> None:
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
    json_flag(p)
    p.set_defaults(handler=on_node(_resource_edit))


def _register_need(commands: Commands) -> None:
    need = subcommands(commands, "need", "what members need")
    p = need.add_parser("add", help="record a need")
    p.add_argument("what")
    p.add_argument("--qty")
    p.add_argument("--unit", default="")
    p.add_argument(
        "--by", "--due", dest="by", metavar="DATE", help="needed by (2026-12-01, friday, +3d)"
    )
    json_flag(p)
    p.set_defaults(handler=on_node(_need_add))
    p = need.add_parser("list", help="list open needs")
    p.add_argument("--all", action="store_true", help="include closed needs")
    json_flag(p)
    p.set_defaults(handler=on_node(_need_list))
    p = need.add_parser("close", help="close a need")
    p.add_argument("need", metavar="ID")
    json_flag(p)
    p.set_defaults(handler=on_node(_need_close))


def _register_commitment(commands: Commands) -> None:
    com = subcommands(commands, "commitment", "promises between members")
    p = com.add_parser("add", help="propose a commitment")
    p.add_argument("what")
    p.add_argument("--from", dest="giver", required=True, metavar="MEMBER")
    p.add_argument("--to", dest="receiver", required=True, metavar="MEMBER")
    p.add_argument("--resource", metavar="ID")
    p.add_argument("--qty")
    p.add_argument("--due", "--by", dest="due", metavar="DATE", help="by when")
    json_flag(p)
    p.set_defaults(handler=on_node(_commitment_add))
    p = com.add_parser("list", help="list commitments")
    p.add_argument("--mine", action="store_true", help="only those you give or receive")
    p.add_argument("--open", action="store_true", help="only proposed and accepted ones")
    p.add_argument("--overdue", action="store_true", help="only open ones past their date")
    json_flag(p)
    p.set_defaults(handler=on_node(_commitment_list))
    for verb, target in (
        ("accept", CommitmentStatus.ACCEPTED),
        ("decline", CommitmentStatus.DECLINED),
        ("fulfil", CommitmentStatus.FULFILLED),
        ("cancel", CommitmentStatus.CANCELLED),
    ):
        aliases = ["fulfill"] if verb == "fulfil" else []
        p = com.add_parser(verb, help=f"{verb} a commitment", aliases=aliases)
        p.add_argument("commitment", metavar="ID")
        json_flag(p)
        p.set_defaults(handler=on_node(_commitment_move), to_status=target)


def _register_resource_events(commands: Commands) -> None:
    p = commands.add_parser("lend", help="record that a member borrowed a resource")
    p.add_argument("resource", metavar="RESOURCE")
    p.add_argument("--to", required=True, metavar="MEMBER")
    p.add_argument("--until", metavar="DATE")
    json_flag(p)
    p.set_defaults(handler=on_node(_lend))
    p = commands.add_parser("return", help="record that a borrowed resource came back")
    p.add_argument("resource", metavar="RESOURCE")
    p.add_argument("--from", dest="borrower", metavar="MEMBER", help="only this borrower's lend")
    json_flag(p)
    p.set_defaults(handler=on_node(_return))
    for verb, text, handler in (
        ("produce", "record that more of a resource exists", _produce),
        ("consume", "record that some of a resource was used up", _consume),
    ):
        p = commands.add_parser(verb, help=text)
        p.add_argument("resource", metavar="RESOURCE")
        p.add_argument("--qty", required=True)
        p.add_argument("--note", default="")
        json_flag(p)
        p.set_defaults(handler=on_node(handler))
    p = commands.add_parser("give", help="record that some of a resource went to a member")
    p.add_argument("resource", metavar="RESOURCE")
    p.add_argument("--to", required=True, metavar="MEMBER")
    p.add_argument("--qty", required=True)
    json_flag(p)
    p.set_defaults(handler=on_node(_give))


def _qty(text: str | None) -> Decimal | None:
    return None if text is None else parse_quantity(text)


def _date(node: Node, text: str | None) -> int | None:
    return None if text is None else parse_date(text, now_ms=node.clock.now_ms())


# --- resources -----------------------------------------------------------------


def _resource_add(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        r = ledger.add_resource(
            args.name,
            kind=Kind(args.kind),
            quantity=parse_quantity(args.qty, allow_zero=True),
            unit=args.unit,
            location=args.location,
            note=args.note,
            shareable=args.shareable,
        )
    return emit(args, as_resource(ledger.view, r), f"Added {r.name} ({r.id[:8]}).")


def _resource_list(args: argparse.Namespace, node: Node) -> int:
    view = node.view()
    found = view.resources(include_removed=args.removed)
    if args.kind:
        found = [r for r in found if r.kind.value == args.kind]
    if args.search:
        needle = args.search.casefold()
        found = [r for r in found if needle in r.name.casefold()]
    if args.json:
        return emit(args, [as_resource(view, r) for r in found], "")
    if not found:
        print("No resources yet: `hearth resource add NAME` adds one.")
        return 0
    print(
        render.table(
            ["id", "name", "kind", "quantity", "with", "where"], present.resource_rows(view, found)
        )
    )
    return 0


def _resource_show(args: argparse.Namespace, node: Node) -> int:
    view = node.view()
    r = view.resource(view.find("resources", args.resource))
    items = history(view, resource=r.id)
    data = {
        **as_resource(view, r),
        "history": [{"at": h.at, "by": view.member_name(h.by), "what": h.what} for h in items],
    }
    lines = [present.describe_resource(view, r), "", "History:"]
    lines += [f"  {format_time(h.at)}  {view.member_name(h.by)} {h.what}" for h in items]
    return emit(args, data, "\n".join(lines))


def _resource_edit(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        rid = ledger.view.find("resources", args.resource)
        r = ledger.edit_resource(
            rid,
            name=args.name,
            kind=Kind(args.kind) if args.kind else None,
            unit=args.unit,
            location=args.location,
            note=args.note,
            keeper=args.keeper,
            shareable=args.shareable,
            quantity=None if args.qty is None else parse_quantity(args.qty, allow_zero=True),
        )
    return emit(args, as_resource(ledger.view, r), f"Updated {r.name}.")


def _resource_remove(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        r = ledger.remove_resource(ledger.view.find("resources", args.resource))
    return emit(args, as_resource(ledger.view, r), f"Removed {r.name}; its history stays.")


def _lend(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        rid = ledger.view.find("resources", args.resource)
        r = ledger.lend(rid, to=args.to, until=_date(node, args.until))
    view = ledger.view
    until = f" until {format_date(r.lent_until)}" if r.lent_until else ""
    lent = f"{r.name} is now with {view.member_name(r.custodian)}{until}."
    if r.custodian == node.identity.member_id:  # a member taking a thing someone keeps
        lent = f"You took {r.name}{until} ({view.member_name(r.keeper)} keeps it)."
    return emit(args, as_resource(view, r), lent)


def _return(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        r = ledger.return_(ledger.view.find("resources", args.resource), borrower=args.borrower)
    view = ledger.view
    return emit(
        args, as_resource(view, r), f"{r.name} is back with {view.member_name(r.custodian)}."
    )


def _produce(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        rid = ledger.view.find("resources", args.resource)
        r = ledger.produce(rid, parse_quantity(args.qty), note=args.note)
    return _stock_now(args, ledger, r)


def _consume(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        rid = ledger.view.find("resources", args.resource)
        r = ledger.consume(rid, parse_quantity(args.qty), note=args.note)
    return _stock_now(args, ledger, r)


def _give(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        rid = ledger.view.find("resources", args.resource)
        r = ledger.give(rid, to=args.to, quantity=parse_quantity(args.qty))
    return _stock_now(args, ledger, r)


def _stock_now(args: argparse.Namespace, ledger: Ledger, r: Resource) -> int:
    """What a resource's stock came to after a change to it."""
    amount = present.amount(r.quantity, r.unit) or "0"
    return emit(args, as_resource(ledger.view, r), f"{r.name}: {amount} now.")


# --- needs and commitments -----------------------------------------------------------


def _need_add(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        n = ledger.add_need(
            args.what, quantity=_qty(args.qty), unit=args.unit, by=_date(node, args.by)
        )
    return emit(args, as_need(ledger.view, n), f"Recorded the need for {n.what} ({n.id[:8]}).")


def _need_list(args: argparse.Namespace, node: Node) -> int:
    from hearth.neighbourhood import participation

    view = node.view()
    found = [n for n in view.needs() if args.all or n.status.value == "open"]
    matched = participation.need_matches(node, node.current_group().id, found)
    if args.json:
        data = [{**as_need(view, n), "matches": [asdict(m) for m in matched[n.id]]} for n in found]
        return emit(args, data, "")
    if not found:
        print("No open needs.")
        return 0
    rows = [
        [*row, "; ".join(f"{m.what} ({m.where})" for m in matched[n.id])]
        for n, row in zip(found, present.need_rows(view, found), strict=True)
    ]
    print(render.table(["id", "what", "quantity", "by", "who", "status", "could be met by"], rows))
    return 0


def _need_close(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        n = ledger.close_need(ledger.view.find("needs", args.need))
    return emit(args, as_need(ledger.view, n), f"Closed the need for {n.what}.")


def _commitment_add(args: argparse.Namespace, node: Node) -> int:
    with node.change() as ledger:
        view = ledger.view
        c = ledger.add_commitment(
            args.what,
            giver=view.find("members", args.giver),
            receiver=view.find("members", args.receiver),
            resource=view.find("resources", args.resource) if args.resource else "",
            quantity=_qty(args.qty),
            due=_date(node, args.due),
        )
    return emit(
        args,
        as_commitment(ledger.view, c),
        f"Proposed: {view.member_name(c.giver)} gives {view.member_name(c.receiver)} "
        f"{c.what} ({c.id[:8]}).",
    )


def _commitment_list(args: argparse.Namespace, node: Node) -> int:
    view = node.view()
    now, me = node.clock.now_ms(), node.identity.member_id
    found = view.commitments()
    if args.mine:
        found = [c for c in found if me in (c.giver, c.receiver)]
    if args.open or args.overdue:
        found = [c for c in found if c.status.is_open]
    if args.overdue:
        found = [c for c in found if c.due is not None and c.due < now]
    if args.json:
        return emit(args, [as_commitment(view, c) for c in found], "")
    if not found:
        print("No commitments to show.")
        return 0
    print(
        render.table(
            ["id", "what", "quantity", "from", "to", "due", "status"],
            present.commitment_rows(view, found, now),
        )
    )
    return 0


def _commitment_move(args: argparse.Namespace, node: Node) -> int:
    """Accept, decline, fulfil or cancel a commitment (``args.to_status`` says which)."""
    target: CommitmentStatus = args.to_status
    with node.change() as ledger:
        c = ledger.change_commitment(ledger.view.find("commitments", args.commitment), target)
    if c.handoff:  # a neighbour group's handoff: tell the neighbourhood too
        from hearth.neighbourhood import participation

        participation.reconcile(node, node.current_group().id)
    return emit(args, as_commitment(ledger.view, c), f"'{c.what}' is now {c.status.value}.")


# --- looking back ------------------------------------------------------------------


def _history(args: argparse.Namespace, node: Node) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be zero or more.")
    view = node.view()
    rid = view.find("resources", args.resource) if args.resource else None
    items = history(view, resource=rid)
    if args.limit:
        items = items[: args.limit]
    data = [
        {
            "at": h.at,
            "by": h.by,
            "by_name": view.member_name(h.by),
            "what": h.what,
            "entry": h.entry,
        }
        for h in items
    ]
    text = "\n".join(f"{format_time(h.at)}  {view.member_name(h.by)} {h.what}" for h in items)
    return emit(args, data, text or "Nothing has happened yet.")


def _conflicts(args: argparse.Namespace, node: Node) -> int:
    from hearth.validity.alerts import admin_alerts

    found = find_conflicts(node.view())
    alerts = admin_alerts(node, node.current_group().id)
    lines = [f"for you as an admin: {a.what}\n          {a.advice}" for a in alerts]
    lines += [f"{c.id[:8]}  {c.summary}\n          {c.advice}" for c in found]
    data = [
        {"id": f"alert-{i}", "kind": a.kind, "summary": a.what, "advice": a.advice, "entries": []}
        for i, a in enumerate(alerts)
    ] + [as_conflict(c) for c in found]
    return emit(args, data, "\n".join(lines) or "No conflicts. All is well.")


def _export(args: argparse.Namespace, node: Node) -> int:
    view = node.view()
    group = node.current_group()
    if args.format == "csv":
        text = export_csv(view)
    elif args.format == "valueflows":
        text = export_valueflows(view, group.id, view.group_name)
    else:
        text = export_json(view, view.group_name)
    if args.output:
        write_file(args.output, text if text.endswith("\n") else text + "\n")
        print(f"Wrote {args.output}.", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
