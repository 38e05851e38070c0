"""``hearth demo``: a street's tool library, made up on the spot, to see Hearth working.

A relay starts on loopback, and three neighbours — Ada, Ben and Cleo — each get a node (a
home directory) in a temporary folder. Ada starts the group and records the library's
things; Ben and Cleo join with invite tokens; then all three make changes while apart
(two of them lend out the one gazebo) and sync through the relay. Next door, Dee's
allotment group shares a neighbourhood with them: it offers apples and rhubarb, and asks
for some of the library's compost. The summary shows the three ledgers identical, the
conflict the merge could not see, and what the neighbours offer and ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from hearth.crypto import SigningKey
from hearth.errors import TransportError
from hearth.ledger import CommitmentStatus, Kind, find_conflicts
from hearth.ledger.ledger import Ledger
from hearth.neighbourhood import participation
from hearth.net.sync_client import sync_relay
from hearth.node.identity import create_identity
from hearth.node.node import Node, open_node
from hearth.validity.intake import Verdict, take_in
from hearth.values import counted, format_time

__all__ = ["DemoClock", "build_demo", "run_demo", "running_demo", "summary"]

_DAY = 86_400_000

# name, kind, quantity, unit, location
_THINGS = [
    ("Cordless drill", Kind.TOOL, 1, "", "Ada's shed"),
    ("Ladder (3 m)", Kind.TOOL, 1, "", "Ada's shed"),
    ("Hedge trimmer", Kind.TOOL, 1, "", "Ben's garage"),
    ("Lawn mower", Kind.TOOL, 1, "", "Ben's garage"),
    ("Wheelbarrow", Kind.TOOL, 2, "", "Allotment gate"),
    ("Pressure washer", Kind.TOOL, 1, "", "Cleo's porch"),
    ("Circular saw", Kind.TOOL, 1, "", "Ada's shed"),
    ("Sewing machine", Kind.TOOL, 1, "", "Cleo's flat"),
    ("Tile cutter", Kind.TOOL, 1, "", "Ada's shed"),
    ("Jump leads", Kind.TOOL, 1, "", "Ben's garage"),
    ("Camping stove", Kind.TOOL, 1, "", "Cleo's porch"),
    ("Gazebo", Kind.SPACE, 1, "", "Community room"),
    ("Carpet cleaner", Kind.TOOL, 1, "", "Community room"),
    ("Bike pump", Kind.TOOL, 1, "", "Ben's garage"),
    ("Socket set", Kind.TOOL, 1, "", "Ada's shed"),
    ("Spirit level", Kind.TOOL, 1, "", "Ada's shed"),
    ("Paint rollers", Kind.TOOL, 6, "", "Community room"),
    ("Dust sheets", Kind.TOOL, 10, "", "Community room"),
    ("Sandpaper", Kind.OTHER, 40, "sheets", "Ada's shed"),
    ("Compost", Kind.FOOD, 12, "bags", "Allotment gate"),
    ("Seed potatoes", Kind.FOOD, 15, "kg", "Allotment shed"),
    ("Jam jars", Kind.OTHER, 24, "", "Cleo's flat"),
    ("Community room", Kind.SPACE, 1, "", "12 Elm Street"),
    ("Bike repairs", Kind.SKILL, 1, "hours", "Ben"),
]


@dataclass
class DemoClock:
    """A clock that starts eight days ago and moves on a little with every action."""

    now: int = field(default_factory=lambda: time.time_ns() // 1_000_000 - 8 * _DAY)
    rng: random.Random = field(default_factory=lambda: random.Random(7))  # noqa: S311 - pacing only

    def now_ms(self) -> int:
        """The demo's time, never later than the real time."""
        step = self.rng.randint(20, 240) * 60_000
        self.now = max(self.now + 1, min(self.now + step, time.time_ns() // 1_000_000))
        return self.now


@dataclass
class Demo:
    """The three nodes of the demo's group, the neighbour group's node, and where they live."""

    root: Path
    nodes: dict[str, Node]
    group_id: str
    neighbour: Node | None = None

    def close(self) -> None:
        """Close every node."""
        for node in self.nodes.values():
            node.close()
        if self.neighbour is not None:
            self.neighbour.close()


def _find(ledger: Ledger, name: str) -> str:
    return ledger.view.find("resources", name)


def build_demo(root: Path, clock: DemoClock | None = None, relay_url: str | None = None) -> Demo:
    """Create the three nodes, the group and its history in ``root``.

    With ``relay_url`` the nodes sync through that relay; without, they hand each other
    their bundles directly (as `hearth bundle export/import` would).
    """
    clock = clock or DemoClock()
    nodes, group_id = _library(root, clock, relay_url)

    def exchange() -> None:
        if relay_url:
            _through_relay(nodes, group_id, relay_url)
        else:
            _exchange(nodes, group_id)

    exchange()
    real_now = time.time_ns() // 1_000_000
    promises = _a_busy_week(nodes, real_now)
    exchange()
    _promises_answered(nodes, promises, exchange)
    _apart_for_an_afternoon(nodes, real_now)
    exchange()
    dee = _neighbours(root, clock, nodes["Ada"], group_id, relay_url)
    exchange()
    return Demo(root=root, nodes=nodes, group_id=group_id, neighbour=dee)


def _library(root: Path, clock: DemoClock, relay_url: str | None) -> tuple[dict[str, Node], str]:
    """Ada, Ben and Cleo, each on a node of their own, in Ada's tool library with its
    things."""
    nodes: dict[str, Node] = {}
    for name in ("Ada", "Ben", "Cleo"):
        home = root / name.lower()
        create_identity(home, name=name, device_name=f"{name}'s laptop")
        nodes[name] = open_node(home, clock=clock)
    ada = nodes["Ada"]
    group = ada.create_group("Elm Street Tool Library")
    if relay_url:
        with ada.change() as ledger:
            ledger.add_relay(relay_url)
    with ada.change() as ledger:
        for name, kind, qty, unit, where in _THINGS:
            ledger.add_resource(
                name,
                kind=kind,
                quantity=Decimal(qty),
                unit=unit,
                location=where,
                shareable=kind is not Kind.SPACE,
            )
    for other in (nodes["Ben"], nodes["Cleo"]):
        # The demo's clock runs hours ahead with every action: a day's invite would
        # lapse before Ada's node sees the claim and confirms it (R14).
        other.join_with_token(ada.create_invite(valid_for_ms=30 * _DAY))
    return nodes, group.id


def _a_busy_week(nodes: dict[str, Node], real_now: int) -> dict[str, str]:
    """Lends, returns, needs and promises, each member on their own node; the ids of the
    promises to answer next."""
    with nodes["Ada"].change() as ledger:
        ledger.lend(_find(ledger, "Cordless drill"), to="Ben")
        ledger.return_(_find(ledger, "Cordless drill"))
        ledger.lend(_find(ledger, "Ladder (3 m)"), to="Cleo", until=real_now + 5 * _DAY)
        ledger.consume(_find(ledger, "Sandpaper"), Decimal(8), note="Ben's fence")
        ledger.add_need("Extension lead (10 m)", by=real_now + 3 * _DAY)
        sewing = ledger.add_commitment(
            "Teach a sewing class", giver="Cleo", receiver="Ada", due=real_now + 10 * _DAY
        ).id
        compost = ledger.add_commitment(
            "Compost for the raised beds",
            giver="Ada",
            receiver="Ben",
            resource=_find(ledger, "Compost"),
            quantity=Decimal(4),
            due=real_now - 2 * _DAY,
        ).id
    with nodes["Ben"].change() as ledger:
        ledger.lend(_find(ledger, "Lawn mower"), to="Cleo", until=real_now + 2 * _DAY)
        ledger.produce(_find(ledger, "Seed potatoes"), Decimal(5), note="from the market")
        ledger.add_need("Someone to help move a sofa", by=real_now + 1 * _DAY)
        bike = ledger.add_commitment(
            "Fix Cleo's bike", giver="Ben", receiver="Cleo", resource=_find(ledger, "Bike repairs")
        ).id
        washer = ledger.add_commitment(
            "Borrow the pressure washer all summer", giver="Cleo", receiver="Ben"
        ).id
    with nodes["Cleo"].change() as ledger:
        ledger.give(_find(ledger, "Jam jars"), to="Ada", quantity=Decimal(6))
        ledger.add_need(
            "Apples for the jam session", quantity=Decimal(5), unit="kg", by=real_now + 6 * _DAY
        )
        n = ledger.add_need("Bike lights")
        ledger.close_need(n.id)
        ledger.add_commitment(
            "Seed potatoes for the allotment",
            giver="Ben",
            receiver="Cleo",
            resource=_find(ledger, "Seed potatoes"),
            quantity=Decimal(3),
            due=real_now + 4 * _DAY,
        )
        c2 = ledger.add_commitment(
            "Paint rollers for the hall",
            giver="Ada",
            receiver="Cleo",
            resource=_find(ledger, "Paint rollers"),
            quantity=Decimal(2),
        )
        ledger.change_commitment(c2.id, CommitmentStatus.CANCELLED)
    return {"sewing": sewing, "compost": compost, "bike": bike, "washer": washer}


def _promises_answered(
    nodes: dict[str, Node], promises: dict[str, str], exchange: Callable[[], None]
) -> None:
    """Each promise answered by the one it was proposed to; Ben fixes Cleo's bike."""
    with nodes["Cleo"].change() as ledger:
        ledger.change_commitment(promises["sewing"], CommitmentStatus.ACCEPTED)
        ledger.change_commitment(promises["bike"], CommitmentStatus.ACCEPTED)
        ledger.change_commitment(promises["washer"], CommitmentStatus.DECLINED)
    with nodes["Ben"].change() as ledger:
        ledger.change_commitment(promises["compost"], CommitmentStatus.ACCEPTED)
    exchange()
    with nodes["Ben"].change() as ledger:
        ledger.change_commitment(promises["bike"], CommitmentStatus.FULFILLED)


def _apart_for_an_afternoon(nodes: dict[str, Node], real_now: int) -> None:
    """Apart for an afternoon: Ada and Ben both lend out the gazebo."""
    with nodes["Ada"].change() as ledger:
        ledger.lend(_find(ledger, "Gazebo"), to="Cleo", until=real_now + 2 * _DAY)
        ledger.add_resource("Leaf blower", kind=Kind.TOOL, location="Ada's shed")
    with nodes["Ben"].change() as ledger:
        ledger.lend(_find(ledger, "Gazebo"), to="Ben", until=real_now + 3 * _DAY)
        ledger.add_need("Garden twine", quantity=Decimal(1), unit="roll")
    with nodes["Cleo"].change() as ledger:
        ledger.return_(_find(ledger, "Lawn mower"))


def _neighbours(
    root: Path, clock: DemoClock, ada: Node, group_id: str, relay_url: str | None
) -> Node:
    """Dee's allotment group joins a neighbourhood with the library, offers some of its
    harvest and asks for compost."""
    create_identity(root / "dee", name="Dee", device_name="Dee's phone")
    dee = open_node(root / "dee", clock=clock)
    allotment = dee.create_group("Riverside Allotment").id
    with dee.change() as ledger:
        if relay_url:
            ledger.add_relay(relay_url)
        for name, qty, unit in (("Apples (windfalls)", 20, "kg"), ("Rhubarb crowns", 6, "")):
            ledger.add_resource(
                name, kind=Kind.FOOD, quantity=Decimal(qty), unit=unit, shareable=True
            )
    hood = participation.create(ada, group_id, "Eastside")
    key = SigningKey.generate()
    participation.admit(ada, hood, key.public, "Riverside Allotment")
    participation.join(dee, allotment, participation.encode_token(hood), key)
    compost = participation.add_offer(ada, group_id, "Compost", Decimal(5), note="well rotted")
    real_now = time.time_ns() // 1_000_000
    participation.add_offer(
        dee, allotment, "Apples (windfalls)", Decimal(10), until=real_now + 14 * _DAY
    )
    participation.add_offer(dee, allotment, "Rhubarb crowns", Decimal(3), note="ready to plant")
    said = ((ada, group_id), (dee, allotment))
    _share_records(said, relay_url)
    participation.request(dee, allotment, compost.id, Decimal(2), note="for the new beds")
    _share_records(said, relay_url)
    return dee


def _share_records(said: tuple[tuple[Node, str], ...], relay_url: str | None) -> None:
    """The neighbourhood's records, from each side to the other."""
    if relay_url:
        for node, group in (*said, said[0]):
            asyncio.run(sync_relay(node, relay_url, [group], timeout=20))
        return
    (first, _), (second, _) = said
    for source, target in ((first, second), (second, first)):
        for (envelope,) in source.store.query("SELECT envelope FROM neighbourhood_records"):
            take_in(target, bytes(envelope), source="demo")


def _exchange(nodes: dict[str, Node], group_id: str) -> None:
    """Every node takes in every other node's bundles, as a sync through a relay would,
    until none has anything new (taking bundles in can write some: a join confirmed)."""
    for _ in range(len(nodes) + 1):
        new = 0
        for source in nodes.values():
            bundles = source.feeds.all(group_id)
            for target in nodes.values():
                if target is not source:
                    for bundle in bundles:
                        outcome = take_in(target, bundle.envelope, source="demo")
                        new += outcome.verdict is not Verdict.DUPLICATE
        if not new:
            return


def _through_relay(nodes: dict[str, Node], group_id: str, url: str) -> None:
    """Every node syncs with the relay, twice round, as `hearth sync` does."""
    for _ in range(2):
        for node in nodes.values():
            report = asyncio.run(sync_relay(node, url, [group_id], timeout=20))
            if not report.ok:
                raise TransportError(f"The demo's relay stopped answering: {report.error}")


def start_relay(root: Path) -> tuple[subprocess.Popen[str], str]:
    """A ``hearth-relay`` on a free loopback port, and its address."""
    command = [
        sys.executable,
        "-m",
        "relay.cli",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data",
        str(root / "relay"),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise TransportError("The demo could not start its relay on this machine.")
    return proc, line.removeprefix("listening on ")


def summary(demo: Demo) -> str:
    """What the demo shows, in a few lines."""
    ada = demo.nodes["Ada"].ledger(demo.group_id)
    view = ada.view
    lines = [
        f"Hearth demo: '{ada.name}' with {len(view.members())} members, "
        f"{len(view.resources())} resources, {len(view.needs())} needs, "
        f"{len(view.commitments())} commitments, {len(view.events())} events."
    ]
    heads = {name: sorted(n.ledger(demo.group_id).doc.heads()) for name, n in demo.nodes.items()}
    same = len({tuple(h) for h in heads.values()}) == 1
    lines.append(
        "Ada, Ben and Cleo each changed the ledger while apart, then synced through a relay"
        " on this machine: "
        + ("all three ledgers are now identical." if same else "THEY DIFFER (a bug).")
    )
    by_status: dict[str, int] = {}
    for c in view.commitments():
        by_status[c.status.value] = by_status.get(c.status.value, 0) + 1
    lines.append("Commitments: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())))
    lent = [r for r in view.resources() if r.lent_to]
    lines.append(
        "Lent out: "
        + ", ".join(
            f"{r.name} → {' & '.join(view.member_name(m) for m in r.lent_to)}" for r in lent
        )
    )
    for conflict in find_conflicts(view):
        lines.append(f"Conflict to sort out: {conflict.summary}")
    ada_node = demo.nodes["Ada"]
    for membership in participation.memberships(ada_node, demo.group_id):
        hood = participation.state(ada_node, membership)
        others = [
            o for o in hood.open_offers(ada_node.clock.now_ms()) if o.group != membership.key.public
        ]
        pending = sum(1 for r in hood.requests.values() if r.status == "pending")
        lines.append(
            f"Neighbourhood '{hood.name}': "
            + ", ".join(f"{o.group_name} offers {o.what}" for o in others)
            + f"; {counted(pending, 'request')} {'waits' if pending == 1 else 'wait'}"
            " for the library's answer (Neighbours tab, key 8)."
        )
    latest = view.events()[-1]
    lines.append(f"Latest activity: {format_time(latest.at)} by {view.member_name(latest.by)}.")
    lines.append(f"Explore Ada's copy: hearth --home {demo.nodes['Ada'].home} resource list")
    return "\n".join(lines)


@contextlib.contextmanager
def running_demo() -> Iterator[Demo]:
    """The demo, built in a temporary folder around a relay on loopback that keeps
    running until the block ends (so an app opened on it can share)."""
    root = Path(tempfile.mkdtemp(prefix="hearth-demo-"))
    relay, url = start_relay(root)
    try:
        demo = build_demo(root, relay_url=url)
        try:
            yield demo
        finally:
            demo.close()
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=15)
        if relay.stdout is not None:
            relay.stdout.close()


def run_demo() -> int:
    """Build the demo and print what it shows."""
    with running_demo() as demo:
        print(summary(demo))
    return 0
