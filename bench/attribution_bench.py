"""What checking that every change names its own author costs (R2a, docs/security.md §6).

Catching up a 10,000-entry ledger from a snapshot checks every covered change; this times
that check over the changes of 10,000 resources added by one member, interleaved with the
object-column read every covered change already gets (what a snapshot's check did before
R2a), several rounds, the median of each. Run by hand (bench/run.py attribution).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from decimal import Decimal

from hearth.ledger import Ledger
from hearth.ledger.attribution import check_own_names
from hearth.ledger.automerge_doc import change_body
from hearth.ledger.change_ops import objects_written
from hearth.testing import FakeClock, seeded_ids

MEMBER = "a" * 32


def changes(entries: int) -> list[bytes]:
    """The changes of a ledger one member filled with ``entries`` resources."""
    ledger = Ledger.create(
        seed=b"bench",
        name="Bench",
        actor=b"\x01" * 16,
        creator=MEMBER,
        creator_name="Ada",
        creator_key="k",
        devices={},
        clock=FakeClock(step=1000),
        new_id=seeded_ids(1),
    )
    for i in range(entries):
        ledger.add_resource(f"Resource {i:05d}", quantity=Decimal(1))
    return ledger.doc.changes_since([])


def main() -> int:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    found = changes(entries)
    names: list[float] = []
    objects: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        check_own_names(found, MEMBER)
        names.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for change in found:
            objects_written(change_body(change))
        objects.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "entries": entries,
                "changes": len(found),
                "rounds": rounds,
                "check_own_names_s": round(statistics.median(names), 3),
                "objects_written_s": round(statistics.median(objects), 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
