"""The membership-concurrency simulation: seeded runs of five members' nodes doing, at
random and while partitioned, what members do — edit, remove each other (also mutually
and concurrently), promote, leave, rotate keys — with bundles delivered in random partial
batches. Once everyone has met, every node still in the group must hold the same
membership, the same valid bundles, the same document and the same key, and no node
anywhere may count a bundle past a removed device's cutoff."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from hearth import members, membership
from hearth.errors import HearthError
from hearth.ledger import Kind
from hearth.node import Node, open_node
from hearth.rotation import departed_devices, rotate, rotation_due
from hearth.testing import FakeClock
from tests.test_membership import deliver, make_group

NAMES = ["Ada", "Ben", "Cat", "Dan", "Eve"]
SEEDS_PER_CHUNK = 50
CHUNKS = 6  # 300 seeds per run, spread over the test workers
STEPS = 14


@pytest.fixture(scope="module")
def founded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One group of five, everyone in sync, Ben an admin too: copied for every seed."""
    root = tmp_path_factory.mktemp("founded")
    nodes = make_group(root, NAMES)
    gid = nodes[0].current_group().id
    members.promote(nodes[0], gid, "Ben")
    for source in nodes:
        for target in nodes:
            if source is not target:
                deliver(source, target, gid)
    for node in nodes:
        node.close()
    return root


def active_admin(node: Node, gid: str) -> bool:
    me = node.view(gid).member(node.identity.member_id)
    return me.status == "active" and me.role.value == "admin"


def step(rng: random.Random, nodes: list[Node], gid: str, counter: list[int]) -> None:
    """One random thing a member does (or one partial meeting of two nodes)."""
    node = rng.choice(nodes)
    others = [m for m in node.view(gid).members() if m.id != node.identity.member_id]
    kind = rng.choice(
        ["edit", "edit", "deliver", "deliver", "deliver", "remove", "promote", "leave"]
    )
    try:
        if kind == "edit":
            counter[0] += 1
            with node.change(gid) as ledger:
                ledger.add_resource(f"thing {counter[0]} by {node.identity.name}", kind=Kind.TOOL)
        elif kind == "deliver":
            deliver(node, rng.choice(nodes), gid)
        elif kind == "remove" and others and active_admin(node, gid):
            members.remove_member(node, gid, rng.choice(others).id)
        elif kind == "promote" and others and active_admin(node, gid):
            members.promote(node, gid, rng.choice(others).id)
        elif kind == "leave" and rng.random() < 0.3:
            members.leave(node, gid)

    except HearthError:
        pass  # refused for a reason a member would be told (not an admin, already out…)


def settle(nodes: list[Node], gid: str) -> None:
    """Everyone meets everyone until nothing moves; admins rotate keys when due."""
    for _ in range(8):
        moved = 0
        for source in nodes:
            for target in nodes:
                if source is not target:
                    moved += sum(v.value == "applied" for v in deliver(source, target, gid))
        rotated = 0
        for node in nodes:
            if rotation_due(node, gid):
                rotate(node, gid)
                rotated += 1
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
    rng = random.Random(seed)
    homes = []
    for name in NAMES:
        home = tmp / f"{seed}-{name}"
        shutil.copytree(founded / name, home)
        homes.append(home)
    clock = FakeClock(step=1000)
    nodes = [open_node(home, clock=clock) for home in homes]
    try:
        gid = nodes[0].current_group().id
        counter = [0]
        for _ in range(STEPS):
            step(rng, nodes, gid, counter)
        settle(nodes, gid)
        # Who is out, as anyone knows it: a removed member's node may never hear of it (a
        # removal written again after a late flip goes out under the new key only).
        out = set().union(*(departed_devices(n.view(gid)) for n in nodes))
        out |= set().union(*(n.feeds.equivocations(gid) for n in nodes))
        inside = [n for n in nodes if n.identity.device_key.public not in out]
        assert inside, f"seed {seed}: nobody is left"
        first = state(inside[0], gid)
        for node in inside[1:]:
            assert state(node, gid) == first, f"seed {seed}: {node.identity.name} differs"
        applied = {b.id for b in inside[0].feeds.all(gid) if b.state == "applied"}
        for node in inside[1:]:
            mine = {b.id for b in node.feeds.all(gid) if b.state == "applied"}
            assert mine == applied, f"seed {seed}: {node.identity.name} counts other bundles"
        for node in nodes:  # nothing past a cutoff anywhere, as far as each node knows
            for card in membership.cards(node.view(gid).tables["members"]):
                if card.cutoff is None:
                    continue
                late = [
                    b
                    for b in node.feeds.all(gid)
                    if b.author == card.key and b.seq > card.cutoff and b.state == "applied"
                ]
                assert not late, f"seed {seed}: {node.identity.name} counts a removed device"
        seen: Counter[str] = Counter()
        for status in (m.status for m in inside[0].view(gid).members(include_gone=True)):
            seen[status] += 1
        seen["epochs"] = len(inside[0].feeds.epochs(gid))
        seen["taken back out"] = sum(
            len(n.store.query("SELECT 1 FROM rejections WHERE source = 'removal'")) for n in nodes
        )
        return seen
    finally:
        for node in nodes:
            node.close()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_membership_concurrency(chunk: int, founded: Path, tmp_path: Path) -> None:
    seen: Counter[str] = Counter()
    for seed in range(chunk * SEEDS_PER_CHUNK, (chunk + 1) * SEEDS_PER_CHUNK):
        seen += run_seed(seed, founded, tmp_path)
    print(dict(seen))
    # The runs must have exercised what they are for, not only edits.
    assert seen["removed"] > 0
    assert seen["left"] > 0
    assert seen["epochs"] > SEEDS_PER_CHUNK
    assert seen["taken back out"] > 0
