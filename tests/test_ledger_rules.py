"""The ledger's rules: lifecycle, derived quantities, custody, conflicts and bad input."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hearth.errors import LedgerError, NotAuthorized, UsageError
from hearth.ledger import (
    Action,
    CommitmentStatus,
    Kind,
    Ledger,
    LedgerDoc,
    Role,
    find_conflicts,
    history,
)
from hearth.ledger.model import COMMITMENT_TRANSITIONS
from hearth.ledger.present import commitment_amount, commitment_rows
from hearth.testing import FakeClock, seeded_ids

ADA, BEN, CLEO = "a" * 32, "b" * 32, "c" * 32


def make_ledger(seed: int = 1) -> Ledger:
    ledger = Ledger.create(
        seed=b"group",
        name="Elm Street",
        actor=bytes([seed]) * 16,
        creator=ADA,
        creator_name="Ada",
        creator_key="ka",
        devices={},
        clock=FakeClock(step=1000),
        new_id=seeded_ids(seed),
    )
    ledger.add_member(member_id=BEN, name="Ben", key="kb", role=Role.MEMBER, devices={})
    ledger.add_member(member_id=CLEO, name="Cleo", key="kc", role=Role.MEMBER, devices={})
    return ledger


def replica(of: Ledger, *, author: str, seed: int) -> Ledger:
    """Another device's copy of the same ledger."""
    doc = LedgerDoc.load(of.doc.save(), bytes([seed]) * 16)
    return Ledger(doc, author=author, clock=FakeClock(step=1000), new_id=seeded_ids(seed))


def sync(*ledgers: Ledger) -> None:
    for source in ledgers:
        for target in ledgers:
            if target is not source:
                target.apply_remote(source.doc.changes_since([]), None)


def test_creator_is_first_admin() -> None:
    ledger = make_ledger()
    assert ledger.name == "Elm Street"
    ada = ledger.view.member(ADA)
    assert ada.role is Role.ADMIN
    assert ledger.view.member(BEN).role is Role.MEMBER


def test_quantity_is_the_sum_of_events() -> None:
    ledger = make_ledger()
    r = ledger.add_resource("Potatoes", kind=Kind.FOOD, quantity=Decimal(10), unit="kg")
    ledger.produce(r.id, Decimal("2.5"))
    ledger.consume(r.id, Decimal(3))
    ledger.give(r.id, to=BEN, quantity=Decimal("0.5"))
    assert ledger.view.resource(r.id).quantity == Decimal(9)
    actions = [e.action for e in ledger.view.events_of(r.id)]
    assert actions == [Action.PRODUCE, Action.PRODUCE, Action.CONSUME, Action.GIVE]


def test_editing_quantity_records_a_correction() -> None:
    ledger = make_ledger()
    r = ledger.add_resource("Jars", quantity=Decimal(10))
    ledger.edit_resource(r.id, quantity=Decimal(7))
    assert ledger.view.resource(r.id).quantity == 7
    assert ledger.view.events_of(r.id)[-1].action is Action.LOWER
    with pytest.raises(LedgerError, match="Nothing to change"):
        ledger.edit_resource(r.id, quantity=Decimal(7))


def test_cannot_use_more_than_there_is() -> None:
    ledger = make_ledger()
    r = ledger.add_resource("Jars", quantity=Decimal(2))
    with pytest.raises(LedgerError, match="only 2 recorded"):
        ledger.consume(r.id, Decimal(3))
    with pytest.raises(LedgerError):
        ledger.give(r.id, to=BEN, quantity=Decimal(5))
    assert ledger.view.resource(r.id).quantity == 2


def test_concurrent_events_add_up() -> None:
    a = make_ledger()
    r = a.add_resource("Compost", quantity=Decimal(10), unit="bags")
    b = replica(a, author=BEN, seed=2)
    a.consume(r.id, Decimal(3))
    b.consume(r.id, Decimal(4))
    sync(a, b)
    assert a.view.resource(r.id).quantity == b.view.resource(r.id).quantity == 3


def test_custody_follows_lends_and_returns() -> None:
    ledger = make_ledger()
    r = ledger.add_resource("Ladder", kind=Kind.TOOL)
    assert ledger.view.resource(r.id).custodian == ADA
    lent = ledger.lend(r.id, to="Ben", until=1_900_000_000_000)
    assert lent.custodian == BEN
    assert lent.lent_until == 1_900_000_000_000
    assert lent.owner == ""  # custody is not ownership: the group still owns it
    with pytest.raises(LedgerError, match="already lent to Ben"):
        ledger.lend(r.id, to=CLEO)
    back = ledger.return_(r.id)
    assert back.custodian == ADA
    assert back.lent_to == ()
    with pytest.raises(LedgerError, match="not lent out"):
        ledger.return_(r.id)


def test_lend_until_in_the_past_is_refused() -> None:
    ledger = make_ledger()
    r = ledger.add_resource("Ladder")
    with pytest.raises(LedgerError, match="past"):
        ledger.lend(r.id, to=BEN, until=1)


def test_keeper_is_custodian_when_not_lent() -> None:
    ledger = make_ledger()
    r = ledger.add_resource("Mower")
    assert ledger.edit_resource(r.id, keeper="Cleo").custodian == CLEO


def test_double_lend_while_apart_is_a_conflict_until_returned() -> None:
    a = make_ledger()
    r = a.add_resource("Gazebo", kind=Kind.SPACE)
    b = replica(a, author=BEN, seed=2)
    a.lend(r.id, to=CLEO)
    b.lend(r.id, to=BEN)
    sync(a, b)
    conflicts = find_conflicts(a.view)
    assert [c.kind for c in conflicts] == ["double-lend"]
    assert conflicts == find_conflicts(b.view)
    assert set(a.view.resource(r.id).lent_to) == {BEN, CLEO}
    from hearth.ledger.present import describe_resource, resource_rows

    shown = describe_resource(a.view, a.view.resource(r.id))
    holder = resource_rows(a.view, [a.view.resource(r.id)])[0][4]
    assert holder in ("Ben & Cleo (!)", "Cleo & Ben (!)")
    assert f"with:      {holder}" in shown  # as the list says it, not one of them
    a.return_(r.id, borrower="Ben")
    sync(a, b)
    assert find_conflicts(b.view) == []
    assert b.view.resource(r.id).custodian == CLEO


def test_one_field_edited_while_apart_is_a_clash_until_set_again() -> None:
    from hearth.ledger.history import history
    from hearth.ledger.present import describe_resource

    a = make_ledger()
    r = a.add_resource("Gazebo", kind=Kind.SPACE)
    b = replica(a, author=BEN, seed=2)
    a.edit_resource(r.id, location="Ada's garden")
    b.edit_resource(r.id, location="Church hall")
    a.edit_resource(r.id, note="folded")  # a field only one of them set: no clash
    sync(a, b)
    [clash] = find_conflicts(a.view)
    assert clash.kind == "field-clash"
    assert (
        "location was set at the same time to 'Ada's garden' by Ada and 'Church hall' by Ben"
        in (clash.summary)
        or "'Church hall' by Ben and 'Ada's garden' by Ada" in clash.summary
    )
    assert find_conflicts(b.view) == [clash]
    shown = a.view.resource(r.id).location
    assert f"it shows '{shown}'" in clash.summary
    assert "(!) location was set at the same time" in describe_resource(
        a.view, a.view.resource(r.id)
    )
    said = [h.what for h in history(a.view, resource=r.id)]
    assert any("location → 'Church hall'" in w and "Ada set it too" in w for w in said), said
    assert any("location → 'Ada's garden'" in w and "Ben set it too" in w for w in said), said
    # Sequential edits never clash; setting the field again, having seen both, settles it.
    b.edit_resource(r.id, location="Church hall")
    sync(a, b)
    assert find_conflicts(a.view) == find_conflicts(b.view) == []


def test_history_says_whose_return_it_was() -> None:
    from hearth.ledger.history import history

    a = make_ledger()
    r = a.add_resource("Gazebo", kind=Kind.SPACE)
    a.lend(r.id, to=BEN)
    a.return_(r.id)
    b = replica(a, author=BEN, seed=2)
    b.lend(r.id, to=BEN)
    b.return_(r.id)
    said = [h.what for h in history(b.view, resource=r.id)]
    assert sorted(said) == sorted(
        [
            "added Gazebo (1)",
            "lent Gazebo to Ben",
            "recorded the return of Gazebo from Ben",  # Ada, of Ben's borrowing
            "took Gazebo",
            "gave back Gazebo",  # Ben himself
        ]
    ), said


def test_history_tells_a_neighbour_groups_handoff_as_it_happened() -> None:
    from hearth.ledger.history import history

    a = make_ledger()
    a.add_handoff(
        "r1", "Apples from Riverside", neighbour="Riverside", member=BEN, giving=False, unit="kg"
    )
    a.change_commitment("r1", CommitmentStatus.FULFILLED)
    said = [h.what for h in history(a.view)]
    assert "recorded the handoff agreed with Riverside: Apples from Riverside" in said
    assert "said 'Apples from Riverside' arrived" in said
    assert not any("fulfilled" in w for w in said)


def test_over_commitment_is_a_conflict() -> None:
    ledger = make_ledger()
    r = ledger.add_resource("Seed potatoes", quantity=Decimal(5), unit="kg")
    ledger.add_commitment("potatoes", giver=ADA, receiver=BEN, resource=r.id, quantity=Decimal(3))
    assert find_conflicts(ledger.view) == []
    c = ledger.add_commitment(
        "more potatoes", giver=ADA, receiver=CLEO, resource=r.id, quantity=Decimal(3)
    )
    [conflict] = find_conflicts(ledger.view)
    assert conflict.kind == "over-committed"
    assert c.id in conflict.entries
    ledger.change_commitment(c.id, CommitmentStatus.CANCELLED)
    assert find_conflicts(ledger.view) == []


def test_overdrawn_after_concurrent_use_is_a_conflict() -> None:
    a = make_ledger()
    r = a.add_resource("Jam jars", quantity=Decimal(5))
    b = replica(a, author=BEN, seed=2)
    a.give(r.id, to=CLEO, quantity=Decimal(4))
    b.consume(r.id, Decimal(3))
    sync(a, b)
    assert a.view.resource(r.id).quantity == -2
    assert [c.kind for c in find_conflicts(a.view)] == ["overdrawn"]


@pytest.mark.parametrize(
    ("path", "end"),
    [
        (["accepted", "fulfilled"], "fulfilled"),
        (["declined"], "declined"),
        (["cancelled"], "cancelled"),
        (["accepted", "cancelled"], "cancelled"),
    ],
)
def test_commitment_lifecycle(path: list[str], end: str) -> None:
    ledger = make_ledger()
    c = ledger.add_commitment("help", giver=BEN, receiver=CLEO)
    assert c.status is CommitmentStatus.PROPOSED
    for step in path:
        c = ledger.change_commitment(c.id, CommitmentStatus(step))
    assert c.status.value == end
    assert [s.to_status.value for s in c.changes] == path


def test_every_impossible_transition_is_a_clear_error() -> None:
    for start, allowed in COMMITMENT_TRANSITIONS.items():
        for target in CommitmentStatus:
            if target in allowed:
                continue
            ledger = make_ledger()
            c = ledger.add_commitment("help", giver=BEN, receiver=CLEO)
            route = {
                CommitmentStatus.PROPOSED: [],
                CommitmentStatus.ACCEPTED: [CommitmentStatus.ACCEPTED],
                CommitmentStatus.FULFILLED: [CommitmentStatus.ACCEPTED, CommitmentStatus.FULFILLED],
                CommitmentStatus.DECLINED: [CommitmentStatus.DECLINED],
                CommitmentStatus.CANCELLED: [CommitmentStatus.CANCELLED],
            }[start]
            for step in route:
                ledger.change_commitment(c.id, step)
            with pytest.raises(LedgerError, match=f"is {start.value}, so it cannot be"):
                ledger.change_commitment(c.id, target)


def test_the_proposer_does_not_accept_her_own_promise_the_other_side_does() -> None:
    a = make_ledger()
    c = a.add_commitment("Compost for the beds", giver=ADA, receiver=BEN)
    for answer in (CommitmentStatus.ACCEPTED, CommitmentStatus.DECLINED):
        with pytest.raises(NotAuthorized, match="Ben accepts or declines it; you can cancel it"):
            a.change_commitment(c.id, answer)
    b = replica(a, author=BEN, seed=2)
    assert b.change_commitment(c.id, CommitmentStatus.ACCEPTED).status is CommitmentStatus.ACCEPTED


def test_fulfilling_a_commitment_with_a_resource_records_the_gift() -> None:
    ledger = make_ledger()
    r = ledger.add_resource("Compost", quantity=Decimal(10))
    c = ledger.add_commitment(
        "compost", giver=CLEO, receiver=BEN, resource=r.id, quantity=Decimal(4)
    )
    ledger.change_commitment(c.id, CommitmentStatus.ACCEPTED)  # Ada proposed it for them
    ledger.change_commitment(c.id, CommitmentStatus.FULFILLED)
    assert ledger.view.resource(r.id).quantity == 6
    gift = ledger.view.events_of(r.id)[-1]
    assert (gift.action, gift.to, gift.fulfils) == (Action.GIVE, BEN, c.id)


def test_concurrent_status_changes_are_a_conflict_and_settle_identically() -> None:
    a = make_ledger()
    c = a.add_commitment("sofa", giver=BEN, receiver=CLEO)
    b = replica(a, author=BEN, seed=2)
    a.change_commitment(c.id, CommitmentStatus.DECLINED)
    b.change_commitment(c.id, CommitmentStatus.ACCEPTED)
    sync(a, b)
    ca, cb = a.view.commitment(c.id), b.view.commitment(c.id)
    assert ca == cb
    assert [x.applied for x in ca.changes].count(False) == 1
    assert [k.kind for k in find_conflicts(a.view)] == ["status"]


def test_needs_open_and_close() -> None:
    ledger = make_ledger()
    n = ledger.add_need("Extension lead", quantity=Decimal(1), by=1_900_000_000_000)
    assert n.status.value == "open"
    assert ledger.close_need(n.id).status.value == "closed"
    with pytest.raises(LedgerError, match="already closed"):
        ledger.close_need(n.id)


def test_removed_resource_keeps_history_and_refuses_events() -> None:
    ledger = make_ledger()
    r = ledger.add_resource("Saw")
    ledger.remove_resource(r.id)
    assert ledger.view.resources() == []
    assert ledger.view.resources(include_removed=True)[0].removed
    with pytest.raises(LedgerError, match="removed"):
        ledger.lend(r.id, to=BEN)
    assert any("removed Saw" in h.what for h in history(ledger.view))


def test_every_entry_records_who_and_when() -> None:
    ledger = make_ledger()
    r = ledger.add_resource("Drill")
    ledger.lend(r.id, to=BEN)
    n = ledger.add_need("Help")
    c = ledger.add_commitment("x", giver=BEN, receiver=ADA)
    for raw in (
        ledger.view.tables["resources"][r.id],
        ledger.view.tables["needs"][n.id],
        ledger.view.tables["commitments"][c.id],
    ):
        assert raw["created_by"] == ADA
        assert isinstance(raw["created_at"], int)
    assert all(e.by == ADA and e.at > 0 for e in ledger.view.events())
    whats = [h.what for h in history(ledger.view)]
    assert "lent Drill to Ben" in whats
    ladder = ledger.add_resource("Ladder")
    ledger.edit_resource(ladder.id, keeper=BEN)
    ledger.lend(ladder.id, to=ADA)  # Ada takes Ben's ladder herself
    assert "took Ladder" in [h.what for h in history(ledger.view)]
    compost = ledger.add_resource("Compost", quantity=Decimal(10), unit="bags")
    c = ledger.add_commitment(
        "Mulch", giver=ADA, receiver=BEN, resource=compost.id, quantity=Decimal(4)
    )
    assert commitment_amount(ledger.view, c) == "4 bags"
    whats = [h.what for h in history(ledger.view)]
    assert "added Compost (10 bags)" in whats  # the stock it came with, in one line
    assert not any("of Compost" in w for w in whats)
    assert commitment_rows(ledger.view, [c], 0)[0][2] == "4 bags"


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "bad\x07name"])
def test_bad_names_are_refused(name: str) -> None:
    ledger = make_ledger()
    heads = ledger.doc.heads()
    with pytest.raises(UsageError):
        ledger.add_resource(name)
    assert ledger.doc.heads() == heads


def test_quick_successive_changes_in_the_same_millisecond_replay_in_order() -> None:
    ledger = Ledger.create(
        seed=b"group",
        name="Elm Street",
        actor=b"\x01" * 16,
        creator=ADA,
        creator_name="Ada",
        creator_key="ka",
        devices={},
        clock=FakeClock(step=0),
        new_id=seeded_ids(99),
    )
    ledger.add_member(member_id=BEN, name="Ben", key="kb", role=Role.MEMBER, devices={})
    ledger.add_member(member_id=CLEO, name="Cleo", key="kc", role=Role.MEMBER, devices={})
    for attempt in range(20):  # ids are random: the clock gives no order at all here
        c = ledger.add_commitment(f"help {attempt}", giver=BEN, receiver=CLEO)
        ledger.change_commitment(c.id, CommitmentStatus.ACCEPTED)
        done = ledger.change_commitment(c.id, CommitmentStatus.FULFILLED)
        assert done.status is CommitmentStatus.FULFILLED
        assert all(change.applied for change in done.changes)
    assert find_conflicts(ledger.view) == []
