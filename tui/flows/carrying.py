"""Changes carried on a file (a USB stick) to and from a device that cannot sync.

A file may hold a group's whole history: it is written and read in a worker thread
(:meth:`tui.flows.base.FlowBase.in_background`), and the form waits with the screen live.
"""

from __future__ import annotations

from functools import partial

from hearth.errors import HearthError
from hearth.node.node import Node
from hearth.values import counted
from tui.flows.base import Done, FlowBase
from tui.screens.form import Choice, Field, Values

__all__ = ["CarryingFlows"]


class CarryingFlows(FlowBase):
    """The commands (ctrl+p) that write and read the files of `hearth bundle`."""

    def action_write_changes(self) -> None:
        """Write the group's changes to a file, to carry to a device that cannot sync
        (what `hearth bundle export` does)."""
        self.ask(
            "Carry changes: write to a file",
            [
                Choice(
                    "which",
                    "Which changes",
                    [
                        ("Every change of the group", "all"),
                        ("Only those the other device lacks (from the file it wrote)", "missing"),
                    ],
                ),
                Field("file", "To the file", placeholder="/media/usb/hearth-changes"),
                Field(
                    "since",
                    "The file the other device wrote of what it has (only for those it lacks)",
                    placeholder="/media/usb/hearth-have",
                ),
            ],
            self._write_changes,
            ok="Write",
        )

    async def _write_changes(self, v: Values) -> Done:
        if not v["file"]:
            raise HearthError("Give the file to write, e.g. /media/usb/hearth-changes.")
        if v["which"] == "missing" and not v["since"]:
            raise HearthError(
                "Give the file the other device wrote (ctrl+p there, Carry changes: say "
                "what this device has), or choose every change."
            )
        since = v["since"] if v["which"] == "missing" else None
        written = await self.in_background(
            partial(_write_changes_of, self.group_id, v["file"], since)
        )
        return Done(
            f"Wrote {counted(written, 'change')} to {v['file']}: on the other device, "
            "ctrl+p, Carry changes: read from a file."
        )

    def action_read_changes(self) -> None:
        """Take in the changes another device wrote to a file (what `hearth bundle import`
        does)."""
        self.ask(
            "Carry changes: read from a file",
            [Field("file", "From the file", placeholder="/media/usb/hearth-changes")],
            self._read_changes,
            ok="Read",
        )

    async def _read_changes(self, v: Values) -> Done:
        from hearth.net.carrying import read_changes
        from hearth.validity.intake import Verdict

        if not v["file"]:
            raise HearthError("Give the file to read, e.g. /media/usb/hearth-changes.")
        counts = await self.in_background(partial(read_changes, file=v["file"]))
        return Done(
            f"Took in {counted(counts[Verdict.APPLIED], 'change')} from {v['file']} "
            f"(already had {counts[Verdict.DUPLICATE]}, waiting for earlier ones "
            f"{counts[Verdict.WAITING]}, refused {counts[Verdict.REJECTED]})."
        )

    def action_write_have(self) -> None:
        """Write what this device has to a file, so that the other device writes only what
        is missing here (what `hearth bundle have` does)."""
        self.ask(
            "Carry changes: say what this device has",
            [Field("file", "To the file", placeholder="/media/usb/hearth-have")],
            self._write_have,
            ok="Write",
        )

    def _write_have(self, v: Values) -> Done:
        from hearth.net.carrying import write_have

        if not v["file"]:
            raise HearthError("Give the file to write, e.g. /media/usb/hearth-have.")
        write_have(self.node, self.group_id, v["file"])  # a few lines: no need to wait
        return Done(
            f"Wrote what this device has to {v['file']}: on the other device, ctrl+p, "
            "Carry changes: write to a file, only those this one lacks."
        )


def _write_changes_of(group_id: str, file: str, since: str | None, node: Node) -> int:
    from hearth.net.carrying import write_changes

    return write_changes(node, group_id, file, since=since)
