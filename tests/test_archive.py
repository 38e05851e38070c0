"""Old, finished entries move to archive documents; nothing members see changes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from hearth.ledger import CommitmentStatus, Kind, Ledger, LedgerDoc, Role, find_conflicts, history
from hearth.ledger.archive import ARCHIVE_AFTER_MS, archivable, period_of
from hearth.ledger.view import LedgerView
from hearth.node import node as node_module
from hearth.node.identity import create_identity
from hearth.node.node import open_node
from hearth.testing import FakeClock, MemoryArchives, seeded_ids

ADA, BEN, CLEO = "a" * 32, "b" * 32, "c" * 32
DAY = 86_400_000


def busy_ledger(clock: FakeClock) -> tuple[Ledger, MemoryArchives]:
    archives = MemoryArchives(b"g", b"\x01" * 16)
    ledger = Ledger.create(
        seed=b"g",
        name="Allotment",
        actor=b"\x01" * 16,
        creator=ADA,
        creator_name="Ada",
        creator_key="k",
        devices={},
        clock=clock,
        new_id=seeded_ids(1),
    )
    ledger.archives = archives
    ledger.add_member(member_id=BEN, name="Ben", key="kb", role=Role.MEMBER, devices={})
    ledger.add_member(member_id=CLEO, name="Cleo", key="kc", role=Role.MEMBER, devices={})
    drill = ledger.add_resource("Drill", kind=Kind.TOOL)
    compost = ledger.add_resource("Compost", quantity=Decimal(20), unit="bags")
    for _ in range(3):
        ledger.lend(drill.id, to=BEN)
        ledger.return_(drill.id)
        ledger.consume(compost.id, Decimal(2))
    ledger.lend(drill.id, to=BEN)  # still out when archiving happens
    done = ledger.add_commitment(  # Ada records it for Cleo and Ben, who agreed it
        "compost", giver=CLEO, receiver=BEN, resource=compost.id, quantity=Decimal(1)
    )
    ledger.change_commitment(done.id, CommitmentStatus.ACCEPTED)
    ledger.change_commitment(done.id, CommitmentStatus.FULFILLED)
    ledger.add_commitment("still open", giver=BEN, receiver=ADA)
    need = ledger.add_need("twine")
    ledger.close_need(need.id)
    ledger.add_need("still needed")
    return ledger, archives


def seen(view: LedgerView) -> tuple[object, ...]:
    return (
        view.resources(include_removed=True),
        view.commitments(),
        view.needs(),
        find_conflicts(view),
        history(view),
        view.tables,
    )


def test_nothing_is_archivable_while_recent() -> None:
    clock = FakeClock(step=60_000)
    ledger, _ = busy_ledger(clock)
    assert archivable(ledger.view, clock.now_ms()) == {}
    assert ledger.archive_old(b"g") == 0


def test_archiving_shrinks_the_live_document_and_changes_nothing_visible() -> None:
    clock = FakeClock(step=60_000)
    ledger, archives = busy_ledger(clock)
    before = seen(ledger.view)
    live_events = len(ledger.doc.read_table("events"))
    clock.advance(ARCHIVE_AFTER_MS + DAY)
    moved = ledger.archive_old(b"g")
    assert moved == live_events + 2  # every event, the fulfilled commitment, the closed need
    assert seen(ledger.view) == before
    assert ledger.doc.read_table("events") == {}
    assert len(ledger.doc.read_table("commitments")) == 1  # the open one stays
    assert len(ledger.doc.read_table("needs")) == 1
    [period] = archives.docs
    assert period == period_of(clock.now - ARCHIVE_AFTER_MS - DAY)
    # A view read afresh from the live and archive documents is the same view.
    assert LedgerView.build([ledger.doc, *archives.all()]).tables == ledger.view.tables
    assert ledger.archive_old(b"g") == 0


def test_two_devices_archiving_at_once_converge() -> None:
    clock = FakeClock(step=60_000)
    a, _ = busy_ledger(clock)
    archives_b = MemoryArchives(b"g", b"\x02" * 16)
    b = Ledger(
        LedgerDoc.load(a.doc.save(), b"\x02" * 16),
        author=BEN,
        clock=clock,
        new_id=seeded_ids(2),
        archives=archives_b,
    )
    before = seen(a.view)
    clock.advance(ARCHIVE_AFTER_MS + DAY)
    a.archive_old(b"g")
    b.archive_old(b"g")
    drill = a.view.find("resources", "drill")
    b.return_(drill)  # a new event after the archiving, on one side only
    for source, target in ((a, b), (b, a)):
        for name, doc in [("live", source.doc), *source.archives.docs.items()]:  # type: ignore[union-attr]
            target.apply_remote_to(target.document(name), doc.changes_since([]), None)
    assert seen(a.view) == seen(b.view)
    assert sorted(a.doc.heads()) == sorted(b.doc.heads())
    assert a.view.resource(drill).lent_to == ()
    assert seen(a.view)[1:3] == before[1:3]


def test_the_node_archives_by_itself_and_reloads_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "_ARCHIVE_CHECK_EVERY", 5)
    clock = FakeClock(step=60_000)
    create_identity(tmp_path / "h", name="Ada")
    with open_node(tmp_path / "h", clock=clock) as node:
        node.create_group("Allotment")
        with node.change() as ledger:
            r = ledger.add_resource("Seed potatoes", quantity=Decimal(50), unit="kg")
        for _ in range(6):
            with node.change() as ledger:
                ledger.consume(r.id, Decimal(1))
        before = seen(node.view())
        clock.advance(ARCHIVE_AFTER_MS + DAY)
        for _ in range(6):
            with node.change() as ledger:
                ledger.produce(r.id, Decimal(1))
        ledger = node.ledger()
        old_events = [e for e in ledger.view.events() if e.at < clock.now - ARCHIVE_AFTER_MS]
        assert old_events
        assert not any(ledger.doc.read_entry("events", e.id) for e in old_events)
        after = seen(node.view())
        assert after[0][0].quantity == 50  # type: ignore[index]
        assert before[1:3] == after[1:3]
    with open_node(tmp_path / "h", clock=clock) as node:
        assert seen(node.view()) == after
        ledger = node.ledger()
        fresh = LedgerView.build([ledger.doc, *ledger.archives.all()])  # type: ignore[union-attr]
        assert fresh.tables == node.view().tables
