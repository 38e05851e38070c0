"""``hearth`` subcommands about you and your groups: ``init``, ``whoami``, ``group``,
``member``, ``leave``, ``device``, and the ``demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hearth.cli import render
from hearth.cli.grammar import (
    Commands,
    code_flags,
    json_flag,
    on_node,
    subcommands,
    yes_flag,
)
from hearth.cli.invite_codes import invite_by_code
from hearth.cli.prompt import confirm
from hearth.cli.render import emit
from hearth.errors import UsageError
from hearth.ledger import membership_rules, present
from hearth.ledger.export import as_member
from hearth.node.identity import create_identity
from hearth.node.node import Node, open_node

if TYPE_CHECKING:  # spake2 and the network load only for the commands that use them
    from hearth.protocol.invite_code import JoinerIntroduced

__all__ = ["register"]


def register(commands: Commands) -> None:
    """Add these commands to the grammar, each with its handler."""
    p = commands.add_parser("init", help="create your identity on this device")
    p.add_argument("--name", required=True, help="your name as the group will see it")
    p.add_argument("--device-name", help="a name for this device (default: the host name)")
    json_flag(p)
    p.set_defaults(handler=_init)

    p = commands.add_parser("whoami", help="show your identity")
    json_flag(p)
    p.set_defaults(handler=on_node(_whoami))

    _register_group(commands)
    _register_member(commands)
    p = commands.add_parser("leave", help="leave the current group")
    yes_flag(p)
    json_flag(p)
    p.set_defaults(handler=on_node(_leave))
    _register_device(commands)

    p = commands.add_parser("demo", help="see Hearth working on an example group")
    p.add_argument(
        "--headless", action="store_true", help="print a summary instead of opening the app"
    )
    p.set_defaults(handler=_demo)


def _register_group(commands: Commands) -> None:
    group = subcommands(commands, "group", "create, list and choose groups")
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
    json_flag(p)
    p.set_defaults(handler=on_node(_group_create))
    p = group.add_parser("list", help="list your groups")
    json_flag(p)
    p.set_defaults(handler=on_node(_group_list))
    p = group.add_parser("use", help="choose the group commands act on")
    p.add_argument("group", metavar="ID|NAME")
    p.set_defaults(handler=on_node(_group_use))


def _register_member(commands: Commands) -> None:
    member = subcommands(commands, "member", "the group's members")
    p = member.add_parser("list", help="list members")
    p.add_argument("--all", action="store_true", help="also those removed or gone")
    json_flag(p)
    p.set_defaults(handler=on_node(_member_list))
    p = member.add_parser(
        "remove", help="take someone out of the group (admins; the group gets a new key)"
    )
    p.add_argument("member", help="name or id")
    yes_flag(p)
    json_flag(p)
    p.set_defaults(handler=on_node(_member_remove))
    for verb, text, handler in (
        ("promote", "make a member an admin", _member_promote),
        ("demote", "make an admin a member", _member_demote),
    ):
        p = member.add_parser(verb, help=f"{text} (admins)")
        p.add_argument("member", help="name or id")
        json_flag(p)
        p.set_defaults(handler=on_node(handler))


def _register_device(commands: Commands) -> None:
    device = subcommands(commands, "device", "the devices you use Hearth on")
    p = device.add_parser("add", help="use Hearth on another device too: a code to type in there")
    code_flags(p, "let the device in, unasked")
    p.set_defaults(handler=on_node(_device_add))
    p = device.add_parser("list", help="your devices in the current group")
    p.add_argument("--all", action="store_true", help="every member's devices")
    json_flag(p)
    p.set_defaults(handler=on_node(_device_list))
    p = device.add_parser("remove", help="stop a lost or old device writing for you")
    p.add_argument("device", help="its id (from `hearth device list`)")
    yes_flag(p)
    json_flag(p)
    p.set_defaults(handler=on_node(_device_remove))


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


def _device_add(args: argparse.Namespace, node: Node) -> int:
    """``hearth device add``: like an invite, for another device of this member."""
    from hearth.group import member_changes

    def device_token(event: JoinerIntroduced) -> str:
        return member_changes.new_device_token(node, event.device_key)

    return invite_by_code(
        args,
        node,
        make_token=device_token,
        who="your new device",
        question=lambda name: f"Let the device '{name}' write as you? [y/N] ",
    )


def _demo(args: argparse.Namespace, home: Path) -> int:
    """``hearth demo``, headless (the app's launcher opens the demo in the app)."""
    from hearth.cli.demo import run_demo

    return run_demo()
