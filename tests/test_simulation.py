"""Randomized, deterministic runs of the simulator (see tests/simulation.py)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from hearth.net import sync_client
from hearth.protocol.bundle import parse_envelope
from tests.simulation import DAY_MS, Simulation

# Per CI run (the suite must stay under ten minutes on two cores); more with HEARTH_SIM_SEEDS.
SEEDS = int(os.environ.get("HEARTH_SIM_SEEDS", "50"))


def seeds() -> list[int]:
    if "HEARTH_SEED" in os.environ:
        return [int(os.environ["HEARTH_SEED"])]
    return list(range(SEEDS))


def run(root: Path, seed: int, steps: int) -> Simulation:
    rng = random.Random(seed)  # how many nodes and steps also follow from the seed
    sim = Simulation(root, seed, nodes=rng.randint(2, 8))
    for _ in range(rng.randint(steps // 2, steps)):
        sim.step()
    return sim


CHUNKS = 5  # the seeds, split so that test workers share them evenly


@pytest.mark.timeout(1200)  # a minute a chunk on two cores; more on a busy machine
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_convergence_under_drops_reordering_duplication_and_partitions(
    chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_client, "SNAPSHOT_EVERY", 8)  # snapshots come and go too
    failures = []
    for seed in seeds()[chunk::CHUNKS]:
        sim = run(tmp_path / str(seed), seed, steps=60)
        try:
            sim.sync_round()
            sim.sync_round()
            prints = [sim.fingerprint(i) for i in range(len(sim.nodes))]
            if any(p != prints[0] for p in prints):
                failures.append(f"HEARTH_SEED={seed} diverged; trace: {sim.trace[-15:]}")
        finally:
            sim.close()
    assert failures == [], failures[:3]


def summary(sim: Simulation) -> tuple[object, ...]:
    view = sim.nodes[0].view(sim.group)
    return (
        sorted((r.name, r.quantity, len(r.lent_to)) for r in view.resources()),
        sorted(n.what for n in view.needs()),
    )


def relay_ids(sim: Simulation) -> list[bytes]:
    """Every bundle id the relay stored, in arrival order."""
    topic = sim.nodes[0].feeds.current_keys(sim.group).topic
    return [parse_envelope(data).id for _, data in sim.relay.store.after(topic, 0, 100_000)]


def test_the_same_seed_gives_the_same_trace(tmp_path: Path) -> None:
    first = run(tmp_path / "a", 1234, steps=80)
    second = run(tmp_path / "b", 1234, steps=80)
    try:
        assert first.trace == second.trace
        first.sync_round()
        second.sync_round()
        assert summary(first) == summary(second)
        # Keys, salts and actor ids come from the seed too: the runs are the same bytes.
        assert relay_ids(first) == relay_ids(second)
        for a, b in zip(first.nodes, second.nodes, strict=True):
            assert a.ledger(first.group).doc.heads() == b.ledger(second.group).doc.heads()
    finally:
        first.close()
        second.close()


def test_a_node_offline_for_a_week_catches_up_within_three_rounds(tmp_path: Path) -> None:
    sim = Simulation(tmp_path, seed=7, nodes=4)
    try:
        sim.sync_round()
        sim.go_offline(3, 7 * DAY_MS)
        for _ in range(200):
            sim.clock.advance(DAY_MS * 7 // 200)
            sim.edit(sim.rng.randrange(3))
            sim.edit(3)  # the offline member keeps working too
        rounds = 0
        while rounds < 3:
            sim.sync_round()
            rounds += 1
            if all(sim.fingerprint(i) == sim.fingerprint(0) for i in range(4)):
                break
        assert all(sim.fingerprint(i) == sim.fingerprint(0) for i in range(4))
        assert rounds <= 2  # everything in one round, confirmed by the next at most
    finally:
        sim.close()


@pytest.mark.parametrize("seed", [3, 11])
def test_restarting_nodes_at_random_points_changes_nothing(tmp_path: Path, seed: int) -> None:
    sim = run(tmp_path, seed, steps=40)
    try:
        sim.sync_round()
        before = [sim.fingerprint(i) for i in range(len(sim.nodes))]
        for i in range(len(sim.nodes)):
            sim.restart(i)
        assert [sim.fingerprint(i) for i in range(len(sim.nodes))] == before
    finally:
        sim.close()
