"""The neighbourhood's rules (hearth/neighbourhood/rules.py): what records add up to, whatever
their order, and which records count at all."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from hearth.crypto import SigningKey
from hearth.errors import ProtocolError
from hearth.ledger.model import Need, NeedStatus
from hearth.neighbourhood.matching import Matcher
from hearth.neighbourhood.rules import (
    Record,
    Reseal,
    State,
    fold,
    handover_proof,
    neighbourhood_id,
    sign_record,
    verify_record,
)
from hearth.protocol import codec

ELM, TOOLS, RIVER, STRANGER = (SigningKey(bytes([i]) * 32) for i in range(1, 5))
ELM_2, ELM_3, ELM_EVIL = (SigningKey(bytes([i]) * 32) for i in range(5, 8))
# Devices of Elm Street's members: Ada's, Ben's, and Xan's (removed in the tests below).
ADA, BEN, XAN = (bytes([i]) * 32 for i in range(10, 13))
NONCE = b"n" * 16
NID = neighbourhood_id(ELM.public, NONCE)


class Log:
    """Records as groups say them, each with a distinct id (as bundle ids are)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.seqs: dict[bytes, int] = {}
        self.heads: dict[bytes, bytes] = {}  # device -> its last record's id
        self.refs: dict[str, str] = {}  # a test's name for an offer or request -> its ref

    def ref(self, name: str) -> str:
        """What records call the offer or request a test calls ``name``."""
        return self.refs[name]

    def ref_record(self, name: str) -> Record:
        """The record that made the offer or request a test calls ``name``."""
        return next(r for r in self.records if r.ref == self.refs[name])

    def names(self, refs: Iterable[str]) -> set[str]:
        """The tests' names of offers or requests (by ref)."""
        named = {ref: name for name, ref in self.refs.items()}
        return {named.get(ref, ref) for ref in refs}

    def say(
        self,
        key: SigningKey,
        *,
        device: bytes = b"",
        at: int = 0,
        record_id: bytes = b"",
        named: str = "",
        **fields: codec.Value,
    ) -> Record:
        """A record under ``key``, next in ``device``'s feed (by default one device per key),
        or ``at`` a seq of the writer's choosing (after the device's last record), with a
        record id of its choosing (as grinding salts gets close to); ``named`` puts an
        ``id`` field in the record as it is (a writer's name for an offer or request)."""
        author = device or key.public
        self.seqs[author] = at or self.seqs.get(author, 0) + 1
        name = fields.pop("id", None)  # offers and requests are known by their record
        for field in ("offer", "request"):
            if isinstance(fields.get(field), str):
                fields[field] = self.refs.get(str(fields[field]), fields[field])
        if named:
            fields["id"] = named
        body = verify_record(sign_record(key, fields))
        record = Record(
            id=record_id or bytes([len(self.records)]) * 32,
            body=body,
            author=author,
            seq=self.seqs[author],
            prev=self.heads.get(author, b""),
        )
        self.heads[author] = record.id
        if isinstance(name, str):
            self.refs.setdefault(name, record.ref)
        self.records.append(record)
        return record

    def hand_on(
        self,
        old: SigningKey,
        new: SigningKey,
        *,
        device: bytes,
        stay: list[bytes],
        gone: dict[bytes, int],
        admins: list[bytes] | None = None,
        record_id: bytes = b"",
        ends: dict[bytes, bytes] | None = None,
    ) -> Record:
        """A key handover by ``device``, listing who stays, where each gone device ends and
        (when given) the admins' devices, most senior first, and the id of each gone
        device's last record that counts (from ``ends``, by device)."""
        fields: dict[str, codec.Value] = {} if admins is None else {"admins": list(admins)}
        if ends is not None:
            fields["ends"] = [[d, ends[d]] for d in gone if gone[d] and d in ends]
        return self.say(
            old,
            device=device,
            record_id=record_id,
            op="rekey",
            successor=new.public,
            proof=handover_proof(old.public, new),
            stay=list(stay),
            gone=[[d, c] for d, c in gone.items()],
            **fields,
        )

    def state(self) -> State:
        return fold(NID, self.records)


def neighbourhood() -> Log:
    log = Log()
    log.say(ELM, device=ADA, op="found", name="Eastside", nonce=NONCE, group_name="Elm Street")
    log.say(ELM, device=ADA, op="admit", newcomer=TOOLS.public, group_name="Tool Library")
    log.say(TOOLS, op="admit", newcomer=RIVER.public, group_name="Riverside")
    log.say(
        ELM, device=ADA, op="offer", id="o1", what="Compost", qty="5", unit="bags", resource="r1"
    )
    log.say(RIVER, op="request", id="q1", offer="o1", qty="3", by="m1")
    return log


def test_groups_admitted_by_groups_already_in_are_in() -> None:
    log = neighbourhood()
    state = log.state()
    assert state.name == "Eastside"
    assert sorted(state.groups.values()) == ["Elm Street", "Riverside", "Tool Library"]
    assert state.requests[log.ref("q1")].status == "pending"
    assert state.offers[log.ref("o1")].quantity == Decimal(5)


def test_without_its_founding_record_a_neighbourhood_is_empty() -> None:
    log = neighbourhood()
    log.records.pop(0)
    state = log.state()
    assert state.groups == {}
    assert state.offers == {}


def test_a_group_nobody_admitted_says_nothing_that_counts() -> None:
    log = neighbourhood()
    log.say(STRANGER, op="offer", id="o2", what="Bikes", qty="2")
    log.say(STRANGER, op="admit", newcomer=STRANGER.public, group_name="Gatecrashers")
    log.say(STRANGER, op="answer", request="q1", accept=1)
    state = log.state()
    assert "o2" not in state.offers
    assert STRANGER.public not in state.groups
    assert state.requests[log.ref("q1")].status == "pending"


def test_only_the_offering_group_answers_and_an_acceptance_stands_against_a_refusal() -> None:
    log = neighbourhood()
    log.say(RIVER, op="answer", request="q1", accept=1)  # the asking group cannot
    assert log.state().requests[log.ref("q1")].status == "pending"
    log.say(ELM, op="answer", request="q1", accept=0)
    assert log.state().requests[log.ref("q1")].status == "declined"
    # A member answering at the same time, whichever record's id is lower: the promise
    # a member's node recorded on accepting stands.
    log.say(ELM, op="answer", request="q1", accept=1)
    assert log.state().requests[log.ref("q1")].status == "accepted"
    log.records.reverse()
    assert log.state().requests[log.ref("q1")].status == "accepted"


def test_a_handoff_is_fulfilled_only_when_the_receiving_group_says_it_arrived() -> None:
    log = neighbourhood()
    log.say(ELM, op="answer", request="q1", accept=1)
    log.say(TOOLS, op="fulfilled", request="q1")  # not party to it
    assert not log.state().requests[log.ref("q1")].fulfilled
    log.say(ELM, op="fulfilled", request="q1")  # the giving group: handed over
    request = log.state().requests[log.ref("q1")]
    assert (request.given, request.fulfilled) == (True, False)
    log.say(RIVER, op="fulfilled", request="q1")  # the receiving group: it arrived
    [handoff] = log.state().handoffs()
    assert (handoff.request.given, handoff.request.fulfilled) == (True, True)
    assert handoff.offer.what == "Compost"


def test_withdrawn_expired_and_departed_offers_are_not_open() -> None:
    log = neighbourhood()
    log.say(TOOLS, op="offer", id="o2", what="Saw", qty="1", until=1_000)
    log.say(RIVER, op="offer", id="o3", what="Leeks", qty="9")
    log.say(TOOLS, op="withdraw", offer="o1")  # not theirs: ignored
    # by group: Elm Street, Riverside, Tool Library
    assert [log.ref(n) for n in ("o1", "o3", "o2")] == [
        o.id for o in log.state().open_offers(now_ms=500)
    ]
    assert [log.ref(n) for n in ("o1", "o3")] == [
        o.id for o in log.state().open_offers(now_ms=1_000)
    ]
    log.say(ELM, op="withdraw", offer="o1")
    log.say(RIVER, op="leave")
    state = log.state()
    assert state.open_offers(now_ms=1_000) == []
    assert RIVER.public not in state.groups


def test_once_a_group_leaves_nothing_it_said_counts() -> None:
    log = neighbourhood()
    log.say(RIVER, op="offer", id="o3", what="Leeks", qty="9")
    log.say(ELM, op="request", id="q2", offer="o3", qty="2")
    log.say(RIVER, op="answer", request="q2", accept=1)
    assert log.names(h.request.id for h in log.state().handoffs()) == {"q2"}
    log.say(RIVER, op="leave")
    # Whoever still holds its key (a member the group removed, say) gets nothing done with
    # it: no offer, no request, no answer, no handoff of the group that left counts.
    log.say(RIVER, op="offer", id="o4", what="Beans", qty="1")
    log.say(ELM, op="request", id="q3", offer="o4", qty="1")
    log.say(ELM, op="answer", request="q1", accept=1)
    state = log.state()
    assert log.names(state.offers) == {"o1"}
    assert log.names(state.requests) == set()
    assert state.handoffs() == []


def test_a_handed_on_key_speaks_for_the_group_and_a_removed_device_no_longer_does() -> None:
    log = neighbourhood()
    log.say(ELM, device=XAN, op="offer", id="o2", what="Rake", qty="1")  # while Xan was in
    # Ada's node removes Xan and hands the key on; Xan's feed counts up to seq 1.
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA, BEN], gone={XAN: 1})
    # Xan still holds the old key, and goes on as if nothing happened.
    log.say(ELM, device=XAN, op="offer", id="o3", what="Bike", qty="1")
    log.say(ELM, device=XAN, op="admit", newcomer=STRANGER.public, group_name="Xan's")
    log.say(ELM, device=XAN, op="answer", request="q1", accept=1)
    log.say(ELM, device=XAN, op="leave")
    # A device the handover does not list (one Xan made up) fares no better.
    log.say(ELM, device=b"z" * 32, op="offer", id="o4", what="Drill", qty="1")
    # Ben has not heard of the handover yet: what his device says under the old key counts.
    log.say(ELM, device=BEN, op="offer", id="o5", what="Hoe", qty="2")
    log.say(ELM_2, device=ADA, op="offer", id="o6", what="Seeds", qty="9")
    state = log.state()
    assert state.groups[ELM_2.public] == "Elm Street"
    assert ELM.public not in state.groups
    assert STRANGER.public not in state.groups
    assert log.names(state.offers) == {"o1", "o2", "o5", "o6"}
    assert {o.group for o in state.offers.values()} == {ELM_2.public}
    assert state.requests[log.ref("q1")].status == "pending"
    log.say(ELM_2, device=ADA, op="answer", request="q1", accept=0)
    assert log.state().requests[log.ref("q1")].status == "declined"


def test_a_later_handover_cuts_off_what_a_device_said_under_an_older_key() -> None:
    log = neighbourhood()
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA, BEN], gone={})
    log.say(ELM, device=BEN, op="offer", id="o2", what="Rake", qty="1")  # Ben's seq 1
    log.hand_on(ELM_2, ELM_3, device=ADA, stay=[ADA], gone={BEN: 1})  # Ben removed
    log.say(ELM, device=BEN, op="offer", id="o3", what="Bike", qty="1")  # seq 2: too late
    state = log.state()
    assert log.names(state.offers) == {"o1", "o2"}
    assert list(state.groups).count(ELM_3.public) == 1


def test_a_removed_member_handing_the_key_on_for_themselves_leaves_the_group_with_none() -> None:
    log = neighbourhood()
    log.say(ELM, device=XAN, op="offer", id="o2", what="Rake", qty="1")
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA], gone={XAN: 1})
    log.hand_on(ELM, ELM_EVIL, device=XAN, stay=[XAN], gone={ADA: 0})
    log.say(ELM_EVIL, device=XAN, op="offer", id="o3", what="Bike", qty="1")
    state = log.state()
    # Neither handover stands: no key speaks for Elm Street until it is invited again,
    # and Xan speaks for nobody.
    assert "Elm Street" not in state.groups.values()
    assert log.names(state.offers) == set()
    assert state.keys.current(ELM.public) is None
    assert ELM_2.public not in state.groups
    assert ELM_EVIL.public not in state.groups


def test_two_admins_handing_on_at_once_settle_on_one_key() -> None:
    log = neighbourhood()
    first = log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA, BEN], gone={XAN: 0}, admins=[ADA, BEN])
    log.hand_on(ELM, ELM_3, device=BEN, stay=[ADA, BEN], gone={XAN: 0}, admins=[ADA, BEN])
    state = log.state()
    assert first.id < log.records[-1].id
    assert list(state.groups) == [ELM_2.public, TOOLS.public, RIVER.public]
    assert state.keys.current(ELM.public) == ELM_2.public
    assert state.keys.current(ELM_3.public) == ELM_3.public  # a key of no group in
    assert ELM_3.public not in state.groups


def test_two_handovers_at_once_are_settled_by_seniority_not_by_record_id() -> None:
    """R17: Ben, the junior admin, hands the key on at the moment Ada, the founder, does;
    his record's id is the lower (ids can be ground) but Ada's handover stands, as both
    handovers rank Ada first."""
    log = neighbourhood()
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA, BEN], gone={XAN: 0}, admins=[ADA, BEN])
    log.hand_on(
        ELM, ELM_3, device=BEN, stay=[ADA, BEN], gone={XAN: 0}, admins=[ADA, BEN], record_id=GROUND
    )
    state = log.state()
    assert state.keys.current(ELM.public) == ELM_2.public
    assert ELM_2.public in state.groups
    assert ELM_3.public not in state.groups


def test_two_admins_removing_each_other_leave_the_key_with_the_senior() -> None:
    """R7 for handovers: Ada and Ben remove each other at once; Ada has been an admin
    longer, so her handover stands (before: neither did, and the group had no key)."""
    log = neighbourhood()
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA, XAN], gone={BEN: 0}, admins=[ADA, BEN])
    log.hand_on(
        ELM, ELM_3, device=BEN, stay=[BEN, XAN], gone={ADA: 0}, admins=[ADA, BEN], record_id=GROUND
    )
    assert log.state().keys.current(ELM.public) == ELM_2.public


def test_the_order_of_admins_the_last_handover_gave_settles_the_next_rivalry() -> None:
    """Once a handover has stood, the order of admins it gave is what ranks them: Ben,
    removing Ada as she removes him, cannot make himself the senior by saying so."""
    log = neighbourhood()
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA, BEN, XAN], gone={}, admins=[ADA, BEN])
    log.hand_on(ELM_2, ELM_3, device=ADA, stay=[ADA, XAN], gone={BEN: 0}, admins=[ADA, BEN])
    log.hand_on(
        ELM_2,
        ELM_EVIL,
        device=BEN,
        stay=[BEN, XAN],
        gone={ADA: 1},
        admins=[BEN, ADA],
        record_id=GROUND,
    )
    state = log.state()
    assert state.keys.current(ELM.public) == ELM_3.public
    assert ELM_3.public in state.groups
    assert ELM_EVIL.public not in state.groups


def test_sealing_keys_and_new_secrets_count_only_under_a_groups_key_now() -> None:
    log = neighbourhood()
    log.say(ELM, device=ADA, op="seal_key", kem=b"k" * 32)
    log.say(TOOLS, op="seal_key", kem=b"t" * 32)
    log.say(TOOLS, op="seal_key", kem=b"u" * 32)  # a second at once: the first stands
    log.say(STRANGER, op="seal_key", kem=b"s" * 32)  # not in
    assert log.state().sealing == {ELM.public: b"k" * 32, TOOLS.public: b"t" * 32}
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA], gone={XAN: 0})
    # Xan still holds the old key: a sealing key of his, or a secret he hands out, is ignored;
    # so is the old sealing key Ada published, which Xan's node also had.
    log.say(ELM, device=XAN, op="seal_key", kem=b"x" * 32)
    wraps: codec.Value = [[TOOLS.public, b"w" * 80]]
    log.say(ELM, device=XAN, op="reseal", generation=1, secret_id=b"i" * 16, wraps=wraps)
    assert log.state().sealing == {TOOLS.public: b"t" * 32}
    assert log.state().reseals == []
    log.say(ELM_2, device=ADA, op="seal_key", kem=b"n" * 32)
    log.say(ELM_2, device=ADA, op="reseal", generation=1, secret_id=b"i" * 16, wraps=wraps)
    state = log.state()
    assert state.sealing == {ELM_2.public: b"n" * 32, TOOLS.public: b"t" * 32}
    assert state.reseals == [
        Reseal(generation=1, secret_id=b"i" * 16, by=ELM_2.public, wraps={TOOLS.public: b"w" * 80})
    ]
    for broken in ({"generation": 0}, {"secret_id": b"short"}, {"wraps": [[b"k", b"w"]]}):
        fields = {"op": "reseal", "generation": 1, "secret_id": b"i" * 16, "wraps": [], **broken}
        with pytest.raises(ProtocolError, match="malformed"):
            verify_record(sign_record(ELM_2, fields))
    with pytest.raises(ProtocolError, match="not a key"):
        verify_record(sign_record(ELM_2, {"op": "seal_key", "kem": b"short"}))


def test_a_handover_written_after_its_writer_was_removed_loses_whoever_is_senior() -> None:
    """Who removed whom comes first: Ben removed Ada (her feed counts up to where it ended
    on his node); Ada, the senior, then writes a handover removing Ben. Hers was written
    past her cutoff, after her removal, so it loses — seniority settles only handovers
    written at the same moment."""
    log = neighbourhood()
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA, BEN, XAN], gone={}, admins=[ADA, BEN])
    log.hand_on(
        ELM_2, ELM_3, device=BEN, stay=[BEN, XAN], gone={ADA: log.seqs[ADA]}, admins=[ADA, BEN]
    )
    log.hand_on(
        ELM_2,
        ELM_EVIL,
        device=ADA,
        stay=[ADA, XAN],
        gone={BEN: log.seqs[BEN]},
        admins=[ADA, BEN],
        record_id=GROUND,
    )
    state = log.state()
    assert state.keys.current(ELM.public) == ELM_3.public
    assert ELM_EVIL.public not in state.groups


def ranked_neighbourhood() -> Log:
    """Elm Street after a first handover (someone left) that ranked Ada its only admin;
    Ben and Xan are members."""
    log = neighbourhood()
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA, BEN, XAN], gone={}, admins=[ADA])
    return log


@pytest.mark.parametrize("cut", ["listed as gone", "left out"])
def test_a_members_handover_cannot_cut_an_admin_out(cut: str) -> None:
    """Xan, a member, holds the group's key and hands it on to one only he holds, with Ada,
    the admin, listed as gone (or left out of his list): it counts for nothing, and what
    Ada says under the group's key goes on counting."""
    log = ranked_neighbourhood()
    gone = {ADA: 0} if cut == "listed as gone" else {}
    log.hand_on(ELM_2, ELM_EVIL, device=XAN, stay=[BEN, XAN], gone=gone, admins=[XAN])
    log.say(ELM_2, device=ADA, op="offer", id="o2", what="Rake", qty="1")
    log.say(ELM_EVIL, device=XAN, op="withdraw", offer="o1")
    state = log.state()
    assert state.keys.current(ELM.public) == ELM_2.public
    assert ELM_EVIL.public not in state.groups
    assert log.names(o.id for o in state.open_offers(0)) == {"o1", "o2"}


def test_a_member_cutting_out_other_members_loses_to_an_admins_handover() -> None:
    """Xan keeps Ada in but cuts Ben out, under a ground-down record id, then hands his new
    key on listing Ada as gone; Ada's node hands on at the same moment (Xan staying): the
    roster ranks Ada, so hers stands, and a member's handover can never have her out."""
    log = ranked_neighbourhood()
    log.hand_on(
        ELM_2,
        ELM_EVIL,
        device=XAN,
        stay=[ADA, XAN],
        gone={BEN: 0},
        admins=[XAN, ADA],
        record_id=GROUND,
    )
    log.hand_on(ELM_EVIL, STRANGER, device=XAN, stay=[XAN], gone={ADA: 0}, admins=[XAN])
    log.hand_on(ELM_2, ELM_3, device=ADA, stay=[ADA, BEN, XAN], gone={}, admins=[ADA])
    state = log.state()
    assert state.keys.current(ELM.public) == ELM_3.public
    assert ELM_3.public in state.groups
    assert ELM_EVIL.public not in state.groups
    assert STRANGER.public not in state.groups


def test_a_handover_listing_a_device_as_both_staying_and_gone_is_refused() -> None:
    fields: dict[str, codec.Value] = {
        "op": "rekey",
        "successor": ELM_EVIL.public,
        "proof": handover_proof(ELM.public, ELM_EVIL),
        "stay": [ADA, XAN],
        "gone": [[ADA, 0]],
    }
    with pytest.raises(ProtocolError, match="both staying and gone"):
        verify_record(sign_record(ELM, fields))
    fields["gone"], fields["admins"] = [], [BEN]
    with pytest.raises(ProtocolError, match="admins are not its devices"):
        verify_record(sign_record(ELM, fields))


def test_a_handover_the_new_key_did_not_agree_to_is_refused() -> None:
    fields: dict[str, codec.Value] = {
        "op": "rekey",
        "successor": TOOLS.public,  # another group's key, to take over its standing
        "proof": handover_proof(ELM.public, ELM_2),
        "stay": [ADA],
        "gone": [],
    }
    with pytest.raises(ProtocolError, match="did not agree"):
        verify_record(sign_record(ELM, fields))
    breakages: list[dict[str, codec.Value]] = [
        {"stay": [b"short"]},
        {"gone": [[ADA, -1]]},
        {"gone": [ADA]},
        {"stay": 3},
    ]
    for broken in breakages:
        with pytest.raises(ProtocolError, match="malformed"):
            verify_record(sign_record(ELM, {**fields, "successor": ELM_2.public, **broken}))
    verify_record(sign_record(ELM, {**fields, "successor": ELM_2.public}))


def test_a_request_must_fit_an_offer_of_another_group() -> None:
    log = neighbourhood()
    log.say(ELM, op="request", id="q2", offer="o1", qty="1")  # its own offer
    log.say(RIVER, op="request", id="q3", offer="nope", qty="1")
    log.say(RIVER, op="request", id="q4", offer="o1", qty="-2")
    assert log.names(log.state().requests) == {"q1"}


GROUND = b"\x00" * 31 + b"\x01"  # a record id lower than any other but the founding's


def test_another_group_cannot_take_over_an_offer_nor_answer_for_it() -> None:
    """Issue 23, item 3: Riverside copies Elm Street's offer under a lower record id."""
    log = neighbourhood()
    elms = log.ref("o1")
    squat = log.say(RIVER, op="offer", named=elms, what="Compost", qty="50", record_id=GROUND)
    log.say(RIVER, op="withdraw", offer=elms)  # nor can it withdraw Elm Street's
    log.say(TOOLS, op="request", id="q2", offer=elms, qty="1")
    state = log.state()
    assert state.offers[elms].group == ELM.public
    assert not state.offers[elms].withdrawn
    assert state.offers[squat.ref].group == RIVER.public  # an offer of its own, no more
    assert state.requests[log.ref("q2")].offer == elms
    assert fold(NID, reversed(log.records)) == state


def test_another_group_cannot_take_over_an_accepted_request_nor_fulfil_it() -> None:
    """Issue 23, item 4: Tool Library copies Riverside's accepted request and marks it
    fulfilled, so that Elm Street's ledger would give the compost away."""
    log = neighbourhood()
    rivers = log.ref("q1")
    log.say(ELM, op="answer", request=rivers, accept=1)
    log.say(TOOLS, op="request", named=rivers, offer=log.ref("o1"), qty="5", record_id=GROUND)
    log.say(TOOLS, op="fulfilled", request=rivers)
    log.say(TOOLS, op="answer", request=rivers, accept=0)
    state = log.state()
    [handoff] = state.handoffs()
    assert handoff.request.id == rivers
    assert handoff.request.group == RIVER.public
    assert handoff.request.quantity == Decimal(3)
    assert not handoff.request.fulfilled
    assert not handoff.request.given


def test_a_device_counts_only_along_its_checked_chain() -> None:
    """Issue 23, item 1: Xan, while in, writes one record far ahead in his feed; the
    handover's cutoff is where his checked chain ends, so nothing he writes after counts."""
    log = neighbourhood()
    log.say(ELM, device=XAN, op="offer", id="o2", what="Rake", qty="1")  # seq 1
    log.say(ELM, device=XAN, op="offer", id="o3", what="Nothing", qty="1", at=1_000_000)
    state = log.state()
    assert "o3" not in log.names(state.offers)  # a gap waits
    assert state.heads[XAN] == 1
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA, BEN], gone={XAN: state.heads[XAN]})
    log.seqs[XAN], log.heads[XAN] = 1, log.ref_record("o2").id  # on from his chain's end
    log.say(ELM, device=XAN, op="offer", id="o4", what="Bike", qty="1")
    log.say(ELM, device=XAN, op="leave")
    state = log.state()
    assert log.names(state.offers) == {"o1", "o2"}
    assert ELM_2.public in state.groups


def test_a_record_counts_once_its_chain_is_whole_and_names_the_one_before() -> None:
    log = neighbourhood()
    log.say(ELM, device=BEN, op="offer", id="o2", what="Rake", qty="1")
    second = log.say(ELM, device=BEN, op="offer", id="o3", what="Hoe", qty="1")
    third = log.say(ELM, device=BEN, op="offer", id="o4", what="Saw", qty="1")
    waiting = fold(NID, [r for r in log.records if r is not second])
    assert log.names(waiting.offers) == {"o1", "o2"}  # the third waits for the second
    assert waiting.heads[BEN] == 1
    assert log.names(log.state().offers) == {"o1", "o2", "o3", "o4"}
    # A third record that names as its prev one nobody holds (a hidden fork) never counts.
    forked = [replace(r, prev=b"z" * 32) if r is third else r for r in log.records]
    state = fold(NID, forked)
    assert log.names(state.offers) == {"o1", "o2", "o3"}
    assert state.heads[BEN] == 2


def test_two_records_for_one_seq_cut_the_device_off_at_the_seq_before_everywhere() -> None:
    """Issue 23, item 5: nodes holding both records agree, whichever came first."""
    log = neighbourhood()
    first = log.say(ELM, device=XAN, op="offer", id="o2", what="Rake", qty="1")
    log.say(ELM, device=XAN, op="offer", id="o3", what="Bike", qty="1")
    log.seqs[XAN], log.heads[XAN] = 1, first.id
    log.say(ELM, device=XAN, op="offer", id="o4", what="Drill", qty="1")  # seq 2 again
    log.say(ELM, device=XAN, op="offer", id="o5", what="Saw", qty="1")
    state = log.state()
    assert state.equivocations == {XAN: 2}
    assert log.names(state.offers) == {"o1", "o2"}
    for seed in range(10):
        shuffled = list(log.records)
        random.Random(seed).shuffle(shuffled)
        assert fold(NID, shuffled) == state


def test_a_handover_written_in_advance_by_someone_the_group_removes_never_stands() -> None:
    """Issue 23, item 2: Xan, while a member, hands the key on to one only he holds,
    listing everyone as staying, under a ground-down record id."""
    log = neighbourhood()
    evil = log.hand_on(ELM, ELM_EVIL, device=XAN, stay=[ADA, BEN, XAN], gone={})
    log.records[-1] = replace(evil, id=GROUND)
    log.heads[XAN] = GROUND
    # Ada's node saw it (it is within Xan's cutoff) and hands on when he is removed.
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA, BEN], gone={XAN: log.seqs[XAN]})
    state = log.state()
    assert state.keys.current(ELM.public) == ELM_2.public
    assert ELM_2.public in state.groups
    assert ELM_EVIL.public not in state.groups


def test_a_planted_handover_that_won_a_tie_loses_once_a_later_handover_lists_its_writer() -> None:
    log = neighbourhood()
    evil = log.hand_on(ELM, ELM_EVIL, device=XAN, stay=[ADA, BEN, XAN], gone={})
    log.records[-1] = replace(evil, id=GROUND)
    log.heads[XAN] = GROUND
    # Ben hands on at the same time (someone else left): Xan's stays in, so both stand, and
    # nothing the records hold says whose writer is the senior (no handover has ranked
    # Elm Street's admins yet): no id wins it for Xan (R17), and the group has no key.
    log.hand_on(ELM, ELM_2, device=BEN, stay=[ADA, BEN, XAN], gone={}, admins=[ADA, BEN])
    assert log.state().keys.current(ELM.public) is None
    # Then Xan is removed: Ada's node hands on from the key the group holds.
    log.hand_on(ELM_2, ELM_3, device=ADA, stay=[ADA, BEN], gone={XAN: log.seqs[XAN]})
    state = log.state()
    assert state.keys.current(ELM.public) == ELM_3.public
    assert ELM_3.public in state.groups
    assert ELM_EVIL.public not in state.groups


@pytest.mark.parametrize("seed", range(40))
def test_the_state_is_the_same_in_any_order(seed: int) -> None:
    log = neighbourhood()
    log.say(ELM, op="answer", request="q1", accept=1)
    log.say(ELM, op="answer", request="q1", accept=0)
    log.say(RIVER, op="fulfilled", request="q1")
    log.say(TOOLS, op="offer", id="o2", what="Saw", qty="1")
    log.say(TOOLS, op="leave")
    log.say(ELM, device=XAN, op="offer", id="o3", what="Rake", qty="1")
    log.hand_on(ELM, ELM_2, device=ADA, stay=[ADA], gone={XAN: 1})
    log.say(ELM, device=XAN, op="offer", id="o4", what="Bike", qty="1")
    log.say(ELM_2, device=ADA, op="offer", id="o5", what="Seeds", qty="1")
    expected = log.state()
    assert log.names(expected.offers) == {"o1", "o3", "o5"}
    shuffled = list(log.records)
    random.Random(seed).shuffle(shuffled)
    assert fold(NID, shuffled) == expected


def test_a_record_not_signed_by_the_group_it_names_is_refused() -> None:
    payload = codec.decode(sign_record(ELM, {"op": "offer", "id": "x", "qty": "1"}))
    assert isinstance(payload, dict)
    body = dict(payload["body"])  # type: ignore[arg-type]
    body["group"] = TOOLS.public  # claim to be another group
    with pytest.raises(ProtocolError, match="not signed"):
        verify_record(codec.encode({"body": body, "sig": payload["sig"]}))
    with pytest.raises(ProtocolError, match="unknown kind"):
        verify_record(sign_record(ELM, {"op": "take-over"}))
    with pytest.raises(ProtocolError, match="too long"):
        verify_record(sign_record(ELM, {"op": "offer", "note": "x" * 500}))
    with pytest.raises(ProtocolError):
        verify_record(b"garbage")


def test_a_need_is_matched_by_shared_words_with_resources_and_offers() -> None:
    state = neighbourhood().state()
    need = Need(
        id="n1",
        what="Some compost bags for the beds",
        quantity=None,
        unit="",
        by=None,
        status=NeedStatus.OPEN,
        created_by="m",
        created_at=0,
        closed_by="",
        closed_at=None,
    )
    matcher = Matcher([], state.open_offers(now_ms=0))
    assert [(m.what, m.where) for m in matcher.for_need(need)] == [("Compost", "Elm Street")]
    assert matcher.for_need(replace(need, what="A ladder")) == []
    assert matcher.for_need(replace(need, what="the of and")) == []


def test_only_admins_start_join_or_leave_a_neighbourhood(tmp_path: Path) -> None:
    from hearth.errors import NotAuthorized
    from hearth.neighbourhood import participation
    from hearth.node.identity import create_identity
    from hearth.node.node import open_node
    from hearth.validity.intake import take_in

    for name in ("ada", "ben"):
        create_identity(tmp_path / name, name=name.title())
    with open_node(tmp_path / "ada") as ada, open_node(tmp_path / "ben") as ben:
        group = ada.create_group("Elm Street").id
        ben.join_with_token(ada.create_invite())
        for bundle in ben.feeds.all():
            take_in(ada, bundle.envelope, source="test")
        for bundle in ada.feeds.all():  # Ben sees Ada as the group's admin
            take_in(ben, bundle.envelope, source="test")
        with pytest.raises(NotAuthorized, match="admins"):
            participation.create(ben, group, "Eastside")
        hood = participation.create(ada, group, "Eastside")
        for bundle in ada.feeds.all():
            take_in(ben, bundle.envelope, source="test")
        assert [m.name for m in participation.memberships(ben, group)] == ["Eastside"]  # seen
        with pytest.raises(NotAuthorized, match="admins"):
            participation.leave(ben, group)
        assert participation.leave(ada, group).id == hood.id
        assert participation.memberships(ada, group) == []


def test_someone_leaving_hands_the_groups_key_on_and_a_rival_handover_leaves_it_none(
    tmp_path: Path,
) -> None:
    """Ada and Ben are Elm Street, Cy is Riverside; both groups are in Eastside. Ben leaves:
    Elm Street gets a new key there, and Eastside a new secret that Cy gets and Ben does not."""
    from hearth.cli.doctor import examine
    from hearth.group import member_changes
    from hearth.group.rotation import keep_keys
    from hearth.neighbourhood import participation
    from hearth.node.identity import create_identity
    from hearth.node.node import Node, open_node
    from hearth.validity.intake import take_in

    def standing_in_doctor(node: Node) -> tuple[bool, str]:
        [finding] = [f for f in examine(node) if f.check == "Elm Street: neighbourhood Eastside"]
        return finding.ok, finding.advice

    def carry(source: Node, to: Node, *, group_bundles: bool = True) -> None:
        """What ``source`` holds, group bundles (if asked) and neighbourhood records, to ``to``."""
        for bundle in source.feeds.all() if group_bundles else []:
            take_in(to, bundle.envelope, source="test")
        for (envelope,) in source.store.query("SELECT envelope FROM neighbourhood_records"):
            take_in(to, bytes(envelope), source="test")

    for name in ("ada", "ben", "cy", "dee"):
        create_identity(tmp_path / name, name=name.title())
    with (
        open_node(tmp_path / "ada") as ada,
        open_node(tmp_path / "ben") as ben,
        open_node(tmp_path / "cy") as cy,
        open_node(tmp_path / "dee") as dee,
    ):
        group = ada.create_group("Elm Street").id
        ben.join_with_token(ada.create_invite())
        carry(ben, ada)
        hood = participation.create(ada, group, "Eastside")
        riverside = cy.create_group("Riverside").id
        cy_key = SigningKey.generate(cy.random_bytes)
        participation.admit(ada, hood, cy_key.public, "Riverside")
        participation.join(cy, riverside, participation.encode_token(hood), cy_key)
        carry(cy, ada, group_bundles=False)
        carry(ada, ben)
        carry(ada, cy, group_bundles=False)
        # Dee's group is let in too, but its sealing key reaches Ada only after the change.
        oaks = dee.create_group("Oaks").id
        dee_key = SigningKey.generate(dee.random_bytes)
        participation.admit(ada, hood, dee_key.public, "Oaks")
        participation.join(dee, oaks, participation.encode_token(hood), dee_key)
        first_key = hood.key.public
        assert participation.memberships(ben, group)[0].key.public == first_key
        assert set(participation.state(ada, hood).sealing) == {first_key, cy_key.public}

        member_changes.leave(ben, group)
        carry(ben, ada)
        assert keep_keys(ada, group)  # Ada's next sync: a new epoch, then a new key
        [now] = participation.memberships(ada, group)
        assert now.key.public != first_key
        assert participation.state(ada, now).groups == {
            now.key.public: "Elm Street",
            cy_key.public: "Riverside",
            dee_key.public: "Oaks",
        }
        assert participation.standing(ada, now) == "in"
        assert standing_in_doctor(ada) == (True, "")
        assert ben.identity.device_key.public in now.keyed_without
        assert not participation.hand_on_keys(ada, group)  # once is enough

        # The neighbourhood's new secret: Cy's node opens it, Ben's holds only the old one.
        assert (now.generation, len(participation.topics(ada, group))) == (1, 2)
        carry(ada, cy, group_bundles=False)
        carry(ada, ben)
        assert participation.reconcile(cy, riverside) == 1
        [cys] = participation.memberships(cy, riverside)
        assert cys.secrets == now.secrets
        assert participation.reconcile(ben, group) == 0
        assert participation.memberships(ben, group)[0].secrets == now.secrets[:1]
        assert now.keys.topic not in participation.topics(ben, group)

        # Left out for want of a sealing key, Dee's group gets the secret once Ada's node
        # has its key: at her next sync.
        carry(dee, ada, group_bundles=False)
        assert participation.hand_on_keys(ada, group)
        assert not participation.hand_on_keys(ada, group)
        carry(ada, dee, group_bundles=False)
        assert participation.reconcile(dee, oaks) == 1
        assert participation.memberships(dee, oaks)[0].secrets == now.secrets

        # Riverside makes a new secret before hearing of Elm Street's new key, and seals it
        # to the old one — whose sealing key Ben's node still has. Ada's node takes it, sees
        # it exposed, and makes another that only the groups' keys now are given.
        [old_kem] = hood.sealing[first_key]
        [cys] = participation.memberships(cy, riverside)
        stale = participation._reseal_record(cy, 2, b"s" * 32, {first_key: old_kem.public})
        participation._append(cy, cys, stale)
        carry(cy, ada, group_bundles=False)
        assert participation.reconcile(ada, group) == 1
        assert participation.memberships(ada, group)[0].secret == b"s" * 32
        assert participation.hand_on_keys(ada, group)
        assert not participation.hand_on_keys(ada, group)
        [now] = participation.memberships(ada, group)
        assert now.generation == 3
        assert now.secret != b"s" * 32
        carry(ada, cy, group_bundles=False)
        assert participation.reconcile(cy, riverside) == 1
        assert participation.memberships(cy, riverside)[0].secret == now.secret

        # Ben, who still holds the first key, hands it on for himself, ruling Ada out.
        [bens] = participation.memberships(ben, group)
        mine = SigningKey.generate(ben.random_bytes)
        participation._append(
            ben,
            bens,
            {
                "op": "rekey",
                "successor": mine.public,
                "proof": handover_proof(first_key, mine),
                "stay": [ben.identity.device_key.public],
                "gone": [[ada.identity.device_key.public, 0]],
            },
        )
        carry(ben, ada)
        [now] = participation.memberships(ada, group)
        assert participation.standing(ada, now) == "no-key"
        ok, advice = standing_in_doctor(ada)
        assert not ok
        assert "join again" in advice
        assert participation.state(ada, now).groups == {}


def test_a_group_from_before_sealing_keys_gets_one_at_an_admins_next_sync(tmp_path: Path) -> None:
    from hearth.neighbourhood import participation
    from hearth.node.identity import create_identity
    from hearth.node.node import open_node

    create_identity(tmp_path / "ada", name="Ada")
    with open_node(tmp_path / "ada") as ada:
        group = ada.create_group("Elm Street").id
        # A neighbourhood as an older Hearth kept it: no sealing key, none said.
        key = SigningKey.generate(ada.random_bytes)
        nid = neighbourhood_id(key.public, NONCE)
        with ada.change(group) as ledger:
            entry = {"name": "Eastside", "secret": "00" * 32, "key": key.secret.hex()}
            ledger.put_meta(f"neighbourhood:{nid}", {**entry, "left": False})
        [hood] = participation.memberships(ada, group)
        fields: dict[str, codec.Value] = {"name": "Eastside", "nonce": NONCE}
        participation._append(ada, hood, {"op": "found", "group_name": "Elm Street", **fields})
        assert (hood.sealing, participation.state(ada, hood).sealing) == ({}, {})
        assert participation.hand_on_keys(ada, group)
        [hood] = participation.memberships(ada, group)
        [kem] = hood.sealing[key.public]
        assert participation.state(ada, hood).sealing == {key.public: kem.public}
        assert not participation.hand_on_keys(ada, group)


def test_a_neighbourhood_invite_carries_every_secret_and_old_invites_still_read() -> None:
    import base64

    from hearth.errors import UsageError
    from hearth.neighbourhood import participation

    secrets = ((0, b"a" * 32), (1, b"b" * 32))
    hood = participation.Membership(
        id=NID,
        name="Eastside",
        group_id="g",
        secrets=secrets,
        key=ELM,
        held=frozenset({ELM.public}),
        sealing={},
        left=False,
        keyed_without=frozenset(),
    )
    assert participation.decode_token(participation.encode_token(hood)) == (
        NID,
        "Eastside",
        list(secrets),
    )
    old = codec.encode([1, NID, "Eastside", b"a" * 32])
    text = "hearth-neighbourhood-1." + base64.urlsafe_b64encode(old).decode()
    assert participation.decode_token(text) == (NID, "Eastside", [(0, b"a" * 32)])
    bads: list[codec.Value] = [
        [2, NID, "Eastside", []],
        [2, NID, "Eastside", [[1, b"a" * 32]]],  # no secret to start from
        [3, NID, "x", b""],
    ]
    for bad in bads:
        raw = base64.urlsafe_b64encode(codec.encode(bad)).decode()
        with pytest.raises(UsageError, match="not a neighbourhood invite"):
            participation.decode_token("hearth-neighbourhood-1." + raw)


def test_a_member_planting_a_handover_or_signing_twice_is_shown_to_admins_and_loses(
    tmp_path: Path,
) -> None:
    """Issue 23, items 2 and 5, between nodes: Ben, while a member, hands Elm Street's key
    on to one only he holds, listing everyone as staying; Ada's node alerts her as soon as
    it arrives; once she removes Ben, her node's handover lists him as gone and his never
    stands. Signing two records for one place in his feed is shown to her as well."""
    from hearth.group import member_changes
    from hearth.group.rotation import keep_keys
    from hearth.neighbourhood import participation
    from hearth.node.identity import create_identity
    from hearth.node.node import Node, open_node
    from hearth.validity.alerts import admin_alerts
    from hearth.validity.intake import take_in

    def carry(source: Node, to: Node) -> None:
        for bundle in source.feeds.all():
            take_in(to, bundle.envelope, source="test")
        for (envelope,) in source.store.query("SELECT envelope FROM neighbourhood_records"):
            take_in(to, bytes(envelope), source="test")

    for name in ("ada", "ben"):
        create_identity(tmp_path / name, name=name.title())
    with open_node(tmp_path / "ada") as ada, open_node(tmp_path / "ben") as ben:
        group = ada.create_group("Elm Street").id
        ben.join_with_token(ada.create_invite())
        carry(ben, ada)
        hood = participation.create(ada, group, "Eastside")
        carry(ada, ben)
        [bens] = participation.memberships(ben, group)
        mine = SigningKey.generate(ben.random_bytes)
        devices = [ada.identity.device_key.public, ben.identity.device_key.public]
        participation._append(
            ben,
            bens,
            {
                "op": "rekey",
                "successor": mine.public,
                "proof": handover_proof(bens.key.public, mine),
                "stay": devices,
                "gone": [],
            },
        )
        carry(ben, ada)
        assert [(a.kind, a.member) for a in admin_alerts(ada, group)] == [
            ("neighbourhood-handover", "Ben")
        ]
        assert participation.state(ada, hood).keys.current(hood.key.public) == mine.public

        member_changes.remove_member(ada, group, "Ben")
        keep_keys(ada, group)  # as her next sync does
        [now] = participation.memberships(ada, group)
        current = participation.state(ada, now)
        assert current.keys.current(hood.key.public) == now.key.public != mine.public
        assert list(current.groups) == [now.key.public]
        assert participation.standing(ada, now) == "in"
        assert admin_alerts(ada, group) == []  # his handover no longer stands, and he is out


def test_an_admins_node_answers_a_members_handover_and_its_own_stands(tmp_path: Path) -> None:
    """Once a handover has ranked Elm Street's admins (Cat left), Ben, a member, hands the
    key on to one only he holds, keeping everyone: it stands at first (other groups cannot
    tell a member from an admin) and Ada is alerted; at her node's next pass it hands the
    key on again, keeping everyone the group's membership says is in, and hers stands —
    without her removing anyone (issue 23: a member's handover does not last)."""
    from hearth.group import member_changes
    from hearth.group.rotation import keep_keys
    from hearth.neighbourhood import participation
    from hearth.node.identity import create_identity
    from hearth.node.node import Node, open_node
    from hearth.validity.alerts import admin_alerts
    from hearth.validity.intake import take_in

    def carry(source: Node, to: Node) -> None:
        for bundle in source.feeds.all():
            take_in(to, bundle.envelope, source="test")
        for (envelope,) in source.store.query("SELECT envelope FROM neighbourhood_records"):
            take_in(to, bytes(envelope), source="test")

    for name in ("ada", "ben", "cat"):
        create_identity(tmp_path / name, name=name.title())
    with (
        open_node(tmp_path / "ada") as ada,
        open_node(tmp_path / "ben") as ben,
        open_node(tmp_path / "cat") as cat,
    ):
        group = ada.create_group("Elm Street").id
        for node in (ben, cat):
            node.join_with_token(ada.create_invite())
            carry(node, ada)
        participation.create(ada, group, "Eastside")
        carry(ada, cat)
        member_changes.leave(cat, group)
        carry(cat, ada)
        keep_keys(ada, group)  # Cat is gone: the key is handed on, ranking Ada
        carry(ada, ben)
        [bens] = participation.memberships(ben, group)
        mine = SigningKey.generate(ben.random_bytes)
        devices = [ada.identity.device_key.public, ben.identity.device_key.public]
        participation._append(
            ben,
            bens,
            {
                "op": "rekey",
                "successor": mine.public,
                "proof": handover_proof(bens.key.public, mine),
                "stay": devices,
                "gone": [],
                "admins": [ben.identity.device_key.public],
            },
        )
        carry(ben, ada)
        [adas] = participation.memberships(ada, group)
        assert participation.state(ada, adas).keys.current(adas.key.public) == mine.public
        [alert] = admin_alerts(ada, group)
        assert "for now it stands" in alert.what
        keep_keys(ada, group)  # her node's next pass
        [now] = participation.memberships(ada, group)
        current = participation.state(ada, now)
        assert current.keys.current(adas.key.public) == now.key.public != mine.public
        assert participation.standing(ada, now) == "in"
        # Ben is still in, so Ada is still told what he did; it no longer stands.
        [alert] = admin_alerts(ada, group)
        assert (alert.kind, alert.member) == ("neighbourhood-handover", "Ben")
        assert "for now it stands" not in alert.what
        carry(ada, ben)
        [bens] = participation.memberships(ben, group)
        assert bens.key.public == now.key.public  # Ben's node speaks with it too


def test_an_equivocating_device_is_shown_to_admins(tmp_path: Path) -> None:
    from hearth.neighbourhood import participation
    from hearth.node.identity import create_identity
    from hearth.node.node import open_node
    from hearth.validity.alerts import admin_alerts
    from hearth.validity.intake import take_in

    for name in ("ada", "ben"):
        create_identity(tmp_path / name, name=name.title())
    with open_node(tmp_path / "ada") as ada, open_node(tmp_path / "ben") as ben:
        group = ada.create_group("Elm Street").id
        ben.join_with_token(ada.create_invite())
        for bundle in ben.feeds.all():
            take_in(ada, bundle.envelope, source="test")
        hood = participation.create(ada, group, "Eastside")
        for bundle in ada.feeds.all():
            take_in(ben, bundle.envelope, source="test")
        [bens] = participation.memberships(ben, group)
        participation._append(ben, bens, {"op": "leave"})
        for (envelope,) in ben.store.query("SELECT envelope FROM neighbourhood_records"):
            take_in(ada, bytes(envelope), source="test")
        # A copy of his node from before says something else at the same place.
        ben.store.run(
            "DELETE FROM neighbourhood_records WHERE author = ?", (ben.identity.device_key.public,)
        )
        participation._append(ben, bens, {"op": "seal_key", "kem": b"k" * 32})
        for (envelope,) in ben.store.query("SELECT envelope FROM neighbourhood_records"):
            take_in(ada, bytes(envelope), source="test")
        current = participation.state(ada, hood)
        assert current.equivocations == {ben.identity.device_key.public: 1}
        assert hood.key.public in current.groups  # his leave does not count
        assert [(a.kind, a.member) for a in admin_alerts(ada, group)] == [
            ("neighbourhood-equivocation", "Ben")
        ]


def test_two_admins_handing_on_at_once_both_speak_with_the_key_that_stands(
    tmp_path: Path,
) -> None:
    """Ada and Ben, both admins, each hand Elm Street's key on when Cat leaves, before
    hearing of the other's handover: once their nodes meet, both speak with the one key the
    records lead to, whichever of the two it is."""
    from hearth.group import member_changes
    from hearth.group.rotation import keep_keys
    from hearth.neighbourhood import participation
    from hearth.node.identity import create_identity
    from hearth.node.node import Node, open_node
    from hearth.validity.intake import take_in

    def carry(source: Node, to: Node) -> None:
        for bundle in source.feeds.all():
            take_in(to, bundle.envelope, source="test")
        for (envelope,) in source.store.query("SELECT envelope FROM neighbourhood_records"):
            take_in(to, bytes(envelope), source="test")

    for name in ("ada", "ben", "cat"):
        create_identity(tmp_path / name, name=name.title())
    with (
        open_node(tmp_path / "ada") as ada,
        open_node(tmp_path / "ben") as ben,
        open_node(tmp_path / "cat") as cat,
    ):
        group = ada.create_group("Elm Street").id
        for node in (ben, cat):
            node.join_with_token(ada.create_invite())
            carry(node, ada)
        member_changes.promote(ada, group, "Ben")
        participation.create(ada, group, "Eastside")
        for node in (ben, cat):
            carry(ada, node)
        member_changes.leave(cat, group)
        for node in (ada, ben):
            carry(cat, node)
            keep_keys(node, group)  # each hands the key on, unaware of the other
        carry(ada, ben)
        carry(ben, ada)
        [adas] = participation.memberships(ada, group)
        [bens] = participation.memberships(ben, group)
        assert adas.key.public == bens.key.public
        assert participation.standing(ada, adas) == participation.standing(ben, bens) == "in"


def test_a_handover_kept_before_it_would_be_refused_counts_for_nothing() -> None:
    """A node that kept a handover listing Ada both staying and gone before such handovers
    were refused on arrival folds as a node that refused it does."""
    log = neighbourhood()
    without = log.state()
    body = {
        "op": "rekey",
        "successor": ELM_EVIL.public,
        "proof": handover_proof(ELM.public, ELM_EVIL),
        "stay": [ADA, XAN],
        "gone": [[ADA, 0]],
        "group": ELM.public,
    }
    log.records.append(Record(id=b"k" * 32, body=body, author=XAN, seq=1, prev=b""))
    state = log.state()
    assert state.keys.current(ELM.public) == ELM.public
    assert (state.groups, state.offers) == (without.groups, without.offers)
