"""Randomized, deterministic runs of peered relays (see tests/peering_simulation.py).

Figure (SECURITY.md §8): 200 seeds per CI run; after every run every honest relay holds the
identical set of bundles, no bundle crossed any link twice in the same direction or went
back to the relay it came from, no bundle the dishonest relay forged is stored anywhere
else, no lie it told was believed (a dial answered in another relay's name, a cursor no
store holds, a second mirror), and no relay notes an honest peer's cursor beyond what that
peer holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.peering_simulation import PeeringSimulation, make_pool

SEEDS = int(os.environ.get("HEARTH_PEERING_SEEDS", "200"))
POOL = make_pool()


def seeds() -> list[int]:
    if "HEARTH_SEED" in os.environ:
        return [int(os.environ["HEARTH_SEED"])]
    return list(range(SEEDS))


def check(sim: PeeringSimulation, seed: int) -> list[str]:
    """What went wrong in one settled run, as lines naming the seed."""
    problems = []
    honest = [i for i in range(len(sim.relays)) if i != sim.dishonest]
    sets = {i: sim.bundles(i) for i in range(len(sim.relays))}
    expected = sets[honest[0]]
    for i in honest:
        if sets[i] != expected:
            problems.append(f"r{i} holds {len(sets[i])} bundles, r{honest[0]} {len(expected)}")
        if sets[i] & sim.forged:
            problems.append(f"r{i} stored a forged bundle")
    if sim.dishonest is not None and sets[sim.dishonest] - sim.forged != expected:
        problems.append("the dishonest relay lacks honest bundles")
    problems += sim.echoes[:1] + sim.believed[:1]
    # What a relay notes of an honest peer's cursor is never beyond what that peer holds.
    for i in honest:
        for j in honest:
            noted = sim.stores[i].peer_cursor(sim.identities[j].public)
            if noted > sim.stores[j].newest_overall():
                problems.append(f"r{i} notes r{j}'s cursor at {noted}, beyond what r{j} holds")
    twice = [key for key, count in sim.received.items() if count > 1]
    if twice:
        problems.append(
            f"{len(twice)} bundles crossed a link twice, e.g. r{twice[0][0]}->r{twice[0][1]}"
        )
    return [f"HEARTH_SEED={seed}: {p}; trace: {sim.trace[-12:]}" for p in problems]


CHUNKS = 2


@pytest.mark.timeout(600)
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_peered_relays_converge_without_loops_or_duplicate_forwarding(
    chunk: int, tmp_path: Path
) -> None:
    failures: list[str] = []
    total_bundles = lies = 0
    for seed in seeds()[chunk::CHUNKS]:
        sim = PeeringSimulation(tmp_path, seed, POOL)
        try:
            for _ in range(sim.rng.randint(40, 120)):
                sim.step()
            sim.settle()
            failures += check(sim, seed)
            total_bundles += len(sim.bundles(0))
            lies += sim.lies
        finally:
            sim.close()
    assert failures == []
    assert total_bundles > 0  # the runs did carry bundles
    assert lies > 0 or len(seeds()) < 20  # and the dishonest relay did lie


def test_the_same_seed_gives_the_same_trace(tmp_path: Path) -> None:
    traces = []
    for _ in range(2):
        sim = PeeringSimulation(tmp_path, 7, POOL)
        for _ in range(80):
            sim.step()
        sim.settle()
        traces.append((sim.trace, sorted(sim.bundles(0))))
        sim.close()
    assert traces[0] == traces[1]
