"""The membership-concurrency simulation: seeded runs of a group's nodes doing, at random
and while partitioned, what members do — edit, invite newcomers (also someone who was
removed or left, back under a new identity), remove each other (also mutually and
concurrently: the senior one stands, R7), promote, leave, sign two bundles for one place
in a feed (a broken or cloned device), rotate keys — with bundles delivered in random
partial batches. Once everyone has met, every node still in the group must hold the same
membership, the same valid bundles, the same document and the same key, and no node
anywhere may count a bundle past a removed device's cutoff. One founder cheats at random
moments besides (:mod:`tests.cheater`): nothing it tries may count on an honest node, nor
reach it once out, and nothing an honest member wrote while in may be lost. Keys and ids
come from the seed: ``HEARTH_SEED=…`` replays one run."""

from __future__ import annotations

import os
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hearth.errors import HearthError
from hearth.group import member_changes
from hearth.group.rotation import departed_devices, keep_keys
from hearth.ledger import Kind, membership_rules
from hearth.node.node import Node, open_node
from hearth.protocol.bundle import decode_changes, open_envelope, parse_envelope
from hearth.testing import FakeClock, seeded_bytes, seeded_ids
from hearth.validity.alerts import admin_alerts
from hearth.validity.retraction import is_orphaned
from tests.cheater import Cheater
from tests.test_membership import deliver, make_group, new_node

FOUNDERS = ["Ada", "Ben", "Cat", "Dan", "Eve"]
MAX_NODES = 8
# Per CI run: 64, for the suite to stay under ten minutes on two cores with everything
# else it now runs (issue 19 asks at least 200: 0-199 all pass, about 1 s of CPU a seed,
# but the suite is CPU-bound — 856 s of CPU over both cores with 64 seeds — so 136 more
# seeds add about 70 s to a run that has 30 s to spare); more with
# HEARTH_MEMBERSHIP_SEEDS, e.g. 200 or 1000 before a release. About 40% of a seed is
# intake._rejudge after competing removals; most of those change nothing, but no cheaper
# test tried (an INVALID removal no longer past its cutoff; a senior remover) told which.
SEEDS = int(os.environ.get("HEARTH_MEMBERSHIP_SEEDS", "64"))
# Test items the seeds are dealt into (every CHUNKS-th seed each), so that two workers
# share them evenly; each must still see every kind of move it asserts below (with fewer
# than about 30 seeds an item may see no member re-added).
CHUNKS = 3 if SEEDS >= 150 else 2
STEPS = 16
CHEATS = 0.4  # the chance that the cheater tries something after each step


def chunk_seeds(chunk: int) -> list[int]:
    if "HEARTH_SEED" in os.environ:
        return [int(os.environ["HEARTH_SEED"])] if chunk == 0 else []
    return list(range(chunk, SEEDS, CHUNKS))


@pytest.fixture(scope="module")
def founded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One group of five, everyone in sync, Ben an admin too, and a second group of the
    same five (where the cheater replays what it wrote in the first): copied for every
    seed."""
    root = tmp_path_factory.mktemp("founded")
    nodes = make_group(root, FOUNDERS, seed=0)
    gid = nodes[0].current_group().id
    member_changes.promote(nodes[0], gid, "Ben")
    other = nodes[0].create_group("Elsewhere").id
    for node in nodes[1:]:
        node.join_with_token(nodes[0].create_invite())
        with node.change(other) as ledger:  # a first bundle: the claim goes out with it
            ledger.add_resource(f"{node.identity.name}'s crate", kind=Kind.OTHER)
        deliver(node, nodes[0], other)
    for group in (gid, other):
        for source in nodes:
            for target in nodes:
                if source is not target:
                    deliver(source, target, group)
    for node in nodes:
        node.use_group(gid)
    for node in nodes:
        node.close()
    return root


@dataclass
class World:
    """One run: its nodes (founders first, newcomers as they join) and what happened."""

    seed: int
    home: Path
    nodes: list[Node]
    gid: str
    rng: random.Random
    clock: FakeClock
    side: random.Random  # the cheater's draws, apart from the members' own
    cheater: Cheater | None = None
    things: int = 0
    seen: Counter[str] = field(default_factory=Counter)
    trace: list[str] = field(default_factory=list)
    # What honest members wrote: (entry, device, seq of its bundle, hash of its change).
    wrote: list[tuple[str, bytes, int, bytes]] = field(default_factory=list)

    def honest(self) -> list[Node]:
        return [n for n in self.nodes if self.cheater is None or n is not self.cheater.node]

    def open(self, home: Path) -> Node:
        """A founder's node, its own random bytes and ids drawn from the run's seed."""
        own = self.rng.randrange(2**32)
        return open_node(
            home,
            clock=self.clock,
            random_bytes=seeded_bytes(own),
            new_id=seeded_ids(own),
            durable=False,  # thrown away after the seed: no waiting for the disk
        )


def active_admin(node: Node, gid: str) -> bool:
    me = node.view(gid).member(node.identity.member_id)
    return me.status == "active" and me.role.value == "admin"


def step(world: World) -> None:
    """One random thing a member does (or one partial meeting of two nodes)."""
    rng, gid = world.rng, world.gid
    node = rng.choice(world.nodes)
    others = [m for m in node.view(gid).members() if m.id != node.identity.member_id]
    kind = rng.choice(
        ["edit", "edit", "deliver", "deliver", "deliver", "remove", "promote", "leave", "add"]
        + ["mutual"]
        + ["broken"] * (rng.random() < 0.15)
    )
    world.trace.append(f"{node.identity.name}: {kind}")
    try:
        if kind == "edit":
            edit(world, node)
        elif kind == "deliver":
            target = rng.choice(world.nodes)
            world.trace[-1] += f" to {target.identity.name}"
            deliver(node, target, gid)
        elif kind in ("remove", "promote") and others and active_admin(node, gid):
            other = rng.choice(others)
            world.trace[-1] += f" {other.name}"
            change = member_changes.remove_member if kind == "remove" else member_changes.promote
            change(node, gid, other.id)
        elif kind == "leave" and rng.random() < 0.3:
            member_changes.leave(node, gid)
        elif kind == "add" and len(world.nodes) < MAX_NODES and active_admin(node, gid):
            add(world, node)
        elif kind == "mutual":
            remove_each_other(world, node)
        elif kind == "broken":
            sign_twice(world, node)
    except HearthError as error:
        # Refused for a reason a member would be told (not an admin, already out…).
        world.trace[-1] += f" (refused: {error})"


def remove_each_other(world: World, node: Node) -> None:
    """This admin and another, each not knowing what the other does, remove each other."""
    rival = next(
        (
            n
            for n in world.rng.sample(world.nodes, len(world.nodes))
            if n is not node and active_admin(n, world.gid) and active_admin(node, world.gid)
        ),
        None,
    )
    if rival is None:
        world.trace[-1] += " (no two admins)"
        return
    world.trace[-1] += f" with {rival.identity.name}"
    member_changes.remove_member(node, world.gid, rival.identity.member_id)
    member_changes.remove_member(rival, world.gid, node.identity.member_id)


def edit(world: World, node: Node) -> None:
    world.things += 1
    name = f"thing {world.things} by {node.identity.name}"
    with node.change(world.gid) as ledger:
        ledger.add_resource(name, kind=Kind.TOOL)
    if world.cheater is None or node is not world.cheater.node:
        mine = node.identity.device_key.public
        rows = node.store.query(
            "SELECT MAX(seq) FROM bundles WHERE group_id = ? AND author = ?", (world.gid, mine)
        )
        (change,) = node.ledger(world.gid).doc.heads()  # built on everything it held
        world.wrote.append((name, mine, int(rows[0][0]), change))


def add(world: World, admin: Node) -> None:
    """The admin invites someone new — or, half the time, someone who was removed or left,
    back under a new identity — who joins and writes at once. By a printed token, or by
    an invite code (confirmed for the newcomer's device as it is made); the cheater may
    see either."""
    gone = [
        m.name for m in admin.view(world.gid).members(include_gone=True) if m.status != "active"
    ]
    back = bool(gone) and world.rng.random() < 0.5
    name = world.rng.choice(gone) if back else f"New{len(world.nodes)}"
    home = world.home / f"{len(world.nodes)}"
    newcomer = new_node(home, name, world.clock, seed=world.rng.randrange(2**32))
    code = world.side.random() < 0.5
    token = admin.create_invite(for_device=newcomer.identity.device_key.public if code else None)
    if world.cheater is not None:
        world.cheater.saw(token, inviter=admin)
    newcomer.join_with_token(token)
    world.nodes.append(newcomer)
    world.seen["re-added" if back else "added"] += 1
    edit(world, newcomer)  # its claim goes out with its first bundle


def sign_twice(world: World, node: Node) -> None:
    """The node's device writes a bundle, passes it on, then signs another in its place
    with the same changes (a restored backup, a clone): R4 treats it as removed from the
    seq before wherever both are known."""
    gid, mine = world.gid, node.identity.device_key.public
    edit(world, node)
    first = max((b for b in node.feeds.all(gid) if b.author == mine), key=lambda b: b.seq)
    target = world.rng.choice([n for n in world.nodes if n is not node])
    world.trace[-1] += f" (first to {target.identity.name})"
    deliver(node, target, gid)
    envelope = parse_envelope(first.envelope)
    found = node.feeds.keys_for_topic(envelope.topic)
    assert found is not None
    changes = decode_changes(open_envelope(envelope, found[1]).payload)
    with node.store.write():
        node.store.run("DELETE FROM bundles WHERE id = ?", (first.id,))
        node.feeds.seal_local(gid, changes)
    world.seen["signed twice"] += 1


def settle(nodes: list[Node], gid: str) -> None:
    """Everyone meets everyone until nothing moves; admins rotate keys when due."""
    for _ in range(8):
        moved = 0
        for source in nodes:
            for target in nodes:
                if source is not target:
                    moved += sum(v.value == "applied" for v in deliver(source, target, gid))
        # What `hearth sync` and `serve` do for the group's keys.
        rotated = sum(keep_keys(node, gid) for node in nodes)
        if not moved and not rotated:
            return
    raise AssertionError("the group never settled")


def state(node: Node, gid: str) -> tuple[object, ...]:
    view = node.view(gid)
    return (
        sorted((m.name, m.status, m.role.value) for m in view.members(include_gone=True)),
        sorted(r.name for r in view.resources()),
        sorted(node.ledger(gid).doc.heads()),
        node.feeds.current_keys(gid).epoch_id,
    )


def run_seed(seed: int, founded: Path, tmp: Path) -> Counter[str]:
    """Run one seed; return what happened in it (so the test knows it exercised something)."""
    root = tmp / str(seed)
    for name in FOUNDERS:
        shutil.copytree(founded / name, root / "founders" / name)
    rng = random.Random(seed)
    clock = FakeClock(now=1_800_010_000_000, step=1000)  # after the founding
    world = World(seed, root, [], "", rng, clock, random.Random(f"cheater {seed}"))
    world.nodes = [world.open(root / "founders" / name) for name in FOUNDERS]
    try:
        gid = world.gid = world.nodes[0].current_group().id
        crook = world.side.choice(world.nodes)
        other = next(g.id for g in crook.groups() if g.id != gid)
        world.cheater = Cheater(crook, gid, other, world.side, root / "cheater", clock)
        world.trace.append(f"{crook.identity.name} cheats")
        world.cheater.copy(world.nodes, deliver)  # its home as founded, to write from later
        for _ in range(STEPS):
            step(world)
            if world.side.random() < CHEATS:
                world.cheater.act(world.honest(), deliver, world.trace)
        settle(world.nodes, gid)
        try:
            check(world)
        except AssertionError as failed:
            raise AssertionError(f"{failed}; trace: {world.trace}") from None
        inside = members_inside(world)
        seen = world.seen
        for status in (m.status for m in inside[0].view(gid).members(include_gone=True)):
            seen[status] += 1
        seen["epochs"] = len(inside[0].feeds.epochs(gid))
        seen["settled by seniority"] = sum(
            alert.kind == "counter-removal" for n in inside for alert in admin_alerts(n, gid)
        )
        seen["taken back out"] = sum(
            len(n.store.query("SELECT 1 FROM rejections WHERE source = 'removal'"))
            for n in world.nodes
        )
        return seen + world.cheater.tried
    finally:
        if world.cheater is not None:
            world.cheater.close()
        for node in world.nodes:
            node.close()
        shutil.rmtree(root, ignore_errors=True)


def members_inside(world: World) -> list[Node]:
    """The nodes still in the group: listed and not out on a founder's node that is still
    in (a newcomer let in by an invite that did not count never hears it is not in; a
    removed member's node may never hear of its removal, written again after a late flip
    under the new key only)."""
    gid = world.gid
    out = set().union(*(departed_devices(n.view(gid)) for n in world.nodes))
    out |= set().union(*(n.feeds.equivocations(gid) for n in world.nodes))
    founders = [n for n in world.nodes[: len(FOUNDERS)] if n in world.honest()]
    judge = next((n for n in founders if n.identity.device_key.public not in out), None)
    if judge is None:
        # Each founder is out on some node's view, as when two admins removed each other
        # and the members each removed before kept a view the others outgrew. Then the
        # judge is the first node that lists itself and is listed by all it lists.
        caught = set().union(*(n.feeds.equivocations(gid) for n in world.nodes))
        for node in world.nodes:
            mine = node.identity.device_key.public
            listed = active_devices(node, gid) - caught
            peers = [n for n in world.nodes if n.identity.device_key.public in listed]
            if mine in listed and all(mine in active_devices(n, gid) for n in peers):
                return peers
    assert judge is not None, f"HEARTH_SEED={world.seed}: no founder is left"
    listed = active_devices(judge, gid)
    return [n for n in world.nodes if n.identity.device_key.public in listed - out]


def active_devices(node: Node, gid: str) -> set[bytes]:
    """The devices a node's view lists as writing for the group."""
    return {
        c.key for c in membership_rules.cards(node.view(gid).tables["members"]) if c.cutoff is None
    }


def check(world: World) -> None:
    """What must hold once everyone has met."""
    gid, seed = world.gid, world.seed
    inside = [n for n in members_inside(world) if n in world.honest()]
    first = state(inside[0], gid)
    for node in inside[1:]:
        assert state(node, gid) == first, f"HEARTH_SEED={seed}: {node.identity.name} differs"
    applied = {b.id for b in inside[0].feeds.all(gid) if b.state == "applied"}
    for node in inside[1:]:
        mine = {b.id for b in node.feeds.all(gid) if b.state == "applied"}
        assert mine == applied, f"HEARTH_SEED={seed}: {node.identity.name} counts other bundles"
    for node in world.honest():  # nothing past a cutoff anywhere, as far as each node knows
        table = node.view(gid).tables["members"]
        for card in membership_rules.cards(table):
            if card.cutoff is None:
                continue
            late = [
                b
                for b in node.feeds.all(gid)
                if b.author == card.key and b.seq > card.cutoff and b.state == "applied"
            ]
            assert not late, f"HEARTH_SEED={seed}: {node.identity.name} counts a removed device"
        # R7: of two admins who removed each other, only the senior's removal stands.
        for member_id, raw in table.items():
            removal = raw.get("removed")
            remover = removal.get("created_by") if isinstance(removal, dict) else None
            if isinstance(remover, str) and remover != member_id:
                back = table.get(remover, {}).get("removed")
                assert not (isinstance(back, dict) and back.get("created_by") == member_id), (
                    f"HEARTH_SEED={seed}: {node.identity.name} counts two admins removing "
                    "each other"
                )
    assert world.cheater is not None
    try:
        world.cheater.check(inside)
    except AssertionError as failed:
        raise AssertionError(f"HEARTH_SEED={seed}: {failed}") from None
    lost, orphaned = lost_writes(world, inside[0])
    assert not lost, f"HEARTH_SEED={seed}: honest writes lost: {lost}"
    world.seen["honest writes orphaned, not written again"] += len(orphaned)


def lost_writes(world: World, judge: Node) -> tuple[list[str], list[str]]:
    """What honest members wrote while in (up to their cutoff, or the seq before a
    second bundle for one seq) that the judge does not hold: lost outright, and lost as
    built on a change that did not count (R8 writes those again, but not yet after a
    second flip nor once they are folded into a snapshot: counted, not failed)."""
    gid = world.gid
    last: dict[bytes, float] = {}
    for card in membership_rules.cards(judge.view(gid).tables["members"]):
        last[card.key] = float("inf") if card.cutoff is None else card.cutoff
    for device, seq in judge.feeds.equivocations(gid).items():
        if device in last:  # a device never let in (its invite did not count) wrote nothing
            last[device] = min(last[device], seq)
    names = {r.name for r in judge.view(gid).resources()}
    missing = [
        (name, change)
        for name, device, seq, change in world.wrote
        if seq <= last.get(device, 0) and name not in names
    ]
    orphaned = [name for name, change in missing if is_orphaned(judge, gid, change)]
    return [name for name, _ in missing if name not in orphaned], orphaned


@pytest.mark.timeout(900)  # about a minute a chunk on two cores; more on a busy machine
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_membership_concurrency(chunk: int, founded: Path, tmp_path: Path) -> None:
    seeds = chunk_seeds(chunk)
    seen: Counter[str] = Counter()
    for seed in seeds:
        print(f"HEARTH_SEED={seed}")
        seen += run_seed(seed, founded, tmp_path)
    print(dict(seen))
    if len(seeds) < SEEDS // CHUNKS:
        return  # one seed replayed: it need not exercise everything
    # The runs must have exercised what they are for, not only edits.
    for happened in (
        "removed",
        "left",
        "added",
        "re-added",
        "signed twice",
        "taken back out",
        "settled by seniority",
        "equivocated",  # by the cheater (the rarer moves are counted, not required)
        "replayed into another group",
    ):
        assert seen[happened] > 0, happened
    assert seen["epochs"] > len(seeds)
