"""A deterministic simulation of nodes and a relay (SECURITY.md §8).

Production code throughout — ``Node``, the bundle intake, ``RelaySession`` on the node
side, ``RelayCore`` on the relay side — with the clock, the randomness, the transport and
the relay's storage injected. Connections carry frames in order, as a WebSocket does, but
drop at random (losing whatever was in flight); nodes go offline for a while, restart from
their stores, and also pass bundles to each other by hand in random order with duplicates.
Every run is fixed by its seed; ``HEARTH_SEED=…`` replays one.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from hearth.errors import HearthError
from hearth.net.sync_client import RelayReport, plan_for, record, snapshot_due, written_here
from hearth.node.identity import create_identity
from hearth.node.node import Node, open_node
from hearth.protocol.connection import Connection, Role
from hearth.protocol.sync import Output, Paused, RelaySession, Send, Settled
from hearth.testing import FakeClock, seeded_bytes, seeded_ids
from hearth.validity.intake import take_in
from relay.config import RelayConfig
from relay.core import CatchUp, CloseClient, RelayCore, ToClient
from relay.sqlite_store import SqliteStore

URL = "ws://relay.sim:1"
DAY_MS = 86_400_000


@dataclass
class Link:
    """One simulated WebSocket between a node and the relay."""

    client: int
    session: RelaySession
    conn: Connection = field(default_factory=lambda: Connection(Role.CONNECTING))
    to_relay: deque[bytes] = field(default_factory=deque)
    to_node: deque[bytes] = field(default_factory=deque)
    settled: bool = False
    report: RelayReport = field(default_factory=lambda: RelayReport(url=URL))
    mark: int = 0  # the node's newest arrival when the link was made
    offered: set[bytes] = field(default_factory=set)  # bundles sent up on this link


class Simulation:
    """Nodes of one group and one relay, driven step by step from a seed."""

    def __init__(self, root: Path, seed: int, nodes: int) -> None:
        self.rng = random.Random(seed)
        self.clock = FakeClock(now=1_800_000_000_000, step=1)
        self.root = root
        self.trace: list[str] = []
        self.relay = RelayCore(
            RelayConfig(publish_burst=100_000),
            SqliteStore(Path(":memory:")),
            clock=lambda: self.clock.now / 1000,
        )
        self.homes = [root / f"n{i}" for i in range(nodes)]
        self.nodes: list[Node] = []
        for i, home in enumerate(self.homes):
            create_identity(
                home,
                name=f"Member {i}",
                device_name=f"device {i}",
                random_bytes=seeded_bytes(seed * 100 + 50 + i),
            )
            self.nodes.append(
                open_node(
                    home,
                    clock=self.clock,
                    new_id=seeded_ids(seed * 100 + i),
                    random_bytes=seeded_bytes(seed * 100 + i),
                    durable=False,
                )
            )
        founder = self.nodes[0]
        founder.create_group("Simulated allotment")
        with founder.change() as ledger:
            ledger.add_relay(URL)
            for name in ("Spade", "Compost", "Ladder"):
                ledger.add_resource(name, quantity=Decimal(50))
        for node in self.nodes[1:]:
            # Valid for longer than any spell offline here: the founder confirms each claim
            # when it reaches her, which may be a week on (R14).
            node.join_with_token(founder.create_invite(valid_for_ms=30 * DAY_MS))
        self.group = founder.current_group().id
        self.links: dict[int, Link] = {}
        self.offline_until = [0] * nodes
        self._next_client = 0

    # --- the moves ------------------------------------------------------------------

    def edit(self, i: int) -> None:
        node = self.nodes[i]
        view = node.view(self.group)
        resources = sorted(r.id for r in view.resources())
        members = sorted(view.tables["members"])
        choice = self.rng.randrange(5) if resources else 4
        try:
            with node.change(self.group) as ledger:
                rid = resources[self.rng.randrange(len(resources))] if resources else ""
                if choice == 0:
                    ledger.produce(rid, Decimal(self.rng.randint(1, 3)))
                elif choice == 1:
                    ledger.consume(rid, Decimal(1))
                elif choice == 2 and members:
                    ledger.lend(rid, to=members[self.rng.randrange(len(members))])
                elif choice == 3:
                    ledger.return_(rid)
                else:
                    ledger.add_need(f"need {self.rng.randrange(1000)}")
        except HearthError:
            return  # refused locally (nothing to return, say): nothing was written
        self.trace.append(f"edit n{i} {choice}")
        link = self.links.get(i)
        if link is not None and link.session.welcomed:
            mine = [
                (b.id, b.envelope)
                for b in node.feeds.all(self.group)
                if b.author == node.identity.device_key.public
            ]
            link.offered.update(bundle_id for bundle_id, _ in mine[-1:])
            self._node_outputs(i, link, link.session.publish(mine[-1:]))

    def connect(self, i: int) -> None:
        if i in self.links or self.offline_until[i] > self.clock.now:
            return
        self._next_client += 1
        client = self._next_client
        assert self.relay.admit(client, f"10.0.0.{i}")
        plans = plan_for(self.nodes[i], URL, [self.group])
        link = Link(
            client=client,
            session=RelaySession(plans=plans),
            mark=self.nodes[i].feeds.newest_arrival(),
            offered={bundle_id for plan in plans for bundle_id, _ in plan.outgoing},
        )
        self.links[i] = link
        self.trace.append(f"connect n{i}")
        self._node_outputs(i, link, link.session.start())

    def drop(self, i: int) -> None:
        link = self.links.pop(i, None)
        if link is not None:
            self.relay.gone(link.client)
            self.trace.append(f"drop n{i} ({len(link.to_relay)}+{len(link.to_node)} lost)")

    def go_offline(self, i: int, ms: int) -> None:
        self.drop(i)
        self.offline_until[i] = self.clock.now + ms
        self.trace.append(f"offline n{i} {ms}ms")

    def restart(self, i: int) -> None:
        """Close the node and open it again from its store (save/load at a random point)."""
        self.drop(i)
        self.nodes[i].close()
        self.nodes[i] = open_node(
            self.homes[i],
            clock=self.clock,
            new_id=seeded_ids(self.rng.randrange(2**32)),
            random_bytes=seeded_bytes(self.rng.randrange(2**32)),
            durable=False,
        )
        self.trace.append(f"restart n{i}")

    def gossip(self, source: int, target: int) -> None:
        """Bundles handed over by hand: a random subset, shuffled, some twice."""
        bundles = [b.envelope for b in self.nodes[source].feeds.all(self.group)]
        chosen = self.rng.sample(bundles, self.rng.randint(0, len(bundles)))
        chosen += self.rng.sample(chosen, min(len(chosen), self.rng.randint(0, 3)))
        self.rng.shuffle(chosen)
        for envelope in chosen:
            take_in(self.nodes[target], envelope, source="gossip")
        self.trace.append(f"gossip n{source}->n{target} {len(chosen)}")

    def pump(self, i: int) -> bool:
        """Move one frame along node i's link, in either direction; ``False`` if idle."""
        link = self.links.get(i)
        if link is None:
            return False
        directions = [d for d, queue in (("up", link.to_relay), ("down", link.to_node)) if queue]
        if not directions:
            return False
        if self.rng.choice(directions) == "up":
            outputs = self.relay.receive(link.client, link.to_relay.popleft())
            self._relay_outputs(outputs + self.relay.flush())
        else:
            frame = link.conn.receive(link.to_node.popleft())
            self._node_outputs(i, link, link.session.handle(frame))
        return True

    # --- carrying outputs --------------------------------------------------------------

    def _node_outputs(self, i: int, link: Link, outputs: list[Output]) -> None:
        for output in record(self.nodes[i], URL, outputs, link.report):
            if isinstance(output, Send):
                link.to_relay.append(link.conn.send(output.frame))
            elif isinstance(output, Paused):
                self._node_outputs(i, link, link.session.resume())
            elif isinstance(output, Settled):
                # As hearth sync does: what taking bundles in wrote goes out now.
                topics = {plan.topic for plan in link.session.plans}
                written = written_here(self.nodes[i], link.mark, topics, link.offered)
                if written:
                    self._node_outputs(i, link, link.session.publish(written))
                    continue
                snapshot = snapshot_due(self.nodes[i], URL, [self.group])
                if snapshot is None:
                    link.settled = True
                else:
                    self._node_outputs(i, link, link.session.publish_snapshot(*snapshot))

    def _relay_outputs(self, outputs: list[ToClient | CatchUp | CloseClient]) -> None:
        by_client = {link.client: (i, link) for i, link in self.links.items()}
        for output in outputs:
            if output.client not in by_client:
                continue
            i, link = by_client[output.client]
            if isinstance(output, CloseClient):
                raise AssertionError(f"relay closed n{i}: {output.reason}")
            if isinstance(output, CatchUp):
                cursor = min(output.after, self.relay.store.newest(output.topic))
                for frame in self.relay.catch_up(output):
                    link.to_node.append(self.relay.encode(output.client, frame))
                    cursor = max(cursor, frame.cursor)
                caught = self.relay.caught_up(output.topic, cursor)
                link.to_node.append(self.relay.encode(output.client, caught))
            else:
                link.to_node.append(self.relay.encode(output.client, output.frame))

    # --- running ----------------------------------------------------------------------

    def step(self) -> None:
        """One random move."""
        self.clock.advance(self.rng.randint(1, 60_000))
        i = self.rng.randrange(len(self.nodes))
        move = self.rng.random()
        if move < 0.25:
            self.edit(i)
        elif move < 0.35:
            self.connect(i)
        elif move < 0.40:
            self.drop(i)
        elif move < 0.42:
            self.go_offline(i, self.rng.randint(60_000, 7 * DAY_MS))
        elif move < 0.44:
            self.restart(i)
        elif move < 0.48:
            self.gossip(i, self.rng.randrange(len(self.nodes)))
        else:
            for _ in range(self.rng.randint(1, 8)):
                self.pump(i)

    def sync_round(self) -> None:
        """Every node, one after the other, connects and syncs until settled."""
        for i in range(len(self.nodes)):
            self.offline_until[i] = 0
            self.drop(i)
            self.connect(i)
            link = self.links[i]
            while self.pump(i) or not link.settled:
                if not link.to_relay and not link.to_node and not link.settled:
                    raise AssertionError(f"n{i}'s sync stalled before settling")
            self.drop(i)

    def fingerprint(self, i: int) -> tuple[object, ...]:
        """What must be identical on every node once they have synced."""
        node = self.nodes[i]
        view = node.view(self.group)
        # Feed heads, not bundle sets: a node that took a snapshot need not hold every bundle.
        return (
            sorted(node.ledger(self.group).doc.heads()),
            view.tables,
            node.feeds.heads(self.group),
        )

    def close(self) -> None:
        """Close every node."""
        for node in self.nodes:
            node.close()
