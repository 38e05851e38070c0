"""What each ``hearth`` subcommand does.

Handlers resolve what the member typed (id prefixes, member names, dates, quantities)
through the ledger's view, make the change inside :meth:`Node.change` so it is stored
before anything is printed, then print words or, with ``--json``, an object.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path

from hearth.cli import render
from hearth.errors import UsageError
from hearth.files import write_file
from hearth.ledger import (
    CommitmentStatus,
    Kind,
    Resource,
    find_conflicts,
    history,
    membership_rules,
    present,
)
from hearth.ledger.export import (
    as_commitment,
    as_conflict,
    as_member,
    as_need,
    as_resource,
    export_csv,
    export_json,
    export_valueflows,
)
from hearth.ledger.ledger import Ledger
from hearth.node.identity import create_identity
from hearth.node.node import Node, open_node
from hearth.values import format_date, format_time, parse_date, parse_quantity

__all__ = ["confirm", "emit", "open_app", "run"]

Handler = Callable[[argparse.Namespace, Node], int]


def run(args: argparse.Namespace, home: Path) -> int:
    """Dispatch a parsed command line."""
    if args.command == "init":
        return _init(args, home)
    if args.command == "join":
        from hearth.cli.sync_commands import join

        return join(args, home)
    if args.command == "demo":
        from hearth.cli.demo import run_demo

        return run_demo()
    key = f"{args.command} {args.action}" if getattr(args, "action", None) else args.command
    handler = _HANDLERS.get(key)
    if handler is None:
        from hearth.cli.neighbourhood_commands import HANDLERS as NEIGHBOURHOOD_HANDLERS

        handler = NEIGHBOURHOOD_HANDLERS.get(key)
    if handler is None:
        # Networking commands load aiohttp; ledger commands should start quickly without it.
        from hearth.cli.sync_commands import HANDLERS as SYNC_HANDLERS

        handler = SYNC_HANDLERS[key]
    with open_node(home) as node:
        return handler(args, node)


def open_app(args: argparse.Namespace, home: Path) -> int:
    """Bare ``hearth`` run as ``python -m hearth.cli.main``: the app lives in ``tui``."""
    print("The Hearth app opens with the installed `hearth` command; `--help` lists the rest.")
    return 0


def emit(args: argparse.Namespace, data: object, text: str) -> int:
    if getattr(args, "json", False):
        render.print_json(data)
    else:
        print(text)
    return 0


def _qty(text: str | None) -> Decimal | None:
    return None if text is None else parse_quantity(text)


def _date(node: Node, text: str | None) -> int | None:
    return None if text is None else parse_date(text, now_ms=node.clock.now_ms())


# --- identity and groups -----------------------------------------------------------


def _init(args: argparse.Namespace, home: Path) -> int:
    identity = create_identity(home, name=args.name, device_name=args.device_name)
    with open_node(home):
        pass  # create the store now so later commands find a sound one
    return emit(
        args,
        identity.public(),
        f"Welcome, {identity.name}. Your identity is saved in {home}.\n"
        "Next: `hearth group create NAME` to start a group, or "
        "`hearth join CODE --relay URL` to join one with the code a member gives you.",
    )


def _whoami(args: argparse.Namespace, node: Node) -> int:
    me = node.identity
    data = {**me.public(), "home": str(node.home)}
    return emit(
        args,
        data,
        f"{me.name} (member {me.member_id[:8]}, device "
        f"'{me.device_name}' {me.device_id[:8]})\nhome: {node.home}",
    )


def _group_create(args: argparse.Namespace, node: Node) -> int:
    from hearth.ledger.ledger import check_relay_url

    relays = [check_relay_url(url) for url in args.relay]
    same = [g for g in node.groups() if g.name.strip().casefold() == args.name.strip().casefold()]
    if same and not args.another:
        raise UsageError(
            f"You are already in a group called '{same[0].name}': `hearth group use "
            f"{same[0].id[:8]}` makes it the current one. To start a second group with the "
            "same name anyway, add --another."
        )
    group = node.create_group(args.name)
    if relays:
        with node.change(group.id) as ledger:
            for url in relays:
                ledger.add_relay(url)
    if args.json:
        return emit(args, {"id": group.id, "name": group.name, "current": True}, "")
    print(group.id)
    print(f"Created '{group.name}'; it is now your current group.", file=sys.stderr)
    return 0


def _group_list(args: argparse.Namespace, node: Node) -> int:
    groups = node.groups()
    current = node.current_group().id if groups else None
    data = [{"id": g.id, "name": g.name, "current": g.id == current} for g in groups]
    if not groups:
        return emit(args, data, "You are in no group yet: `hearth group create NAME`.")
    rows = [[("* " if g.id == current else "  ") + g.id[:12], g.name] for g in groups]
    return emit(args, data, render.table(["  id", "name"], rows))


def _group_use(args: argparse.Namespace, node: Node) -> int:
    group = node.use_group(args.group)
    print(f"Now using '{group.name}'.")
    return 0


def _member_list(args: argparse.Namespace, node: Node) -> int:
    from hearth.validity.alerts import admin_alerts

    found = node.view().members(include_gone=args.all)
    alerts = admin_alerts(node, node.current_group().id)
    flagged = {a.member for a in alerts}
    rows = [
        [
            m.id[:8],
            m.name + (" (!)" if m.name in flagged else ""),
            m.role.value if m.status == "active" else m.status,
            str(len(m.devices)),
        ]
        for m in found
    ]
    text = render.table(["id", "name", "role", "devices"], rows)
    if alerts:
        text += "\n" + "\n".join(f"(!) {a.what}; {a.advice}" for a in alerts)
    data = [{**as_member(m), "alert": m.name in flagged} for m in found]
    return emit(args, data, text)


def confirm(args: argparse.Namespace, question: str) -> None:
    """Ask before something that cannot be undone; ``--yes`` answers for scripts."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("This cannot be undone; add --yes to do it without being asked.")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise UsageError("Nothing was changed.")


def _member_remove(args: argparse.Namespace, node: Node) -> int:
    from hearth.group import member_changes
    from hearth.neighbourhood import participation

    view = node.view()
    name = view.member(view.find("members", args.member)).name
    confirm(
        args,
        f"Remove {name} from the group? From now on they see nothing new the group writes "
        "and nothing they write counts. What they already saw stays with them.",
    )
    group_id = node.current_group().id
    member = member_changes.remove_member(node, group_id, args.member)
    text = (
        f"{member.name} is out of the group; the group has a new key they do not have. "
        "Sync (or keep `hearth serve` running) so the others get it."
    )
    hoods = [m.name for m in participation.memberships(node, group_id)]
    if hoods:
        text += (
            f"\nIn {', '.join(repr(h) for h in hoods)} your group now speaks with a new key, "
            f"and what the groups say there is sealed under a new secret; {member.name} has "
            "neither, so nothing they say there counts for your group, and they read nothing "
            "new."
        )
    return emit(args, {"removed": member.id, "name": member.name, "neighbourhoods": hoods}, text)


def _member_promote(args: argparse.Namespace, node: Node) -> int:
    from hearth.group import member_changes

    member = member_changes.promote(node, node.current_group().id, args.member)
    return emit(args, as_member(member), f"{member.name} is now an admin.")


def _member_demote(args: argparse.Namespace, node: Node) -> int:
    from hearth.group import member_changes

    member = member_changes.demote(node, node.current_group().id, args.member)
    return emit(args, as_member(member), f"{member.name} is now a member (not an admin).")


def _leave(args: argparse.Namespace, node: Node) -> int:
    from hearth.group import member_changes

    group = node.current_group()
    confirm(args, f"Leave '{group.name}'? Nothing you write there will count any more.")
    member_changes.leave(node, group.id)
    return emit(
        args,
        {"left": group.id},
        f"You have left '{group.name}'. Sync once more so the others know; "
        "its history stays readable here.",
    )


def _device_list(args: argparse.Namespace, node: Node) -> int:
    view = node.view()
    mine = node.identity.device_key.public
    caught = node.feeds.equivocations(node.current_group().id)
    found = [
        {
            "id": c.device_id,
            "member": c.member_id,
            "member_name": view.member_name(c.member_id),
            "name": present.device_name(view, c.member_id, c.device_id),
            "this_device": c.key == mine,
            "removed": c.cutoff is not None,
            "signed_twice": c.key in caught,
        }
        for c in membership_rules.cards(view.tables["members"])
        if args.all or c.member_id == node.identity.member_id
    ]
    rows = [
        [
            ("* " if d["this_device"] else "  ") + str(d["id"])[:8],
            str(d["name"]),
            str(d["member_name"]),
            "removed" if d["removed"] else "signed twice: cut off" if d["signed_twice"] else "",
        ]
        for d in found
    ]
    return emit(args, found, render.table(["  id", "device", "member", ""], rows))


def _device_remove(args: argparse.Namespace, node: Node) -> int:
    from hearth.group import member_changes

    confirm(args, "Remove this device? Nothing it writes from now on will count.")
    member, device_id = member_changes.remove_device(node, node.current_group().id, args.device)
    return emit(
        args,
        {"removed": device_id, "member": member.id},
        f"Removed {member.name}'s device {device_id[:8]}; "
        "the group has a new key it does not have.",
    )


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


def _resource_event(verb: str) -> Handler:
    def handler(args: argparse.Namespace, node: Node) -> int:
        with node.change() as ledger:
            rid = ledger.view.find("resources", args.resource)
            r = _apply_event(verb, args, node, ledger, rid)
        view = ledger.view
        until = f" until {format_date(r.lent_until)}" if r.lent_until else ""
        lent = f"{r.name} is now with {view.member_name(r.custodian)}{until}."
        if r.custodian == node.identity.member_id:  # a member taking a thing someone keeps
            lent = f"You took {r.name}{until} ({view.member_name(r.keeper)} keeps it)."
        words = {
            "lend": lent,
            "return": f"{r.name} is back with {view.member_name(r.custodian)}.",
        }.get(verb, f"{r.name}: {present.amount(r.quantity, r.unit) or '0'} now.")
        return emit(args, as_resource(view, r), words)

    return handler


def _apply_event(
    verb: str, args: argparse.Namespace, node: Node, ledger: Ledger, rid: str
) -> Resource:
    if verb == "lend":
        return ledger.lend(rid, to=args.to, until=_date(node, args.until))
    if verb == "return":
        return ledger.return_(rid, borrower=args.borrower)
    quantity = parse_quantity(args.qty)
    if verb == "produce":
        return ledger.produce(rid, quantity, note=args.note)
    if verb == "consume":
        return ledger.consume(rid, quantity, note=args.note)
    return ledger.give(rid, to=args.to, quantity=quantity)


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


def _commitment_move(target: CommitmentStatus) -> Handler:
    def handler(args: argparse.Namespace, node: Node) -> int:
        with node.change() as ledger:
            c = ledger.change_commitment(ledger.view.find("commitments", args.commitment), target)
        if c.handoff:  # a neighbour group's handoff: tell the neighbourhood too
            from hearth.neighbourhood import participation

            participation.reconcile(node, node.current_group().id)
        return emit(args, as_commitment(ledger.view, c), f"'{c.what}' is now {c.status.value}.")

    return handler


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


_HANDLERS: dict[str, Handler] = {
    "whoami": _whoami,
    "group create": _group_create,
    "group list": _group_list,
    "group use": _group_use,
    "member list": _member_list,
    "member remove": _member_remove,
    "member promote": _member_promote,
    "member demote": _member_demote,
    "leave": _leave,
    "device list": _device_list,
    "device remove": _device_remove,
    "resource add": _resource_add,
    "resource list": _resource_list,
    "resource show": _resource_show,
    "resource edit": _resource_edit,
    "resource remove": _resource_remove,
    "lend": _resource_event("lend"),
    "return": _resource_event("return"),
    "produce": _resource_event("produce"),
    "consume": _resource_event("consume"),
    "give": _resource_event("give"),
    "need add": _need_add,
    "need list": _need_list,
    "need close": _need_close,
    "commitment add": _commitment_add,
    "commitment list": _commitment_list,
    "commitment accept": _commitment_move(CommitmentStatus.ACCEPTED),
    "commitment decline": _commitment_move(CommitmentStatus.DECLINED),
    "commitment fulfil": _commitment_move(CommitmentStatus.FULFILLED),
    "commitment fulfill": _commitment_move(CommitmentStatus.FULFILLED),
    "commitment cancel": _commitment_move(CommitmentStatus.CANCELLED),
    "history": _history,
    "conflicts": _conflicts,
    "export": _export,
}
