"""The node's session with a relay (``hearth.protocol.sync.RelaySession``) as a state
machine: where it is, the one table it moves along, and what it refuses. Pure: frames in,
outputs out, no sockets."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from hearth.errors import ProtocolError
from hearth.protocol.frames import (
    Ack,
    CaughtUp,
    Deliver,
    Error,
    Frame,
    Mailbox,
    Publish,
    Register,
    Subscribe,
    Welcome,
)
from hearth.protocol.sync import (
    TRANSITIONS,
    Acked,
    Arrived,
    Event,
    Output,
    Paused,
    Refused,
    RelaySession,
    Send,
    SessionState,
    Settled,
    TopicPlan,
)

TOPIC = bytes(range(32))
WELCOME = Welcome(version=3, limits={})


def _session(*outgoing: tuple[bytes, bytes]) -> RelaySession:
    plan = TopicPlan(topic=TOPIC, relay_key=b"k" * 32, proof=b"p", after=0, outgoing=outgoing)
    return RelaySession(plans=[plan])


def _state(session: RelaySession) -> SessionState:
    """Where the session is (read through a call: each step may move it)."""
    return session.state


def _frames(outputs: Sequence[Output]) -> list[Frame]:
    return [o.frame for o in outputs if isinstance(o, Send)]


def test_a_session_greets_exchanges_settles_and_exchanges_again_when_more_is_published() -> None:
    session = _session((b"one", b"sealed one"))
    assert _state(session) is SessionState.NEW
    session.start()
    assert _state(session) is SessionState.GREETING
    assert (session.welcomed, session.settled) == (False, False)
    sent = _frames(session.handle(WELCOME))
    assert [type(f) for f in sent] == [Register, Subscribe, Publish]
    assert _state(session) is SessionState.EXCHANGING
    assert session.welcomed
    assert session.handle(Deliver(topic=TOPIC, cursor=4, envelope=b"theirs")) == [
        Arrived(TOPIC, 4, b"theirs")
    ]
    assert session.handle(CaughtUp(topic=TOPIC, cursor=4)) == []
    assert session.handle(Ack(id=b"one", cursor=5)) == [Acked(b"one", 5), Settled()]
    assert _state(session) is SessionState.SETTLED
    assert session.settled
    # Live: what others publish still arrives, and our own next bundle goes out at once.
    assert session.handle(Deliver(topic=TOPIC, cursor=6, envelope=b"more")) == [
        Arrived(TOPIC, 6, b"more")
    ]
    assert [type(f) for f in _frames(session.publish([(b"two", b"sealed two")]))] == [Publish]
    assert _state(session) is SessionState.EXCHANGING
    assert session.handle(Ack(id=b"two", cursor=7)) == [Acked(b"two", 7), Settled()]


def test_bundles_published_before_the_welcome_wait_for_it() -> None:
    session = _session()
    assert session.publish([(b"early", b"sealed")]) == []
    assert session.resume() == []
    session.start()
    assert session.publish([(b"early2", b"sealed")]) == []
    assert _state(session) is SessionState.GREETING
    sent = _frames(session.handle(WELCOME))
    assert [type(f) for f in sent] == [Register, Subscribe, Publish, Publish]


def test_a_rate_limited_bundle_is_sent_again_after_the_pause() -> None:
    session = _session((b"one", b"sealed one"))
    session.start()
    session.handle(WELCOME)
    out = session.handle(Error(id=b"one", code="rate-limited", message="slow down"))
    assert out == [Paused(1.0)]
    assert _frames(session.resume()) == [Publish(envelope=b"sealed one")]


def test_a_relay_that_refuses_the_hello_is_refused_before_any_welcome() -> None:
    session = _session()
    session.start()
    out = session.handle(Error(id=b"", code="version", message="too old"))
    assert out == [Refused(b"", "version", "too old")]
    assert _state(session) is SessionState.GREETING


@pytest.mark.parametrize(
    ("before", "frame", "expected"),
    [
        ([], WELCOME, "welcome frame while new"),
        ([], Deliver(topic=TOPIC, cursor=1, envelope=b"x"), "deliver frame while new"),
        (["start"], Deliver(topic=TOPIC, cursor=1, envelope=b"x"), "while greeting"),
        (["start"], Ack(id=b"x", cursor=1), "ack frame while greeting"),
        (["start", "welcome"], WELCOME, "welcome frame while exchanging"),
    ],
)
def test_a_frame_the_table_does_not_hold_ends_the_exchange(
    before: list[str], frame: Frame, expected: str
) -> None:
    session = _session((b"one", b"sealed"))
    if "start" in before:
        session.start()
    if "welcome" in before:
        session.handle(WELCOME)
    state = session.state
    with pytest.raises(ProtocolError, match=expected):
        session.handle(frame)
    assert _state(session) is state
    if state is SessionState.NEW:
        with pytest.raises(ProtocolError, match="settle while new"):
            session._move(Event.SETTLE)


def test_frames_for_another_machine_are_ignored_in_every_state_after_the_hello() -> None:
    session = _session()
    session.start()
    mailbox = Mailbox(nameplate=7, body=b"for the invite machine")
    assert session.handle(mailbox) == []
    session.handle(WELCOME)
    assert _state(session) is SessionState.EXCHANGING
    assert session.handle(CaughtUp(topic=TOPIC, cursor=0)) == [Settled()]
    assert session.handle(mailbox) == []
    assert session.settled


def test_the_table_says_where_every_state_goes_and_only_settling_leaves_exchanging() -> None:
    """Every state is reached and left; SETTLED is entered only by settling."""
    states = {state for state, _ in TRANSITIONS} | set(TRANSITIONS.values())
    assert states == set(SessionState)
    into_settled = {(s, e) for (s, e), t in TRANSITIONS.items() if t is SessionState.SETTLED}
    assert {e for s, e in into_settled if s is not SessionState.SETTLED} == {Event.SETTLE}
    assert all(e is not Event.START for s, e in TRANSITIONS if s is not SessionState.NEW)
