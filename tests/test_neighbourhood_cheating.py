"""Neighbourhoods against a cheating member and a cheating group (issue 23): seeded runs of
the fold (hearth/neighbourhood/rules.py) in which two honest groups offer, ask, answer and hand
over, while, at random moments,

- Xan, a member of Elm Street, says the group leaves or lets his own group in (the
  admins' to say), writes a record far ahead in his feed, signs two records
  for one place in it (also, once out, for a place within his cutoff: a back-dated
  leave, admission or offer on a fork), plants a handover of the group's key to one only he holds —
  keeping everyone, or listing Ada (the admin) as gone, or leaving her out, or cutting
  Ben out — under a ground-down record id, and — once Ada's node removes him (cutting him
  off where his checked chain ends) — goes on offering, answering and leaving in Elm
  Street's name under the old key. (Cat left Elm Street at the start: the handover then
  ranked Ada its admin, so the key Xan holds has a roster.);
- Mallory's group copies other groups' offers and requests (their ids, as names), answers
  and fulfils requests not its own, withdraws offers not its own, grinds record ids down,
  writes far ahead in its feeds and signs two records for one place.

At the end of each seed: the state is the same whatever order the records come in, no
record of Xan's past his cutoff counts and his handover does not stand, every honest
offer and request is there as its group said it, answered and fulfilled only by the
groups party to it. ``HEARTH_SEED=…`` replays one seed; ``HEARTH_NEIGHBOURHOOD_SEEDS=N``
runs more (100 by default).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from hearth.crypto import SigningKey
from hearth.neighbourhood.rules import Record, fold
from tests.test_neighbourhood import (
    ADA,
    BEN,
    ELM,
    ELM_2,
    ELM_EVIL,
    NID,
    NONCE,
    RIVER,
    STRANGER,
    XAN,
    Log,
)

MAL = SigningKey(bytes([20]) * 32)
MAL_DEVICE, ROSA = bytes([21]) * 32, bytes([22]) * 32  # Mallory's device, Riverside's
ELM_1, CAT = SigningKey(bytes([23]) * 32), bytes([24]) * 32  # Elm Street's key once Cat left
NAMES = {ELM.public: "Elm Street", RIVER.public: "Riverside", MAL.public: "Mallory's"}


def seeds() -> list[int]:
    if "HEARTH_SEED" in os.environ:
        return [int(os.environ["HEARTH_SEED"])]
    return list(range(int(os.environ.get("HEARTH_NEIGHBOURHOOD_SEEDS", "100"))))


@dataclass
class Honest:
    """What the honest groups said, to check the state against."""

    offers: dict[str, tuple[str, str, Decimal]] = field(default_factory=dict)  # ref -> group…
    requests: dict[str, tuple[str, str, Decimal]] = field(default_factory=dict)  # ref -> …
    answers: dict[str, set[int]] = field(default_factory=dict)  # request ref -> accepts
    arrived: set[str] = field(default_factory=set)  # requests their receiver said arrived


class Run:
    """One seed's neighbourhood."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.log = Log()
        self.honest = Honest()
        self.removed = False  # Xan
        self.cutoff = 0
        self.path: list[Record] = []  # Xan's records up to his cutoff, once removed
        self.after_removal: list[Record] = []  # what Xan wrote once out
        self.planted = False
        self.say(ELM, ADA, op="found", name="Eastside", nonce=NONCE, group_name="Elm Street")
        self.say(ELM, ADA, op="admit", newcomer=RIVER.public, group_name="Riverside")
        self.say(ELM, ADA, op="admit", newcomer=MAL.public, group_name="Mallory's")
        self.log.hand_on(ELM, ELM_1, device=ADA, stay=[ADA, BEN, XAN], gone={CAT: 0}, admins=[ADA])

    def say(self, key: SigningKey, device: bytes, *, low: bool = False, **fields: object) -> Record:
        """A record with an id from the seed (ground low, if asked)."""
        head = b"\x00" if low else bytes([self.rng.randrange(1, 256)])
        record_id = head + self.rng.randbytes(31)
        return self.log.say(key, device=device, record_id=record_id, **fields)  # type: ignore[arg-type]

    def elm_key(self, device: bytes) -> SigningKey:
        """The key an Elm Street device writes with: the new one once Ada handed it on (Ben
        may not have heard yet)."""
        if self.removed and (device == ADA or self.rng.random() < 0.5):
            return ELM_2
        return ELM_1

    # --- honest groups ---------------------------------------------------------------

    def offer(self) -> None:
        key, device, name = self.rng.choice(
            [(None, ADA, "Elm Street"), (None, BEN, "Elm Street"), (RIVER, ROSA, "Riverside")]
        )
        key = key or self.elm_key(device)
        qty = Decimal(self.rng.randrange(1, 20))
        what = self.rng.choice(["Compost", "Leeks", "Ladder", "Seed potatoes"])
        record = self.say(key, device, op="offer", what=what, qty=str(qty), unit="")
        self.honest.offers[record.ref] = (name, what, qty)

    def request(self) -> None:
        if not self.honest.offers:
            return
        ref = self.rng.choice(sorted(self.honest.offers))
        owner = self.honest.offers[ref][0]
        if owner == "Elm Street":
            key, device, name = RIVER, ROSA, "Riverside"
        else:
            device = self.rng.choice([ADA, BEN])
            key, name = self.elm_key(device), "Elm Street"
        qty = Decimal(self.rng.randrange(1, 5))
        record = self.say(key, device, op="request", offer=ref, qty=str(qty), by="m")
        self.honest.requests[record.ref] = (name, ref, qty)

    def answer(self) -> None:
        waiting = sorted(r for r in self.honest.requests if r not in self.honest.answers)
        if not waiting:
            return
        ref = self.rng.choice(waiting)
        key, device = self.offering(ref)
        accept = self.rng.randrange(2)
        self.say(key, device, op="answer", request=ref, accept=accept)
        self.honest.answers[ref] = {accept}

    def offering(self, request: str) -> tuple[SigningKey, bytes]:
        owner = self.honest.offers[self.honest.requests[request][1]][0]
        if owner == "Riverside":
            return RIVER, ROSA
        device = self.rng.choice([ADA, BEN])
        return self.elm_key(device), device

    def fulfil(self) -> None:
        accepted = sorted(r for r, a in self.honest.answers.items() if 1 in a)
        if not accepted:
            return
        ref = self.rng.choice(accepted)
        if self.rng.random() < 0.5:  # the giving group says it handed over
            key, device = self.offering(ref)
            self.say(key, device, op="fulfilled", request=ref)
            return
        if self.honest.requests[ref][0] == "Riverside":
            key, device = RIVER, ROSA
        else:
            device = self.rng.choice([ADA, BEN])
            key = self.elm_key(device)
        self.say(key, device, op="fulfilled", request=ref)
        self.honest.arrived.add(ref)

    # --- Xan -------------------------------------------------------------------------

    def xan(self) -> None:
        moves = ["offer", "ahead", "twice", "answer"]
        if not self.removed:
            moves += ["plant", "remove", "as-admin"]
        elif self.cutoff:
            moves += ["back-date"]
        move = self.rng.choice(moves)
        if move == "remove":
            self.remove_xan()
            return
        if move == "plant" and not self.planted:
            self.planted = True
            stay, gone = self.rng.choice(
                [
                    ([ADA, BEN, XAN], {}),  # keeping everyone
                    ([BEN, XAN], {ADA: 0}),  # Ada listed as gone
                    ([BEN, XAN], {}),  # Ada left out
                    ([ADA, XAN], {BEN: 0}),  # Ben cut out
                ]
            )
            self.log.hand_on(
                ELM_1,
                ELM_EVIL,
                device=XAN,
                stay=stay,
                gone=gone,
                admins=[XAN],
                record_id=b"\x00" + self.rng.randbytes(31),
            )
            if ADA not in stay:  # a member cutting out the admin: it never stands at all
                assert fold(NID, self.log.records).keys.current(ELM.public) != ELM_EVIL.public
            return
        record: Record | None = None
        if move == "offer":
            record = self.say(ELM_1, XAN, op="offer", what="Bike", qty="1")
        elif move == "answer" and self.honest.requests:
            ref = self.rng.choice(sorted(self.honest.requests))
            record = self.say(ELM_1, XAN, op="answer", request=ref, accept=1, low=True)
        elif move == "as-admin":
            # While in, on his chain: what only the admins the key's roster ranks say.
            if self.rng.random() < 0.5:
                record = self.say(ELM_1, XAN, op="leave")
            else:
                admitted = {"newcomer": STRANGER.public, "group_name": "Xan's"}
                record = self.say(ELM_1, XAN, op="admit", **admitted)  # type: ignore[arg-type]
        elif move == "ahead":
            at = self.log.seqs.get(XAN, 0) + self.rng.randrange(2, 1_000_000)
            record = self.say(ELM_1, XAN, op="leave", at=at)
        elif move == "twice" and XAN in self.log.heads:
            seq = self.log.seqs[XAN]
            record = self.say(ELM_1, XAN, op="leave", at=seq)  # a second record at his last seq
        elif move == "back-date":
            # Out, he signs another record for a place within his cutoff, on a fork from
            # the record before it: it must take back nothing, nor add anything.
            seq = self.rng.randrange(1, self.cutoff + 1)
            before = [r for r in self.path if r.seq == seq - 1]
            seqs, heads = dict(self.log.seqs), dict(self.log.heads)
            self.log.seqs[XAN], self.log.heads[XAN] = seq - 1, before[0].id if before else b""
            op = self.rng.choice(["leave", "admit", "offer"])
            fields = {"newcomer": STRANGER.public, "group_name": "Xan's"} if op == "admit" else {}
            if op == "offer":
                fields = {"what": "Back-dated", "qty": "1"}
            record = self.say(ELM_1, XAN, op=op, low=True, **fields)  # type: ignore[arg-type]
            self.log.seqs.update(seqs)
            self.log.heads.update(heads)
        if record is not None and self.removed:
            self.after_removal.append(record)

    def remove_xan(self) -> None:
        """Ada's node removes Xan: its handover cuts him off where his checked chain ends
        on her node (here: everything said so far)."""
        self.cutoff = fold(NID, self.log.records).heads.get(XAN, 0)
        at = [r for r in self.log.records if r.author == XAN and r.seq == self.cutoff]
        self.path = []  # his records that count: the chain to where his cutoff names
        while at:
            self.path.insert(0, at[0])
            at = [r for r in self.log.records if r.id == at[0].prev and r.author == XAN]
        ends = {XAN: self.path[-1].id} if self.path else {}
        self.log.hand_on(
            ELM_1,
            ELM_2,
            device=ADA,
            stay=[ADA, BEN],
            gone={XAN: self.cutoff},
            admins=[ADA],
            ends=ends,
        )
        self.removed = True
        # Xan goes on as if still in, from where his feed ends on his own node.
        self.log.seqs[XAN] = max((r.seq for r in self.log.records if r.author == XAN), default=0)

    # --- Mallory's group ---------------------------------------------------------------

    def mallory(self) -> None:
        refs = sorted(self.honest.offers) + sorted(self.honest.requests)
        move = self.rng.choice(
            ["copy-offer", "copy-request", "answer", "fulfil", "withdraw", "ahead", "twice"]
        )
        if move == "ahead":
            at = self.log.seqs.get(MAL_DEVICE, 0) + self.rng.randrange(2, 50)
            self.say(MAL, MAL_DEVICE, op="offer", what="Junk", qty="1", at=at)
            return
        if move == "twice" and MAL_DEVICE in self.log.heads:
            self.say(MAL, MAL_DEVICE, op="leave", at=self.log.seqs[MAL_DEVICE])
            return
        if not refs:
            return
        ref = self.rng.choice(refs)
        offer = ref if ref in self.honest.offers else self.honest.requests.get(ref, ("", ref))[1]
        if move == "copy-offer":
            self.say(MAL, MAL_DEVICE, low=True, op="offer", named=ref, what="Mine", qty="99")
        elif move == "copy-request":
            self.say(
                MAL, MAL_DEVICE, low=True, op="request", named=ref, offer=offer, qty="99", by="x"
            )
        elif move == "answer":
            self.say(MAL, MAL_DEVICE, low=True, op="answer", request=ref, accept=1)
        elif move == "fulfil":
            self.say(MAL, MAL_DEVICE, low=True, op="fulfilled", request=ref)
        elif move == "withdraw":
            self.say(MAL, MAL_DEVICE, low=True, op="withdraw", offer=offer)


def run(seed: int) -> None:
    world = Run(seed)
    moves = [world.offer, world.request, world.answer, world.fulfil, world.xan, world.mallory]
    weights = [3, 3, 2, 2, 2, 3]
    for _ in range(world.rng.randrange(20, 60)):
        world.rng.choices(moves, weights)[0]()
    if not world.removed:
        world.remove_xan()  # his admins were told of what he did; they act
        world.xan()
        world.xan()
    records = world.log.records
    state = fold(NID, records)
    where = f"HEARTH_SEED={seed}"

    # The same whatever order the records come in (R12).
    for _ in range(3):
        shuffled = list(records)
        world.rng.shuffle(shuffled)
        assert fold(NID, shuffled) == state, f"{where}: the order of records matters"

    # Xan: nothing past his cutoff counts; his planted handover does not stand.
    assert state.keys.current(ELM.public) == ELM_2.public, where
    assert state.groups.get(ELM_2.public) == "Elm Street", where
    for record in world.after_removal:
        assert record.ref not in state.offers, where
        assert record.ref not in state.requests, where
    assert STRANGER.public not in state.groups, where
    for record in world.path:  # what he said while in counts, whatever he signs since
        if record.op == "offer":
            assert record.ref in state.offers, f"{where}: Xan took back what he said while in"
    counted = {r.id for r in records if r.author == XAN and r.seq > world.cutoff}
    assert not counted & {
        r.id for r in records if r.ref in state.offers or r.ref in state.requests
    }, where

    # Every honest offer and request is there as its group said it.
    for ref, (name, what, qty) in world.honest.offers.items():
        offer = state.offers.get(ref)
        assert offer is not None, f"{where}: an honest offer is lost"
        assert (offer.group_name, offer.what, offer.quantity) == (name, what, qty), where
        assert not offer.withdrawn, f"{where}: another group withdrew an offer"
    for ref, (name, offer_ref, qty) in world.honest.requests.items():
        request = state.requests.get(ref)
        assert request is not None, f"{where}: an honest request is lost"
        assert (request.group_name, request.offer, request.quantity) == (name, offer_ref, qty)
        answers = world.honest.answers.get(ref, set())
        status = "accepted" if 1 in answers else "declined" if answers else "pending"
        if request.status != status:
            # Only Xan, within his cutoff (while still in), may have answered for Elm Street.
            assert world.honest.offers[offer_ref][0] == "Elm Street", where
            assert request.status == "accepted", where
        assert request.fulfilled == (
            ref in world.honest.arrived and request.status == "accepted"
        ), f"{where}: a handoff fulfilled by someone other than its receiver"
    for request in state.requests.values():
        if request.status == "accepted":
            assert request.id in world.honest.requests, f"{where}: a cheat's request accepted"


@pytest.mark.parametrize("chunk", range(2))
def test_a_cheating_member_and_a_cheating_group_change_nothing_of_the_honest(chunk: int) -> None:
    chosen = seeds()
    for seed in chosen[chunk::2]:
        run(seed)
