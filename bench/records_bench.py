"""What checking that a change leaves others' records as they wrote them costs (R2a's
records, docs/security.md §6).

Catching up from a snapshot checks every covered change. This times
:func:`hearth.ledger.records.check_records` over the changes of resources added by one
member (new entries only: judged from run lengths) and of edits another member makes to
them (read from the document at what each builds on), interleaved with the object-column
read every covered change already gets, several rounds, the median of each; each also
in a group whose entry ids carry their writer's tag (``tagged``: the ids of new entries
read too). ``opened``: what a snapshot's catch-up does with each covered change of the
added resources — read it once when its bundle is opened
(:func:`hearth.ledger.automerge_doc.read_change_names`), then check it from what was read
(older trees, whose opening read less, are timed as they are). Run by hand
(bench/run.py records); arguments: entries, rounds.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from decimal import Decimal

from hearth.ledger import Ledger
from hearth.ledger.attribution import ATTRIBUTION_KEYS
from hearth.ledger.automerge_doc import Edit, change_body, read_change_names
from hearth.ledger.change_ops import objects_written
from hearth.ledger.records import check_records
from hearth.testing import FakeClock, seeded_ids

ADA, BEN = "a" * 32, "b" * 32


def ledger_of(entries: int) -> tuple[Ledger, list[Edit], list[Edit]]:
    """A ledger Ada filled with ``entries`` resources, a quarter of them then edited by
    Ben; Ada's edits and Ben's, as made."""
    ledger = Ledger.create(
        seed=b"bench",
        name="Bench",
        actor=b"\x01" * 16,
        creator=ADA,
        creator_name="Ada",
        creator_key="k",
        devices={},
        clock=FakeClock(step=1000),
        new_id=seeded_ids(1),
    )
    ids = [ledger.add_resource(f"Resource {i:05d}", quantity=Decimal(1)).id for i in range(entries)]
    adds = [e for _, e in ledger.take_outbox()][1:]
    ledger.author = BEN
    for i in range(entries // 4):
        ledger.edit_resource(ids[i], location=f"Shed {i}")
    return ledger, adds, [e for _, e in ledger.take_outbox()]


def main() -> int:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 4_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    ledger, adds, edits = ledger_of(entries)
    doc = ledger.doc
    timings: dict[str, list[float]] = {
        name: []
        for name in (
            "objects",
            "adds",
            "edits",
            "adds_tagged",
            "edits_tagged",
            "opened",
            "opened_tagged",
        )
    }
    for _ in range(rounds):
        t0 = time.perf_counter()
        for edit in adds:
            for change in edit.changes:
                objects_written(change_body(change))
        timings["objects"].append(time.perf_counter() - t0)
        for tagged, suffix in ((False, ""), (True, "_tagged")):
            t0 = time.perf_counter()
            for edit in adds:
                check_records(doc, edit.changes, ADA, edit.touched, {}, set(), tagged=tagged)
            timings["adds" + suffix].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for edit in edits:
                check_records(doc, edit.changes, BEN, edit.touched, {}, set(), tagged=tagged)
            timings["edits" + suffix].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for edit in adds:
                read = [read_change_names(change, ATTRIBUTION_KEYS) for change in edit.changes]
                new = [r[3] for r in read]
                more = {"new_keys": [r[4] for r in read]} if len(read[0]) > 4 else {}
                check_records(
                    doc, edit.changes, ADA, edit.touched, {}, set(), new, tagged=tagged, **more
                )
            timings["opened" + suffix].append(time.perf_counter() - t0)
    medians = {k: statistics.median(v) for k, v in timings.items()}
    print(
        json.dumps(
            {
                "entries": entries,
                "added": len(adds),
                "edited": len(edits),
                "rounds": rounds,
                "objects_written_s": round(medians["objects"], 3),
                "records_of_adds_s": round(medians["adds"], 3),
                "records_of_edits_s": round(medians["edits"], 3),
                "records_of_adds_tagged_s": round(medians["adds_tagged"], 3),
                "records_of_edits_tagged_s": round(medians["edits_tagged"], 3),
                "opened_adds_s": round(medians["opened"], 3),
                "opened_adds_tagged_s": round(medians["opened_tagged"], 3),
                "per_edit_ms": round(medians["edits"] / max(len(edits), 1) * 1000, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
