"""``hearth serve``: the node as a daemon, live with every relay and peer of its groups.

One task per relay and per peer keeps a live exchange going (reconnecting with backoff);
bundles that arrive are applied as they come, and bundles written by this node — also by
other ``hearth`` commands on the same home while it runs — go out within half a second.
Relays added to a group's ledger, peers added with ``hearth peer add`` and groups created
or joined while it runs are picked up too. With ``listen``, other members' nodes can
connect here directly, and (unless ``lan`` is off) the node announces itself on the local
network and dials the nodes of its groups it finds there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hearth.group.rotation import keep_keys
from hearth.net.compaction import compact_in_background
from hearth.net.dialled_peers import LISTENING_AT, list_peers
from hearth.net.lan import LanPresence
from hearth.net.peer_listener import HELLO_TIMEOUT_S, open_invites, start_listener
from hearth.net.sync_client import stay_connected
from hearth.node.node import Node
from hearth.validity.intake import confirm_joins

__all__ = ["serve"]

log = logging.getLogger(__name__)


async def serve(
    node: Node,
    stop: asyncio.Event,
    *,
    listen: tuple[str, int] | None = None,
    on_listening: Callable[[str], None] = lambda url: None,
    lan: bool = True,
    check_s: float = 2.0,
    hello_timeout_s: float = HELLO_TIMEOUT_S,
) -> None:
    """Run until ``stop`` is set (``hello_timeout_s``: see :func:`start_listener`)."""
    runner = None
    presence = None
    if listen is not None:
        runner, url = await start_listener(node, *listen, hello_timeout_s=hello_timeout_s)
        listener = runner
        with node.store.write():  # where this home's `hearth invite` finds us without a relay
            node.store.set_meta(LISTENING_AT, url)
        on_listening(url)
        if lan:
            port = int(url.rsplit(":", 1)[1])
            presence = LanPresence(node, listen[0], port, lambda: open_invites(listener))
            await presence.start()
    # (url, is a peer) -> its task, and the groups it was started for
    tasks: dict[tuple[str, bool], tuple[asyncio.Task[None], tuple[str, ...]]] = {}
    compacting = asyncio.create_task(compact_in_background(node))
    try:
        while not stop.is_set():
            groups = [g.id for g in node.groups()]
            for group_id in groups:
                confirm_joins(node, group_id)  # joins to invites made here (R14)
                keep_keys(node, group_id)  # someone left: a new key without them
            wanted = {(url, False) for g in groups for url in node.view(g).relays()}
            wanted |= {(url, True) for url in list_peers(node.store)}
            if presence is not None:
                await presence.refresh()
                wanted |= {(url, True) for url in presence.found.values()}
            for key in sorted(set(tasks)):
                if key not in wanted or tasks[key][1] != tuple(groups):
                    tasks.pop(key)[0].cancel()  # gone, or the groups changed: start again
            for url, peer in sorted(wanted - set(tasks)):
                log.info("connecting to %s %s", "peer" if peer else "relay", url)
                task = asyncio.create_task(stay_connected(node, url, groups, peer=peer))
                tasks[url, peer] = (task, tuple(groups))
            try:
                await asyncio.wait_for(stop.wait(), timeout=check_s)
            except asyncio.TimeoutError:
                continue
    finally:
        running = [task for task, _ in tasks.values()]
        for task in (*running, compacting):
            task.cancel()
        await asyncio.gather(*running, compacting, return_exceptions=True)
        if presence is not None:
            await presence.close()
        if runner is not None:
            with node.store.write():
                node.store.set_meta(LISTENING_AT, "")
            await runner.cleanup()
