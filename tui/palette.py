"""The commands the palette (ctrl+p) finds by name: every action of the app, in words."""

from __future__ import annotations

__all__ = ["COMMANDS"]

COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("Add a resource", "Record something the group shares", "add_resource"),
    ("Add a need", "Say what you or someone needs", "add_need"),
    ("New promise", "Record who will give what to whom", "add_promise"),
    ("Invite someone", "A code to read out to a new member", "invite"),
    ("Add a relay", "A relay the group syncs and meets through", "add_relay"),
    ("Remove a relay", "One the group no longer syncs through", "remove_relay"),
    (
        "Add a device",
        "Your phone or another computer, writing as you (a code to type there)",
        "add_device",
    ),
    (
        "Remove a device",
        "A lost phone: it writes nothing that counts",
        "remove_device",
    ),
    (
        "Sync now",
        "Send and fetch changes now, and see what went and came",
        "sync_now",
    ),
    (
        "Check this device",
        "Its store, keys and relays, end to end, and what to do about a problem",
        "check",
    ),
    ("Add a peer", "Another device to sync with directly", "add_peer"),
    ("Peers", "The devices this one syncs with directly", "list_peers"),
    ("Remove a peer", "Stop syncing with a device directly", "remove_peer"),
    (
        "Key for a relay's allow-list",
        "What the operator of a relay that takes only the groups it lists asks for",
        "admission_key",
    ),
    (
        "Carry changes: write to a file",
        "For a device that cannot sync: on a USB stick",
        "write_changes",
    ),
    (
        "Carry changes: read from a file",
        "Changes another device wrote to a USB stick",
        "read_changes",
    ),
    (
        "Carry changes: say what this device has",
        "A file for the other device, so it writes only what is missing here",
        "write_have",
    ),
    ("Leave the group", "Stop being a member of this group", "leave"),
    ("Switch group", "Show another of your groups", "switch_group"),
    (
        "Start another group",
        "A new group, with you as its first admin",
        "new_group",
    ),
    (
        "Export the ledger",
        "To a file: a spreadsheet (CSV), JSON or ValueFlows",
        "export",
    ),
    (
        "Start a neighbourhood",
        "A group of groups that share surplus (admins)",
        "start_neighbourhood",
    ),
    (
        "Invite a group into the neighbourhood",
        "A code to read to another group's admin (admins)",
        "invite_group",
    ),
    (
        "Join a neighbourhood",
        "With the code another group's admin reads out (admins)",
        "join_neighbourhood",
    ),
    (
        "Offer to neighbours",
        "Share some of a resource with neighbour groups",
        "offer",
    ),
    ("Help", "What every key does", "help"),
)
"""(title, what it does, the app's action) of every command the palette lists."""
