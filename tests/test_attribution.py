"""R2a: content is written in its author's name only, checked on every node
(docs/security.md §5–§6). A modified client that fills in another member's name — as who
added a resource, edited it, lent it, answered a promise — or takes a name off, has its
bundle refused by the node that takes it in, one by one or inside a snapshot; every
honest path that copies names (archives, R8's writing again) still counts; and the member
who proposed a promise cannot accept or decline it on any node."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hearth.ledger import CommitmentStatus, Kind, Ledger, history
from hearth.ledger.archive import ARCHIVE_AFTER_MS
from hearth.ledger.attribution import own_part
from hearth.ledger.entry_ids import tagged_id
from hearth.ledger.ledger import LIVE
from hearth.node import node as node_module
from hearth.node.node import Node
from hearth.protocol.bundle import encode_snapshot
from hearth.testing import FakeClock
from hearth.validity.intake import Verdict, take_in, take_snapshot
from tests.test_membership import deliver, exchange, make_group, new_node

DAY = 86_400_000


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node, str]]:
    """Ada (admin) and Ben (member), each holding everything; Ada added a ladder."""
    ada, ben = make_group(tmp_path, ["Ada", "Ben"])
    gid = ada.current_group().id
    with ada.change() as ledger:
        ledger.add_resource("Ladder", kind=Kind.TOOL)
    deliver(ada, ben, gid)
    yield ada, ben, gid
    ada.close()
    ben.close()


def state(node: Node, gid: str) -> tuple[object, ...]:
    view = node.view(gid)
    return (
        sorted(node.ledger(gid).doc.heads()),
        view.resources(include_removed=True),
        view.commitments(),
        history(view),
    )


def last(node: Node, gid: str) -> bytes:
    """The newest bundle of ``node``'s own feed."""
    mine = [b for b in node.feeds.all(gid) if b.author == node.identity.device_key.public]
    return mine[-1].envelope


def _find(ledger: Ledger, name: str) -> str:
    return ledger.view.find("resources", name)


# Each: what Ben's modified client writes, with Ada's member id at hand.
Forgery = Callable[[Ledger, str, str], None]


def _added_as(ledger: Ledger, ada: str, ben: str) -> None:
    ledger.author = ada
    ledger.add_resource("Forged saw", kind=Kind.TOOL)


def _edited_as(ledger: Ledger, ada: str, ben: str) -> None:
    ledger.author = ada
    ledger.edit_resource(_find(ledger, "Ben's box"), name="Ada's box now")


def _lent_as(ledger: Ledger, ada: str, ben: str) -> None:
    ledger.author = ada
    ledger.lend(_find(ledger, "Ladder"), to=ben)


def _answered_as(ledger: Ledger, ada: str, ben: str) -> None:
    promise = next(c for c in ledger.view.commitments() if c.what == "Lend the drill")
    ledger.author = ada
    ledger.change_commitment(promise.id, CommitmentStatus.ACCEPTED)


def _name_taken_off(ledger: Ledger, ada: str, ben: str) -> None:
    ledger.write_again("resources", _find(ledger, "Ladder"), {"created_by": None})


def _closed_as(ledger: Ledger, ada: str, ben: str) -> None:
    need = next(n for n in ledger.view.needs() if n.what == "Rope")
    ledger.author = ada
    ledger.close_need(need.id)


@pytest.mark.parametrize(
    "forge",
    [_added_as, _edited_as, _lent_as, _answered_as, _name_taken_off, _closed_as],
    ids=["created_by", "edit by", "lend by", "status change by", "name taken off", "closed_by"],
)
def test_content_in_another_members_name_is_refused(
    pair: tuple[Node, Node, str], forge: Forgery
) -> None:
    ada, ben, gid = pair
    with ben.change(gid) as ledger:
        ledger.add_commitment("Lend the drill", giver=ben.identity.member_id, receiver="Ada")
        ledger.add_need("Rope")
    assert deliver(ben, ada, gid) == [Verdict.APPLIED]
    before = state(ada, gid)
    with ben.change(gid) as ledger:  # a modified client: the local checks do not stop it
        forge(ledger, ada.identity.member_id, ben.identity.member_id)
    outcome = take_in(ada, last(ben, gid), source="test")
    assert outcome.verdict is Verdict.REJECTED
    assert "another member's name" in outcome.reason
    assert state(ada, gid) == before


def test_a_snapshot_holding_a_change_in_another_members_name_is_refused(
    tmp_path: Path, pair: tuple[Node, Node, str]
) -> None:
    """The same change, signed by Ben's device in his feed, inside a snapshot: refused
    whole (R13), and one by one too."""
    ada, ben, gid = pair
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    deliver(ada, ben, gid)
    with ben.change(gid) as ledger:
        _added_as(ledger, ada.identity.member_id, ben.identity.member_id)
    payload = encode_snapshot([(LIVE, ben.ledger(gid).doc.save())], ben.feeds.heads(gid))
    forged = ben.feeds.seal_snapshot(gid, payload).encode()
    carried = [b.envelope for b in ben.feeds.all(gid)]
    outcome, taken = take_snapshot(fay, forged, carried, source="test")
    assert outcome.verdict is Verdict.REJECTED
    assert "another member's name" in outcome.reason
    assert not taken
    for envelope in carried:
        take_in(fay, envelope, source="test")
    assert "Forged saw" not in {r.name for r in fay.view(gid).resources()}
    assert "Ladder" in {r.name for r in fay.view(gid).resources()}
    fay.close()


def test_the_proposer_cannot_accept_or_decline_her_own_promise_on_any_node(
    pair: tuple[Node, Node, str],
) -> None:
    """Ben proposes to lend Ada his drill, then — his client modified — accepts it himself,
    and records a decline that names nobody: both reach Ada's node (written in his own
    name, or none, they break no rule of intake) and neither counts anywhere."""
    ada, ben, gid = pair
    me = ben.identity.member_id
    with ben.change(gid) as ledger:
        promise = ledger.add_commitment("Lend the drill", giver=me, receiver="Ada")
    with ben.change(gid) as ledger:
        at = ledger.view.commitment(promise.id).created_at + 1
        for change_id, by in ((tagged_id("1" * 16, me), me), (tagged_id("2" * 16, me), 7)):
            ledger.write_again(
                "commitments",
                promise.id,
                {
                    "changes": {
                        change_id: {"from": "proposed", "to": "accepted", "by": by, "at": at}
                    }
                },
            )
    assert deliver(ben, ada, gid) == [Verdict.APPLIED, Verdict.APPLIED]
    for node in (ada, ben):
        assert node.view(gid).commitment(promise.id).status is CommitmentStatus.PROPOSED
    with ada.change(gid) as ledger:
        ledger.change_commitment(promise.id, CommitmentStatus.ACCEPTED)
    deliver(ada, ben, gid)
    for node in (ada, ben):
        answered = node.view(gid).commitment(promise.id)
        assert answered.status is CommitmentStatus.ACCEPTED
        assert [c.by for c in answered.changes] == [ada.identity.member_id]


def test_archived_entries_keep_their_authors_names_on_every_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pair: tuple[Node, Node, str]
) -> None:
    """Ada's node moves old entries of both members — events, a closed need, a finished
    promise — to an archive, copying Ben's name with them: Ben's node and a new device
    taking a snapshot take it in. Ben writing Ada's name into an archive is refused."""
    monkeypatch.setattr(node_module, "_ARCHIVE_CHECK_EVERY", 1)
    ada, ben, gid = pair
    a, b = ada.identity.member_id, ben.identity.member_id
    with ben.change(gid) as ledger:
        ladder = _find(ledger, "Ladder")
        ledger.lend(ladder, to=b)
        ledger.return_(ladder)
        ledger.close_need(ledger.add_need("Rope").id)
        promise = ledger.add_commitment("Lend the drill", giver=b, receiver=a)
    deliver(ben, ada, gid)
    with ada.change(gid) as ledger:
        ledger.change_commitment(promise.id, CommitmentStatus.ACCEPTED)
        ledger.change_commitment(promise.id, CommitmentStatus.FULFILLED)
    deliver(ada, ben, gid)
    ada.clock.advance(ARCHIVE_AFTER_MS + DAY)  # type: ignore[attr-defined]
    with ada.change(gid) as ledger:
        ledger.add_need("Twine")  # and her node archives what is old
    archives = ada.ledger(gid).archive_docs()
    assert archives, "nothing was archived"
    assert ada.ledger(gid).doc.read_entry("commitments", promise.id) is None
    assert set(deliver(ada, ben, gid)) == {Verdict.APPLIED}
    assert state(ben, gid)[1:] == state(ada, gid)[1:]
    assert ben.view(gid).commitment(promise.id).changes[0].by == a
    # A new device takes it all from a snapshot, archives included.
    fay = new_node(tmp_path, "Fay", FakeClock(step=1000))
    fay.join_with_token(ada.create_invite())
    ledger = ada.ledger(gid)
    payload = encode_snapshot(
        [(LIVE, ledger.doc.save()), *((n, d.save()) for n, d in sorted(archives.items()))],
        ada.feeds.heads(gid),
    )
    snapshot = ada.feeds.seal_snapshot(gid, payload).encode()
    outcome, _ = take_snapshot(fay, snapshot, [x.envelope for x in ada.feeds.all(gid)], source="t")
    assert outcome.verdict is Verdict.APPLIED, outcome.reason
    assert state(fay, gid)[1:3] == state(ada, gid)[1:3]
    fay.close()
    # Ben's modified client writes an event in Ada's name into an archive document.
    with ben.change(gid) as ledger:
        period, archive = next(iter(ledger.archive_docs().items()))
        with ledger._edit(period, archive) as w:
            w.put("events", "forged", {"action": "produce", "resource": ladder, "qty": "5"})
            w.put("events", "forged", {"by": a, "at": 1})
    held = {x.id for x in ada.feeds.all(gid)}
    outcomes = [
        take_in(ada, x.envelope, source="t") for x in ben.feeds.all(gid) if x.id not in held
    ]
    assert any(
        o.verdict is Verdict.REJECTED and o.reason.endswith("in an archive") for o in outcomes
    )
    assert "forged" not in ada.view(gid).tables["events"]


def test_writing_again_takes_only_this_members_own_part() -> None:
    """R8's re-issue writes what differs, in this member's name: others' records and
    names are theirs to write again."""
    ada, ben = "a" * 32, "b" * 32
    old = {
        "name": "Drill",
        "created_by": ada,
        "updated_by": ben,
        "edits": {"e1": {"by": ada, "at": 1}, "e2": {"by": ben, "at": 2}, "e3": {"by": ada}},
        "removed": {"created_by": ben, "cutoffs": {"k": 3}},
    }
    now = {"name": "Drill", "created_by": ada, "edits": {"e1": {"by": ada, "at": 1}}}
    assert own_part(old, now, ben) == {
        "updated_by": ben,
        "edits": {"e2": {"by": ben, "at": 2}},
        "removed": {"created_by": ben, "cutoffs": {"k": 3}},
    }
    assert own_part(old, {}, ada) == {
        "name": "Drill",
        "created_by": ada,
        "edits": {"e1": {"by": ada, "at": 1}, "e3": {"by": ada}},
    }


def test_an_edit_written_again_after_a_flip_leaves_out_others_records(tmp_path: Path) -> None:
    """R8 with R2a: Ben, then Cat, edit Ada's ladder on top of a bundle of Dan's that
    stops counting (Dan signed two for one seq). Cat's node writes her edit again — her
    own part only, not Ben's edit record in Ben's name, which Ben's node writes again
    itself — and every node takes both (the whole entry written again would be refused
    as written in Ben's name, and Cat's rename lost)."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Dan"])
    ada, ben, cat, dan = nodes
    gid = ada.current_group().id
    with ada.change() as ledger:
        ladder = ledger.add_resource("Ladder", kind=Kind.TOOL).id
    for node in (ben, cat, dan):
        deliver(ada, node, gid)
    with dan.change() as ledger:
        ledger.add_resource("Dan's first", kind=Kind.TOOL)
    first = max(
        (b for b in dan.feeds.all(gid) if b.author == dan.identity.device_key.public),
        key=lambda b: b.seq,
    )
    deliver(dan, ben, gid)
    deliver(dan, cat, gid)
    with dan.store.write():
        dan.store.run("DELETE FROM bundles WHERE id = ?", (first.id,))
    with dan.change() as ledger:
        ledger.add_resource("Dan's second", kind=Kind.TOOL)
    deliver(dan, ada, gid)
    with ben.change() as ledger:  # on top of Dan's first
        ledger.edit_resource(ladder, location="Ben's shed")
    deliver(ben, cat, gid)
    with cat.change() as ledger:
        ledger.edit_resource(ladder, name="Cat's ladder")
    exchange(nodes)
    for node in (ada, ben, cat):
        assert node.feeds.waiting(gid) == [], node.identity.name
        seen = node.view(gid).resource(ladder)
        assert (seen.name, seen.location) == ("Cat's ladder", "Ben's shed"), node.identity.name
    for node in nodes:
        node.close()
