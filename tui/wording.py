"""The core's messages in the app's words.

A message from hearth/ is written once, for both the command line and the app: where it
names something to do, it names the command in backticks (`` `hearth sync` ``). The CLI
prints it as it is; the app shows it through :func:`app_words`, which puts the app's way
to the same thing in the command's place ("Sync now", key u). Each command a message may
name has its place in :data:`IN_THE_APP` (a test reads hearth/ for every one).
"""

from __future__ import annotations

import re

__all__ = ["IN_THE_APP", "app_way", "app_words"]

_PALETTE = "ctrl+p"

IN_THE_APP: dict[str, str] = {
    # The command's words, without `hearth` and what is filled in: the app's way to it.
    "init": "the app's first screen",
    "group create": f"“Start another group” ({_PALETTE})",
    "group list": f"“Switch group” ({_PALETTE})",
    "join": "“Join” on the app's first screen",
    "sync": "“Sync now” (key u)",
    "status": "the Overview (key 1)",
    "doctor": f"“Check this device” ({_PALETTE})",
    "relay add": f"“Add a relay” ({_PALETTE})",
    "relay remove": f"“Remove a relay” ({_PALETTE})",
    "relay key": f"“Key for a relay's allow-list” ({_PALETTE})",
    "peer add": f"“Add a peer” ({_PALETTE})",
    "peer list": f"“Peers” ({_PALETTE})",
    "peer remove": f"“Remove a peer” ({_PALETTE})",
    "invite": "“Invite” (key i on the Members tab)",
    "invite --token": "“Invite” (key i on the Members tab)",
    "leave": f"“Leave the group” ({_PALETTE})",
    "member list": "the Members tab (key 5)",
    "member promote": "“Admin or not” (key m on the Members tab)",
    "member remove": "“Remove” (key x on the Members tab)",
    "device list": "a member's details on the Members tab (key 5, then enter)",
    "device add": f"“Add a device” ({_PALETTE})",
    "device remove": f"“Remove a device” ({_PALETTE})",
    "resource list": "the Resources tab (key 2)",
    "resource edit": "“Edit” (key e on the Resources tab)",
    "need list": "the Needs tab (key 3)",
    "commitment list": "the Promises tab (key 4)",
    "history": "the History tab (key 7)",
    "conflicts": "the Problems tab (key 6)",
    "export": f"“Export the ledger” ({_PALETTE})",
    "bundle export": f"“Carry changes: write to a file” ({_PALETTE})",
    "bundle import": f"“Carry changes: read from a file” ({_PALETTE})",
    "bundle have": f"“Carry changes: say what this device has” ({_PALETTE})",
    "neighbourhood create": f"“Start a neighbourhood” ({_PALETTE})",
    "neighbourhood invite": f"“Invite a group into the neighbourhood” ({_PALETTE})",
    "neighbourhood join": f"“Join a neighbourhood” ({_PALETTE})",
    "neighbourhood list": "the Neighbours tab (key 8)",
    "offer list": "the Neighbours tab (key 8)",
    "request list": "the Neighbours tab (key 8)",
}

_COMMAND = re.compile(r"(?:\b(?P<verb>[Rr]un|[Uu]se) )?`hearth (?P<words>[^`]*)`")


def app_way(command: str) -> str | None:
    """The app's way to a command (its words after ``hearth``, arguments and all), or
    ``None`` if the app has none listed: the longest listed start of the command wins."""
    words = command.split()
    for end in range(len(words), 0, -1):
        way = IN_THE_APP.get(" ".join(words[:end]))
        if way is not None:
            return way
    return None


def app_words(text: str) -> str:
    """A message from hearth/ as the app shows it: every command it names in backticks
    replaced by the app's way to the same thing ("run `hearth sync`" → "use “Sync now”
    (key u)"). A command the app has no way to is left as it is."""

    def replace(found: re.Match[str]) -> str:
        way = app_way(found.group("words"))
        if way is None:
            return found.group(0)
        verb = found.group("verb")
        if verb is None:
            return way
        return ("Use " if verb[0].isupper() else "use ") + way

    return _COMMAND.sub(replace, text)
