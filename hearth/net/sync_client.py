"""Syncing a node with its relays and peers over WebSockets: the thin adapter around
``RelaySession``.

For each relay: open a WebSocket, let the session say what to send, hand arriving bundles
to the intake, remember per relay how far we have read and which bundles it has. A peer
node (another member's ``hearth serve --listen``) is dialled the same way, with version
vectors instead of cursors. A one-shot sync ends when the session settles; a live one
(``hearth serve``) keeps the connection and publishes new bundles as they appear.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from hearth.errors import HearthError, ProtocolError, TransportError
from hearth.ledger import membership_rules
from hearth.ledger.ledger import LIVE
from hearth.neighbourhood import participation
from hearth.net.connect import answer_within, open_websocket
from hearth.net.dialled_peers import note_peer_device, note_peer_has
from hearth.node.changes import SyncAttempted
from hearth.node.node import Node
from hearth.protocol.bundle import (
    MAX_BUNDLE,
    cover_proof,
    encode_snapshot,
    freeze_proof,
    open_envelope,
    parse_envelope,
    peer_proof,
    registration_proof,
)
from hearth.protocol.connection import Connection, Role
from hearth.protocol.frames import DeviceProof
from hearth.protocol.sync import (
    Acked,
    Arrived,
    Output,
    Paused,
    PeerHas,
    Refused,
    RelaySession,
    Send,
    Settled,
    TopicPlan,
)
from hearth.validity import snapshots, steps
from hearth.validity.intake import Verdict, take_in, take_snapshot_steps, tallied

__all__ = [
    "RelayReport",
    "give_snapshots",
    "plan_for",
    "record",
    "snapshot_due",
    "stay_connected",
    "sync_relay",
    "sync_relays",
]

log = logging.getLogger(__name__)

MAX_SNAPSHOT = MAX_BUNDLE - 64 * 1024  # room for the bundle's own fields
_KEEPALIVE_S = 5.0  # well inside any heartbeat timeout (the relay's default: 15 s)
STILL_UP_S = 60.0
"""How often a live link that has settled says it is still up (in the sync log), so that
"Up to date" stays true of a quiet connection: a dead one is closed by the heartbeat."""


@dataclass
class RelayReport:
    """How one relay's (or peer's) sync went."""

    url: str
    peer: bool = False
    ok: bool = False
    sent: int = 0
    received: int = 0
    applied: int = 0
    rejected: int = 0
    damaged: int = 0  # of those rejected: not what was sent, to be read again (R16)
    snapshots: int = 0  # snapshots taken, each with the bundles it covers (R13)
    refused: list[str] = field(default_factory=list)
    error: str = ""
    skipping: set[bytes] = field(default_factory=set)  # topics whose cursor must not move
    # A snapshot read from a relay waits, with the bundles that follow it, until the relay
    # has sent them all: it is checked against the bundles it covers (R13).
    pending: dict[bytes, _Pending] = field(default_factory=dict)
    looked: set[bytes] = field(default_factory=set)  # topics whose first bundle was seen


@dataclass
class _Pending:
    """A snapshot from a relay and the bundles that came after it, not yet taken in."""

    snapshot: bytes
    cursor: int
    opener: snapshots.Opener  # opens the bundles as they come (R13)
    bundles: list[tuple[Arrived, bytes | None]] = field(default_factory=list)  # with ids
    size: int = 0  # bytes of the bundles held


MAX_PENDING_BYTES = 256 * 1024 * 1024
"""What may wait in memory with a snapshot (about 200,000 entries' bundles): past it the
snapshot is given up and what came is taken one by one, so that a relay that never
stops sending cannot fill a device's memory."""


def plan_for(
    node: Node, url: str, group_ids: Sequence[str], *, peer: bool = False
) -> list[TopicPlan]:
    """What to register, where to resume and what to upload at one relay or peer."""
    plans = []
    # Every epoch's topic: members who were offline during a removal still publish under the
    # old one, and the op that hands out the new key is published there too.
    every = [(group_id, keys) for group_id in group_ids for _, keys in node.feeds.epochs(group_id)]
    # Epochs older than the one sealed under now are superseded: relays are asked to freeze
    # their topics (after a grace period, so members away during the change catch up).
    current = {g: node.feeds.current(g)[0] for g in group_ids}
    numbers = {keys.epoch_id: number for g in group_ids for number, keys in node.feeds.epochs(g)}
    # A peer: the devices each group removed (the peer must not be one), once per group.
    departed = (
        {g: membership_rules.departed(node.view(g).tables["members"]) for g in group_ids}
        if peer
        else {}
    )
    for group_id, keys in every:
        topic = keys.topic
        if peer:  # what to upload follows from the peer's version vector (PeerHas)
            have = [(author, seq) for author, seq, _ in node.feeds.heads(group_id)]
            prove = functools.partial(peer_proof, keys)
            plans.append(
                TopicPlan(
                    topic=topic,
                    relay_key=keys.relay_key.public,
                    proof=b"",
                    after=0,
                    prove=prove,
                    have=have,
                    departed=departed[group_id],
                )
            )
            continue
        stored = _cursor(node, url, topic)
        after = max(stored, 0)  # -1: a snapshot was refused here; read everything, plainly
        # proofs of equivocation go on too, so every node judges alike (R4)
        outgoing = node.store.unsent_to(url, group_id, topic)
        plans.append(
            TopicPlan(
                topic=topic,
                relay_key=keys.relay_key.public,
                proof=registration_proof(keys),
                after=after,
                outgoing=outgoing,
                from_snapshot=stored == 0,
                freeze=freeze_proof(keys) if numbers[keys.epoch_id] < current[group_id] else b"",
            )
        )
    if not peer:  # the groups' neighbourhoods go through the groups' relays too
        joined = {m.id: m for g in group_ids for m in participation.memberships(node, g)}
        for joined_one in joined.values():
            waiting = participation.outgoing(node, joined_one, url)
            for keys in joined_one.every_keys:
                plans.append(
                    TopicPlan(
                        topic=keys.topic,
                        relay_key=keys.relay_key.public,
                        proof=registration_proof(keys),
                        after=max(_cursor(node, url, keys.topic), 0),
                        outgoing=waiting.get(keys.topic, []),
                    )
                )
    return plans


def _cursor(node: Node, url: str, topic: bytes) -> int:
    """How far this node has read a topic at a relay (0: not yet)."""
    return node.store.relay_cursor(url, topic)


def _snapshot_plans(node: Node, group_ids: Sequence[str]) -> list[TopicPlan]:
    """Each group's current topic, registered to publish a snapshot and read nothing."""
    plans = []
    for group_id in group_ids:
        keys = node.feeds.current_keys(group_id)
        plans.append(
            TopicPlan(
                topic=keys.topic,
                relay_key=keys.relay_key.public,
                proof=registration_proof(keys),
                after=0,
                read=False,
            )
        )
    return plans


OUTPUTS_AT_ONCE = 16  # bundles taken in between two turns of the event loop
SNAPSHOT_EVERY = 500  # bundles applied since the last snapshot this node gave a relay


def snapshot_due(
    node: Node, url: str, group_ids: Sequence[str]
) -> tuple[bytes, bytes, int, bytes] | None:
    """A snapshot to give this relay, if enough has happened since the last one.

    It must cover everything up to the cursor it claims, so none is made while a bundle
    waits for an earlier one.
    """
    for group_id in group_ids:
        keys = node.feeds.current_keys(group_id)
        covers = _cursor(node, url, keys.topic)
        last = node.store.published_snapshot(url, keys.topic)
        applied = node.feeds.applied_count(group_id)
        if covers <= 0 or node.feeds.waiting(group_id):
            continue
        if last and (last[0] >= covers or applied - last[1] < SNAPSHOT_EVERY):
            continue
        if not last and applied < SNAPSHOT_EVERY:
            continue
        # Read in this order — the cursor, the feeds' heads, then the ledger (caught up
        # with the store) — the snapshot holds at least what it claims even while another
        # process on this home takes bundles in.
        heads = node.feeds.heads(group_id)
        ledger = node.ledger(group_id)
        payload = encode_snapshot(
            [(LIVE, ledger.doc.save())]
            + [(name, doc.save()) for name, doc in sorted(ledger.archive_docs().items())],
            heads,
        )
        if len(payload) > MAX_SNAPSHOT:
            log.info("the ledger is too large for a one-bundle snapshot; skipping")
            continue
        envelope = node.feeds.seal_snapshot(group_id, payload)
        with node.store.write():
            node.store.note_published_snapshot(url, keys.topic, covers, applied)
        return envelope.id, envelope.encode(), covers, cover_proof(keys, envelope.id, covers)
    return None


def _is_snapshot(node: Node, envelope: bytes) -> bool:
    try:
        parsed = parse_envelope(envelope)
        found = node.feeds.keys_for_topic(parsed.topic)
        return found is not None and open_envelope(parsed, found[1]).kind == "snapshot"
    except ProtocolError:
        return False


def _forget_cursor(node: Node, url: str, topic: bytes) -> None:
    """Mark a topic at a relay to be read again from the start, without snapshots."""
    with node.store.write():
        node.store.restart_relay_cursor(url, topic)


def _remember(
    node: Node, url: str, *, topic: bytes | None = None, cursor: int = 0, has: bytes | None = None
) -> None:
    with node.store.write():
        if topic is not None:
            node.store.advance_relay_cursor(url, topic, cursor)
        if has is not None:
            node.store.note_relay_has(url, [has])


def _log_attempt(node: Node, report: RelayReport) -> None:
    now = node.clock.now_ms()
    with node.store.write():
        node.store.log_sync_attempt(report.url, now, ok=report.ok, error=report.error or None)
    node.changes.notify(SyncAttempted(report.url, report.ok))


def record(node: Node, url: str, outputs: Sequence[Output], report: RelayReport) -> list[Output]:
    """Carry out the outputs that touch only the node (bundles in, acknowledgements);
    return those that need the connection (sends, pauses, settling), in order."""
    remaining: list[Output] = []
    for output in outputs:
        if isinstance(output, Arrived):
            if output.topic in report.pending:
                pending = report.pending[output.topic]
                pending.bundles.append((output, pending.opener.add(output.envelope)))
                pending.size += len(output.envelope)
                if pending.size > MAX_PENDING_BYTES:
                    _give_up_pending(node, url, output.topic, report)
                continue
            if not report.peer and output.topic not in report.looked:
                report.looked.add(output.topic)
                # Asked for from the start (plan_for): a relay sends its snapshot first.
                if _cursor(node, url, output.topic) == 0 and _is_snapshot(node, output.envelope):
                    report.pending[output.topic] = _Pending(
                        output.envelope, output.cursor, snapshots.Opener(node)
                    )
                    continue
            _arrived(node, url, output, report)
        elif isinstance(output, Settled):
            _take_pending(node, url, report)
            remaining.append(output)
        elif isinstance(output, Acked):
            report.sent += 1
            # The relay answers in the order it stores, so by the time our bundle's ack
            # arrives, every bundle stored before it has been delivered to us: reading
            # may resume after the ack's cursor.
            topic = node.store.bundle_topic(output.id)
            if topic in report.skipping:
                topic = None
            _remember(node, url, topic=topic, cursor=output.cursor, has=output.id)
        elif isinstance(output, Refused):
            said = _relay_words(output.message)
            report.refused.append(f"{_relay_words(output.code, 40)}: {said}")
            log.warning("relay %s refused %s: %s", url, output.id.hex()[:12], said)
        else:
            remaining.append(output)
    return remaining


def _arrived(node: Node, url: str, output: Arrived, report: RelayReport) -> None:
    """Take in one bundle from a relay and move its cursor there."""
    outcome = take_in(node, output.envelope, source=url)
    if outcome.verdict is not Verdict.DUPLICATE:
        report.received += 1
    if outcome.damaged:
        # Not a verdict on the bundle: this topic is read again from where it was
        # before it, next time (R16).
        report.damaged += 1
        report.skipping.add(output.topic)
    if outcome.verdict is Verdict.REJECTED:
        report.rejected += 1
        if _is_snapshot(node, output.envelope):
            # What it covers will not come from this relay this time: read the
            # topic from the start, without snapshots, next time.
            _forget_cursor(node, url, output.topic)
            report.skipping.add(output.topic)
    report.applied += outcome.applied
    if output.topic not in report.skipping:
        _remember(node, url, topic=output.topic, cursor=output.cursor, has=_id(output.envelope))


def _give_up_pending(node: Node, url: str, topic: bytes, report: RelayReport) -> None:
    """Too much came after a snapshot: drop it and take what came one by one; the rest
    of the topic follows as it arrives."""
    pending = report.pending.pop(topic)
    pending.opener.close()
    log.warning(
        "more than %d MiB came after a snapshot from %s: taking it one by one instead",
        MAX_PENDING_BYTES // (1024 * 1024),
        url,
    )
    for arrived, _ in pending.bundles:
        _arrived(node, url, arrived, report)


def _take_pending(node: Node, url: str, report: RelayReport) -> None:
    """The relay has sent everything: take each waiting snapshot with the bundles that
    came after it (R13). Those it covers are taken with it; the rest — all of them if it
    was refused — go in one by one, as they would have without it."""
    steps.run(_pending_steps(node, url, report))


def _pending_steps(node: Node, url: str, report: RelayReport) -> steps.Steps[None]:
    """:func:`_take_pending` in steps (:mod:`hearth.validity.steps`): a connection's loop
    keeps answering while a long catch-up's snapshot is checked."""
    for topic, pending in report.pending.items():
        outcome, taken = yield from take_snapshot_steps(
            node, pending.snapshot, pending.opener, source=url
        )
        if outcome.verdict is not Verdict.DUPLICATE:
            report.received += 1 + len(taken)
        if outcome.damaged:
            report.damaged += 1
            report.skipping.add(topic)
        if outcome.verdict is Verdict.REJECTED:
            report.rejected += 1
            log.warning("a snapshot from %s was refused: %s", url, outcome.reason)
        report.applied += outcome.applied
        report.snapshots += outcome.verdict is Verdict.APPLIED
        # The cursor moves past the snapshot's place and what it took only once the rest
        # is taken too (each moves it as it goes): a device stopped meanwhile reads again
        # from the first it had not taken, and one arriving damaged is read again (R16).
        for arrived, bundle_id in pending.bundles:
            if bundle_id not in taken:
                _arrived(node, url, arrived, report)
        if topic not in report.skipping:
            cursors = [pending.cursor] + [a.cursor for a, i in pending.bundles if i in taken]
            own = _id(pending.snapshot)
            _remember_many(node, url, topic, max(cursors), [*taken, *([own] if own else [])])
            if outcome.verdict is Verdict.APPLIED and outcome.group_id:
                _relay_holds_snapshot(node, url, topic, outcome.group_id, max(cursors))
    report.pending.clear()


def _relay_holds_snapshot(node: Node, url: str, topic: bytes, group_id: str, cursor: int) -> None:
    """Note that this relay holds a snapshot of what this node now holds from it (the one
    it just took), as if this node had given it: the next one is due only after as much
    again has happened (:func:`snapshot_due`), not at once, the same again."""
    with node.store.write():
        node.store.note_published_snapshot(url, topic, cursor, node.feeds.applied_count(group_id))


def _remember_many(node: Node, url: str, topic: bytes, cursor: int, has: Sequence[bytes]) -> None:
    """:func:`_remember` for many bundles of one topic, in one write."""
    with node.store.write():
        node.store.advance_relay_cursor(url, topic, cursor)
        node.store.note_relay_has(url, has)


async def _run(
    node: Node,
    url: str,
    group_ids: Sequence[str],
    report: RelayReport,
    *,
    live: bool = False,
    poll_s: float = 0.5,
    snapshots_only: bool = False,
) -> None:
    """One connection to one relay or peer: until settled, or (``live``) until it drops;
    ``snapshots_only``: only give the relay the snapshots due (:func:`give_snapshots`)."""
    mark = start_mark = node.feeds.newest_arrival()
    said_mark = participation.newest_arrival(node)
    if snapshots_only:  # the snapshot's ack moves no cursor: it is in no device's feed
        plans = _snapshot_plans(node, group_ids)
    else:
        plans = plan_for(node, url, group_ids, peer=report.peer)
    session = RelaySession(
        plans=plans,
        device_key=node.identity.device_key if report.peer else None,
        nonce=secrets.token_bytes(32) if report.peer else b"",
    )
    topics = {plan.topic for plan in session.plans}
    conn = Connection(Role.CONNECTING)
    offered = {bundle_id for plan in session.plans for bundle_id, _ in plan.outgoing}
    async with (
        aiohttp.ClientSession() as http,
        await open_websocket(http, url) as ws,
    ):

        async def carry_out(outputs: list[Output]) -> bool:
            """Send what there is to send; ``False`` once a one-shot exchange has settled.

            A catch-up's frame carries many bundles: they are taken a few at a time, the
            loop let run between, so that heartbeats are answered and progress is told
            while a long one goes on. What arrives damaged or fails a rule is counted in
            memory meanwhile and written, and logged, once per source at the end: a frame
            of a hundred thousand bytes of junk from a lying relay costs no write each."""
            with tallied(node):
                for start in range(0, len(outputs), OUTPUTS_AT_ONCE):
                    if start:
                        await asyncio.sleep(0)
                    if not await carry_out_some(outputs[start : start + OUTPUTS_AT_ONCE]):
                        return False
                return True

        async def carry_out_some(outputs: list[Output]) -> bool:
            settled = next((i for i, o in enumerate(outputs) if isinstance(o, Settled)), None)
            if settled is not None and report.pending:
                # The relay has sent all: the snapshots waiting are taken in with the
                # loop let run (heartbeats, progress), before the rest is recorded.
                if not await carry_out_recorded(record(node, url, outputs[:settled], report)):
                    return False
                await steps.run_async(_pending_steps(node, url, report))
                outputs = outputs[settled:]
            return await carry_out_recorded(record(node, url, outputs, report))

        async def carry_out_recorded(outputs: list[Output]) -> bool:
            """Carry out what :func:`record` left for the connection."""
            for output in outputs:
                match output:
                    case Send(frame):
                        await ws.send_bytes(conn.send(frame))
                    case PeerHas(topic, have):
                        found = node.feeds.keys_for_topic(topic)
                        if found is not None:
                            note_peer_has(node.store, url, found[0], have)
                        lacking = [
                            b for b in node.feeds.lacking(topic, have) if b[0] not in offered
                        ]
                        offered.update(i for i, _ in lacking)
                        if not await carry_out(session.offer(topic, lacking)):
                            return False
                    case Paused(seconds):
                        await asyncio.sleep(seconds)
                        if not await carry_out(session.resume()):
                            return False
                    case Settled():
                        # What taking bundles in wrote here (a join confirmed, R14) goes
                        # out in this same sync, not at the next one.
                        written = [] if live else written_here(node, start_mark, topics, offered)
                        if written:
                            if not await carry_out(session.publish(written)):
                                return False
                            continue
                        # A node keeping a loop responsive leaves saving the document for
                        # a snapshot to its compaction process (hearth.net.compaction).
                        snapshot = (
                            None if node.compact_elsewhere else snapshot_due(node, url, group_ids)
                        )
                        if snapshot is not None:
                            if not await carry_out(session.publish_snapshot(*snapshot)):
                                return False
                            continue
                        report.ok = True
                        turned_away = (
                            session.refused_topics >= topics
                            if report.peer
                            else _relay_refuses_a_group(report.refused)
                        )
                        if turned_away:
                            report.ok = False
                            report.error = _why_turned_away(report.refused)
                        _log_attempt(node, report)
                        if turned_away or not live:
                            return False
                    case _:
                        raise AssertionError(f"unexpected output {output!r}")
            return True

        async def publish_new() -> None:
            """Live: send bundles stored since — written by this or any process on this
            home, or received elsewhere — that did not come from this relay or peer."""
            nonlocal mark, said_mark
            while True:
                await asyncio.sleep(poll_s)
                if _synced_topics(node, group_ids, peer=report.peer) != topics:
                    # A new group key or neighbourhood: its topic must be registered and
                    # read here too.
                    await ws.close(code=1000, message=b"new group key")
                    return
                arrived, mark = node.feeds.arrivals(mark)
                if not report.peer:
                    said, said_mark = participation.arrivals(node, said_mark)
                    arrived += said
                    if said:  # an answer or a fulfilment may be news for the ledger
                        for group_id in group_ids:
                            participation.reconcile(node, group_id)
                fresh = [
                    (i, e)
                    for i, topic, e in arrived
                    if topic in topics - session.refused_topics
                    and i not in offered
                    and not _has(node, url, i)
                ]
                offered.update(i for i, _ in fresh)
                if fresh:
                    await carry_out(session.publish(fresh))

        async def keep_alive() -> None:
            """Ping while we work through a long catch-up: the other side hears nothing
            from us meanwhile, and its answer to its own ping waits behind the bundles
            still queued for us, so it would take us for gone."""
            said_up = time.monotonic()
            while True:
                await asyncio.sleep(_KEEPALIVE_S)
                await ws.ping()
                if live and report.ok and time.monotonic() - said_up >= STILL_UP_S:
                    _log_attempt(node, report)  # quiet, not gone: nothing came or went
                    said_up = time.monotonic()

        publisher = asyncio.create_task(publish_new()) if live else None
        pinger = asyncio.create_task(keep_alive())
        try:
            if not await carry_out(session.start()):
                return
            greeted = False
            while True:
                # A relay that upgrades and then never says a word is given up on in
                # seconds, not after the whole sync's deadline.
                message = await (ws.receive() if greeted else answer_within(ws.receive()))
                greeted = True
                if message.type != aiohttp.WSMsgType.BINARY:
                    break
                frame = conn.receive(message.data)
                outputs = session.handle(frame)
                if isinstance(frame, DeviceProof):  # the peer proved which device it is
                    note_peer_device(node.store, url, session.peer_device)
                if not await carry_out(outputs):
                    return
                if live and report.ok and report.damaged:
                    # Caught up, with something damaged on the way: connect again (after
                    # a pause, stay_connected's backoff) to read it again from where it was.
                    await ws.close(code=1000, message=b"reading damaged bundles again")
                    return
                # aiohttp hands over buffered messages without suspending: let the rest of
                # the loop (a TUI, a listener) run between bundles.
                await asyncio.sleep(0)
        finally:
            pinger.cancel()
            if publisher is not None:
                publisher.cancel()
            for pending in report.pending.values():  # dropped before the relay sent all
                pending.opener.close()
            report.pending.clear()
        raise TransportError(f"The relay {url} closed the connection ({ws.close_code}).")


def written_here(
    node: Node, mark: int, topics: set[bytes], offered: set[bytes]
) -> list[tuple[bytes, bytes]]:
    """(id, envelope) of the bundles this device wrote on ``topics`` since ``mark`` (of
    :meth:`~hearth.node.feeds.Feeds.arrivals`) and not yet ``offered``, which they join."""
    mine = node.feeds.written_since(mark, node.identity.device_key.public)
    fresh = [(i, e) for i, topic, e in mine if topic in topics and i not in offered]
    offered.update(i for i, _ in fresh)
    return fresh


def why_failed(exc: BaseException) -> str:
    """What went wrong with a connection to a relay or peer, in words a member can act on."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "nothing answers at that address: it is not running, or the port is wrong"
        if isinstance(exc.os_error, socket.gaierror):
            return "its host name cannot be found: check the address, and that you are online"
        return f"cannot reach it: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, asyncio.TimeoutError):
        return "it stopped answering"
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return f"the connection failed ({exc.__class__.__name__}: {exc})"
    return str(exc) or exc.__class__.__name__


# What a relay answers when it will not keep what a group writes (its operator's
# allow-list, a ban, a dropped or frozen topic, no room): the sync has failed there, not
# gone well with nothing to do.
NOT_SERVED = frozenset(
    {
        "not-admitted",
        "topic-refused",
        "topic-held",
        "key-banned",
        "invite-used-up",
        "key-has-topic",
        "quota-exceeded",
        "disk-full",
        "relay-full",
    }
)


def _relay_refuses_a_group(refusals: Sequence[str]) -> bool:
    return any(refusal.partition(": ")[0] in NOT_SERVED for refusal in refusals)


def _why_turned_away(refusals: Sequence[str]) -> str:
    """Why a relay or peer and this node had no group to exchange, from what was refused."""
    for refusal in refusals:
        code, _, message = refusal.partition(": ")
        if code == "removed":  # this node's own words (RelaySession)
            return message
        if code in NOT_SERVED:
            # The other side's words, and only its word: said as such.
            return f'it will not keep this group ({code}), saying: "{message}"'
    return "this peer is in none of these groups"


_RELAY_WORDS_LIMIT = 300
"""Characters of a relay's own explanation shown to the member."""


def _relay_words(text: str, limit: int = _RELAY_WORDS_LIMIT) -> str:
    """What a relay or peer said, fit to show: printable characters only (no terminal
    escapes, no line of its own that would pass for Hearth's), on one line, cut short."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text[: limit * 4]).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


async def stay_connected(
    node: Node,
    url: str,
    group_ids: Sequence[str],
    *,
    peer: bool = False,
    backoff_max_s: float = 60.0,
) -> None:
    """Keep a live exchange with one relay (or peer) going, reconnecting with backoff;
    runs until cancelled."""
    delay = 1.0
    while True:
        report = RelayReport(url=url, peer=peer)
        try:
            await _run(node, url, group_ids, report, live=True)
        except (aiohttp.ClientError, OSError, HearthError, asyncio.TimeoutError) as exc:
            report.error = why_failed(exc)
            log.info("relay %s: %s; retrying in %.0f s", url, report.error, delay)
        report.ok = False
        _log_attempt(node, report)
        if (report.received or report.sent) and not report.damaged:
            delay = 1.0
        await asyncio.sleep(delay)
        delay = min(delay * 2, backoff_max_s)


def _synced_topics(node: Node, group_ids: Sequence[str], *, peer: bool) -> set[bytes]:
    """The topics :func:`plan_for` covers now (a new group key or neighbourhood adds one)."""
    topics = {keys.topic for g in group_ids for _, keys in node.feeds.epochs(g)}
    if not peer:
        topics |= {t for g in group_ids for t in participation.topics(node, g)}
    return topics


def _has(node: Node, url: str, bundle_id: bytes) -> bool:
    return node.store.relay_has(url, bundle_id)


def _id(envelope: bytes) -> bytes | None:
    try:
        return parse_envelope(envelope).id
    except ProtocolError:
        return None


async def sync_relay(
    node: Node,
    url: str,
    group_ids: Sequence[str],
    *,
    timeout: float,
    peer: bool = False,
    snapshots_only: bool = False,
    report: RelayReport | None = None,
) -> RelayReport:
    """One full exchange with one relay or peer; never raises, the report says what
    happened (``report``: filled in as it goes, for someone watching)."""
    report = report if report is not None else RelayReport(url=url, peer=peer)
    try:
        run = _run(node, url, group_ids, report, snapshots_only=snapshots_only)
        await asyncio.wait_for(run, timeout)
    except asyncio.TimeoutError:
        report.error = f"no answer within {timeout:g} s"
    except (aiohttp.ClientError, OSError, HearthError) as exc:
        report.error = why_failed(exc)
    report.ok = report.ok and not report.error
    _log_attempt(node, report)
    return report


PROGRESS_EVERY_S = 2.0
"""How often a sync that is still going says how far it has come."""


async def sync_relays(
    node: Node,
    urls: Sequence[str],
    group_ids: Sequence[str],
    *,
    timeout: float,
    peers: bool = False,
    on_progress: Callable[[Sequence[RelayReport]], None] | None = None,
    progress_every_s: float = PROGRESS_EVERY_S,
) -> list[RelayReport]:
    """Sync with every relay (or every peer) at once, each with its own deadline: one that
    is down, slow or frozen holds back none of the others (a group lists several relays
    so that one going away costs nothing). ``on_progress`` is shown the reports of the
    exchanges still going every ``progress_every_s`` while any is, so that a long
    catch-up or a slow relay is never a silent wait.

    The exchanges share the node's store safely: they take turns on the one event loop,
    and each writes what it receives before it yields. What one relay brought in is then
    offered to the others that answered, in one more round (the first round planned
    their uploads before it arrived). One report per URL, counts added up.
    """

    async def round_of(targets: Sequence[str]) -> list[RelayReport]:
        going = [RelayReport(url=url, peer=peers) for url in targets]
        watcher = asyncio.create_task(_watch(going, on_progress, progress_every_s))
        try:
            return list(
                await asyncio.gather(
                    *(
                        sync_relay(node, r.url, group_ids, timeout=timeout, peer=peers, report=r)
                        for r in going
                    )
                )
            )
        finally:
            watcher.cancel()

    reports = await round_of(urls)
    answered = [r.url for r in reports if r.ok]
    if len(answered) > 1 and any(r.received for r in reports):
        by_url = {r.url: r for r in reports}
        for again in await round_of(answered):
            first = by_url[again.url]
            for count in ("sent", "received", "applied", "rejected", "damaged", "snapshots"):
                setattr(first, count, getattr(first, count) + getattr(again, count))
            first.refused += again.refused
            first.ok, first.error = again.ok, again.error
    return reports


async def _watch(
    reports: Sequence[RelayReport],
    on_progress: Callable[[Sequence[RelayReport]], None] | None,
    every_s: float,
) -> None:
    if on_progress is None:
        return
    while True:
        await asyncio.sleep(every_s)
        # A report is finished once it is ok or has an error; the rest are still going.
        going = [r for r in reports if not r.ok and not r.error]
        if going:
            on_progress(going)


async def give_snapshots(
    node: Node, urls: Sequence[str], group_ids: Sequence[str], *, timeout: float
) -> list[RelayReport]:
    """Give each relay the snapshot due there, if any, and nothing else.

    For the compaction process beside a node's own loop (``hearth serve``, the app): it
    takes in nothing, so it neither repeats the loop's work nor holds the store's write
    lock while the loop waits for it, and it leaves how far the node has read each relay
    to the loop. A snapshot covers what the node had taken in from that relay when it was
    made (:func:`snapshot_due`). All relays at once, as :func:`sync_relays`: a frozen one
    holds back none of the others.
    """
    return list(
        await asyncio.gather(
            *(
                sync_relay(node, url, group_ids, timeout=timeout, snapshots_only=True)
                for url in urls
            )
        )
    )
