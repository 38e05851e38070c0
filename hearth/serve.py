"""``hearth serve``: the node as a daemon, live with every relay of its groups.

One task per relay keeps a live exchange going (reconnecting with backoff); bundles that
arrive are applied as they come, and bundles written by this node — also by other
``hearth`` commands on the same home while it runs — go out within half a second. Relays
added to a group's ledger while it runs are picked up too.
"""

from __future__ import annotations

import asyncio
import logging

from hearth.node import Node
from hearth.sync_client import stay_connected

__all__ = ["serve"]

log = logging.getLogger(__name__)


async def serve(node: Node, stop: asyncio.Event, *, check_s: float = 5.0) -> None:
    """Run until ``stop`` is set."""
    tasks: dict[str, asyncio.Task[None]] = {}
    try:
        while not stop.is_set():
            groups = [g.id for g in node.groups()]
            wanted = {url for g in groups for url in node.view(g).relays()}
            for url in sorted(wanted - set(tasks)):
                log.info("connecting to %s", url)
                tasks[url] = asyncio.create_task(stay_connected(node, url, groups))
            for url in sorted(set(tasks) - wanted):
                tasks.pop(url).cancel()
            try:
                await asyncio.wait_for(stop.wait(), timeout=check_s)
            except asyncio.TimeoutError:
                continue
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
