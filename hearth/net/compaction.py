"""Folding a group's stored changes into a snapshot in another process.

A node with an event loop to keep responsive (``hearth serve``, the app) must not save a
large Automerge document itself: the binding holds the GIL for the whole save
(AUTOMERGE.md). Such a node sets ``Node.compact_elsewhere``; :func:`compact_in_background`
then runs ``python -m hearth.net.compaction HOME GROUP`` for each group that is due, which
loads the group from the store, saves the snapshot, gives the group's relays a snapshot
of their own when one is due (the same save, paid for here rather than in the loop), and
exits. It only publishes to the relays, reading nothing from them: taking bundles in
beside the loop would repeat the loop's work and hold the store's write lock while the
loop waited for it. SQLite keeps the two processes' writes apart, as it does for any two
``hearth`` commands on one home.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hearth.net.sync_client import give_snapshots
from hearth.node.node import Node, open_node

__all__ = ["compact_in_background", "main"]

log = logging.getLogger(__name__)


async def compact_in_background(node: Node, *, poll_s: float = 1.0) -> None:
    """Compact each group as it falls due, one process at a time; runs until cancelled."""
    node.compact_elsewhere = True
    while True:
        await asyncio.sleep(poll_s)
        for group_id in sorted(node.compactions_due):
            node.compactions_due.discard(group_id)
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hearth.net.compaction",
                str(node.home),
                group_id,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                _, err = await child.communicate()
            except asyncio.CancelledError:
                await child.wait()  # let it finish: it is short, and nothing is left behind
                raise
            if child.returncode != 0:
                log.warning("compacting a group's changes failed: %s", err.decode().strip())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hearth.net.compaction HOME GROUP_ID``: compact, then give each relay a
    snapshot if one is due (a new device then catches up from it)."""
    home, group_id = argv if argv is not None else sys.argv[1:]
    with open_node(Path(home)) as node:
        node.compact(group_id)
        relays = node.view(group_id).relays()
        if relays:
            asyncio.run(give_snapshots(node, relays, [group_id], timeout=120))
    return 0


if __name__ == "__main__":
    sys.exit(main())
