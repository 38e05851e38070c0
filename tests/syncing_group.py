"""A small group of real Hearth nodes (in-process :class:`~hearth.node.node.Node`\\s with the
real sync client over real WebSockets) for tests that attack a relay: while the attack goes
on, the members write and sync through that relay, and their ledgers must agree.

The nodes are made once and can sync through any number of relays: each relay address is
new to them, so the first sync with a relay uploads the whole history there.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from hearth.net.sync_client import RelayReport, sync_relay
from hearth.node.identity import create_identity
from hearth.node.node import Node, open_node

__all__ = ["SyncingGroup"]


@dataclass
class SyncingGroup:
    """Three members of one group, their nodes open until :meth:`close`."""

    nodes: list[Node]
    group: str
    _open: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _written: int = 0

    @classmethod
    def create(cls, where: Path, url: str) -> SyncingGroup:
        """Ada makes the group through the relay at ``url``; Ben and Cleo join by token."""
        stack = contextlib.ExitStack()
        nodes = []
        for name in ("Ada", "Ben", "Cleo"):
            create_identity(where / name.lower(), name=name)
            nodes.append(stack.enter_context(open_node(where / name.lower())))
        ada = nodes[0]
        group = ada.create_group("Attacked Relay Co-op").id
        tokens = [ada.create_invite() for _ in nodes[1:]]
        made = cls(nodes, group, stack)
        asyncio.run(made._sync_one(ada, url))
        for node, token in zip(nodes[1:], tokens, strict=True):
            node.join_with_token(token)
        asyncio.run(made.sync(url, rounds=3))  # claims, then Ada's confirmations, then theirs
        made.assert_agreed()
        return made

    def close(self) -> None:
        """Close the nodes' stores."""
        self._open.close()

    async def _sync_one(self, node: Node, url: str) -> RelayReport:
        report = await sync_relay(node, url, [self.group], timeout=30)
        assert report.ok, f"{node.identity.name}'s sync through {url} failed: {report.error}"
        return report

    async def sync(self, url: str, rounds: int = 2) -> None:
        """Every member syncs through ``url`` at once, ``rounds`` times (two: whatever one
        uploaded in the first, every other has read in the second)."""
        for _ in range(rounds):
            await asyncio.gather(*(self._sync_one(node, url) for node in self.nodes))

    async def write_and_sync(self, url: str) -> None:
        """Each member adds a resource, then all sync through ``url`` until they agree."""
        self._written += 1
        for node in self.nodes:
            with node.change(self.group) as ledger:
                ledger.add_resource(f"{node.identity.name}'s thing {self._written}")
        await self.sync(url)
        self.assert_agreed()

    def assert_agreed(self) -> None:
        """Every member holds the same ledger: the same changes and the same bundles."""
        first = self.nodes[0]
        heads = sorted(first.ledger(self.group).doc.heads())
        feeds = first.feeds.heads(self.group)
        things = {r.name for r in first.view(self.group).resources()}
        for node in self.nodes[1:]:
            name = node.identity.name
            assert sorted(node.ledger(self.group).doc.heads()) == heads, f"{name} differs"
            assert node.feeds.heads(self.group) == feeds, f"{name}'s bundles differ"
        expected = {
            f"{n.identity.name}'s thing {i}"
            for n in self.nodes
            for i in range(1, self._written + 1)
        }
        assert expected <= things, expected - things
