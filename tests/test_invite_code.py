"""Invite codes: the SPAKE2 exchange of both sides, message by message, with the relay's
mailbox played by the test (it sees every message, as a relay would)."""

from __future__ import annotations

import copy
import math
import os
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearth.crypto import SigningKey
from hearth.errors import UsageError
from hearth.protocol.invite_code import (
    MAX_NAMEPLATE,
    Failed,
    InviteCode,
    InviteExchange,
    JoinerIntroduced,
    Send,
    TokenReceived,
    Verified,
    parse_code,
)
from hearth.protocol.words import V1_WORDS, WORDS


def pair(
    inviter_code: InviteCode, joiner_code: InviteCode
) -> tuple[InviteExchange, InviteExchange]:
    inviter = InviteExchange(inviter_code, inviter=True, random_bytes=os.urandom)
    joiner = InviteExchange(
        joiner_code,
        inviter=False,
        random_bytes=os.urandom,
        name="Ben",
        device=SigningKey.generate(),
    )
    return inviter, joiner


def relay_between(
    inviter: InviteExchange, joiner: InviteExchange, *, rounds: int = 10
) -> tuple[list[object], list[object]]:
    """Carry every Send to the other side until nothing more is sent; return each side's
    other events."""
    seen_by = {id(inviter): [], id(joiner): []}  # type: dict[int, list[object]]
    pending = [(joiner, e) for e in inviter.start()] + [(inviter, e) for e in joiner.start()]
    for _ in range(rounds):
        if not pending:
            break
        next_round = []
        for target, event in pending:
            assert isinstance(event, Send)
            other = inviter if target is joiner else joiner
            for out in target.receive(event.body):
                if isinstance(out, Send):
                    next_round.append((other, out))
                else:
                    seen_by[id(target)].append(out)
        pending = next_round
    return seen_by[id(inviter)], seen_by[id(joiner)]


def test_the_right_code_verifies_both_sides_with_the_same_phrase_and_delivers_the_token() -> None:
    code = InviteCode.new(7, os.urandom)
    inviter, joiner = pair(code, parse_code(str(code).upper().replace("-", " ")))
    inviter_saw, joiner_saw = relay_between(inviter, joiner)
    phrases = {e.phrase for e in inviter_saw + joiner_saw if isinstance(e, Verified)}
    assert len(phrases) == 1
    assert len(phrases.pop().split()) == 4
    (intro,) = [e for e in inviter_saw if isinstance(e, JoinerIntroduced)]
    assert intro.name == "Ben"
    assert intro.device_key == joiner.device.public  # type: ignore[union-attr]
    (sent,) = inviter.approve("hearth-token-1.example")
    assert joiner.receive(sent.body) == [TokenReceived("hearth-token-1.example")]  # type: ignore[union-attr]


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_every_two_invite_words_differ_in_two_letters_and_none_starts_another() -> None:
    assert len(set(WORDS)) == len(WORDS) == 256
    close = [
        (a, b)
        for n, a in enumerate(WORDS)
        for b in WORDS[n + 1 :]
        if _edit_distance(a, b) < 2 or a.startswith(b) or b.startswith(a)
    ]
    assert close == []


def test_a_code_shown_with_the_first_word_list_still_joins_with_the_same_phrase() -> None:
    # An inviter on an older Hearth shows "willow"; a joiner on this one types it.
    old = InviteCode(7, ("pillow", "willow", "honeybee"))
    assert {"willow", "honeybee"} <= set(V1_WORDS) - set(WORDS)
    inviter, joiner = pair(old, parse_code("7 pillow willow honeybee"))
    inviter_saw, joiner_saw = relay_between(inviter, joiner)
    phrases = [e.phrase for e in inviter_saw + joiner_saw if isinstance(e, Verified)]
    assert len(phrases) == 2
    assert len(set(phrases)) == 1
    assert all(w in V1_WORDS for w in phrases[0].split())  # as an older Hearth shows it


def test_a_wrong_code_fails_on_both_sides() -> None:
    code = InviteCode.new(7, os.urandom)
    wrong = InviteCode(
        7, (code.words[0], code.words[1], "mirror" if code.words[2] != "mirror" else "acorn")
    )
    inviter, joiner = pair(code, wrong)
    inviter_saw, joiner_saw = relay_between(inviter, joiner)
    assert any(isinstance(e, Failed) and "wrong" in e.reason for e in inviter_saw)
    assert any(isinstance(e, Failed) and "wrong" in e.reason for e in joiner_saw)
    assert not any(isinstance(e, (Verified, JoinerIntroduced)) for e in inviter_saw + joiner_saw)


def test_a_refusal_is_said_plainly() -> None:
    code = InviteCode.new(3, os.urandom)
    inviter, joiner = pair(code, code)
    relay_between(inviter, joiner)
    (refusal,) = inviter.refuse()
    (failed,) = joiner.receive(refusal.body)  # type: ignore[union-attr]
    assert failed == Failed("The inviter did not let you in.")


@pytest.mark.parametrize("flip", [0, 10, 20, 31, 32])
def test_a_relay_tampering_with_messages_gets_nothing(flip: int) -> None:
    code = InviteCode.new(5, os.urandom)
    inviter, joiner = pair(code, code)
    (pake,) = inviter.start()
    flipped = bytearray(pake.body)  # type: ignore[union-attr]
    flipped[1 + flip] ^= 1
    seen: dict[int, list[object]] = {id(inviter): [], id(joiner): []}
    pending = [(joiner, Send(bytes(flipped)))] + [(inviter, e) for e in joiner.start()]
    for _ in range(10):  # carry everything else faithfully until nothing more is sent
        next_round = []
        for target, event in pending:
            other = inviter if target is joiner else joiner
            for out in target.receive(event.body):  # type: ignore[union-attr]
                if isinstance(out, Send):
                    next_round.append((other, out))
                else:
                    seen[id(target)].append(out)
        pending = next_round
    # A changed SPAKE2 message is a wrong guess: nobody verifies, both sides give up.
    for side in (inviter, joiner):
        assert any(isinstance(e, Failed) for e in seen[id(side)])
        assert not any(isinstance(e, Verified) for e in seen[id(side)])
    assert joiner.receive(b"\x00garbage") == []  # over: nothing more happens


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7",
        "7-orchard-lantern",
        "x-acorn-amber-apple",
        "0-acorn-amber-apple",
        f"{MAX_NAMEPLATE + 1}-acorn-amber-apple",
        "7-acorn-amber-notaword",
    ],
)
def test_malformed_codes_are_refused_plainly(text: str) -> None:
    with pytest.raises(UsageError):
        parse_code(text)


def test_codes_carry_at_least_24_bits_spread_evenly() -> None:
    """A statistical check: 20,000 fresh codes use every word about equally often."""
    rng = random.Random(1)
    codes = [InviteCode.new(1, rng.randbytes) for _ in range(20_000)]
    counts = Counter(w for c in codes for w in c.words)
    assert len(WORDS) ** len(codes[0].words) >= 2**24
    assert set(counts) == set(WORDS)  # every word in use
    expected = 60_000 / len(WORDS)
    chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
    # 255 degrees of freedom: the 99.9th percentile is about 330.
    assert chi2 < 330, chi2
    assert math.isclose(sum(counts.values()), 60_000)


_CODE = InviteCode(9, ("acorn", "amber", "apple"))
_FRESH = pair(_CODE, _CODE)
for _side in _FRESH:
    _side.start()  # waiting for the other side's key-exchange message
_CONFIRMED = pair(_CODE, _CODE)
relay_between(*_CONFIRMED)  # both at the sealed-message stage


@settings(max_examples=2000, deadline=None)
@given(body=st.binary(max_size=200), confirmed=st.booleans())
def test_any_message_in_any_state_fails_closed(body: bytes, confirmed: bool) -> None:
    """Fuzz: whatever arrives, the exchange answers with events or a plain failure."""
    inviter, joiner = copy.deepcopy(_CONFIRMED if confirmed else _FRESH)
    for side in (inviter, joiner):
        events = side.receive(body)
        assert all(
            isinstance(e, (Send, Verified, JoinerIntroduced, TokenReceived, Failed)) for e in events
        )
        assert not any(isinstance(e, (TokenReceived, JoinerIntroduced)) for e in events)
