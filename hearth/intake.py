"""Taking in bundles from relays, peers and files, in SECURITY.md §4's order.

Cheapest check first, failing closed, storing nothing on failure:
size and format → duplicate id → our topic? → admission signature → AEAD open → author
signature → chain (seq and prev) → authorization (a device of a member, or a valid invite
claim; every change under one of the device's actor ids) → apply. A bundle that comes before an
earlier one of its feed, or from a device whose invite has not arrived yet, waits and is
retried whenever something else is applied. Every rejection is logged with its reason
and counted in the store.
"""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from dataclasses import dataclass

from hearth.crypto import key_id
from hearth.errors import HearthError, LedgerError, ProtocolError
from hearth.feeds import APPLIED, WAITING
from hearth.invite import decode_claim
from hearth.ledger import LedgerDoc
from hearth.ledger.automerge_doc import change_hash
from hearth.ledger.ledger import LIVE
from hearth.ledger.view import LedgerView
from hearth.node import Node, verify_genesis
from hearth.protocol.bundle import (
    Envelope,
    EpochKeys,
    Inner,
    decode_changes,
    decode_snapshot,
    open_envelope,
    parse_envelope,
)

__all__ = ["Outcome", "Verdict", "take_in"]

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    """What became of a bundle."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    WAITING = "waiting"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The verdict on one bundle, and how many bundles were applied because of it."""

    verdict: Verdict
    reason: str = ""
    group_id: str = ""
    applied: int = 0


class _Wait(Exception):
    """The bundle cannot be judged yet."""


def take_in(node: Node, data: bytes, *, source: str) -> Outcome:
    """Check a bundle from ``source`` and apply it if it is valid."""
    try:
        envelope = parse_envelope(data)
    except ProtocolError as exc:
        return _reject(node, source, str(exc))
    if node.feeds.get(envelope.id) is not None:
        return Outcome(verdict=Verdict.DUPLICATE)
    found = node.feeds.keys_for_topic(envelope.topic)
    if found is None:
        return _reject(node, source, "a bundle for a group this node is not in")
    group_id, keys = found
    if not envelope.relay_signature_valid(keys.relay_key.public):
        return _reject(node, source, "a bundle whose admission signature is not the group's")
    try:
        inner = open_envelope(envelope, keys)
    except ProtocolError as exc:
        return _reject(node, source, str(exc))
    try:
        with node.store.write():  # a rejection rolls back everything the bundle touched
            if inner.kind == "snapshot":
                outcome = _take_snapshot(node, group_id, envelope, inner)
            elif inner.kind == "content" and inner.seq >= 1:
                outcome = _judge(node, group_id, envelope, inner)
            else:
                raise ProtocolError(f"a bundle of unknown kind {inner.kind!r}")
    except HearthError as exc:
        return _reject(node, source, str(exc))
    if outcome.verdict is Verdict.APPLIED:
        with node.store.write():
            retried = _retry_waiting(node, group_id, keys)
        outcome = Outcome(
            verdict=Verdict.APPLIED, group_id=group_id, applied=outcome.applied + retried
        )
    return outcome


def _reject(node: Node, source: str, reason: str) -> Outcome:
    log.warning("rejected a bundle from %s: %s", source, reason)
    with node.store.write():
        node.store.run(
            "INSERT INTO rejections(at, source, reason) VALUES (?, ?, ?)",
            (node.clock.now_ms(), source, reason),
        )
    return Outcome(verdict=Verdict.REJECTED, reason=reason)


def _judge(node: Node, group_id: str, envelope: Envelope, inner: Inner) -> Outcome:
    feeds = node.feeds
    existing = feeds.at(group_id, inner.author, inner.seq)
    if existing is not None:
        if existing.id == envelope.id:
            return Outcome(verdict=Verdict.DUPLICATE)
        raise ProtocolError(
            f"equivocation: two different bundles at seq {inner.seq} from one device"
        )
    head_seq, head_id = feeds.head(group_id, inner.author)
    if inner.seq > head_seq + 1:
        feeds.keep(group_id, envelope, inner, WAITING)
        return Outcome(
            verdict=Verdict.WAITING,
            group_id=group_id,
            reason=f"waiting for seq {head_seq + 1} of its feed",
        )
    if inner.seq <= head_seq:
        return Outcome(verdict=Verdict.DUPLICATE)  # already applied, or inside a snapshot
    if inner.prev != head_id:
        raise ProtocolError("the bundle's chain is broken: it does not follow the one before")
    try:
        _apply(node, group_id, inner)
    except _Wait as wait:
        feeds.keep(group_id, envelope, inner, WAITING)
        return Outcome(verdict=Verdict.WAITING, group_id=group_id, reason=str(wait))
    feeds.keep(group_id, envelope, inner, APPLIED)
    return Outcome(verdict=Verdict.APPLIED, group_id=group_id, applied=1)


def _take_snapshot(node: Node, group_id: str, envelope: Envelope, inner: Inner) -> Outcome:
    """Take in a snapshot: merge its documents and skip the bundles it covers.

    A member's device may send one — a member this node knows, or one the snapshot itself
    lists (a new member knows few): only holders of the group's keys can make one.
    """
    seen = node.store.query("SELECT 1 FROM seen_snapshots WHERE id = ?", (envelope.id,))
    if seen:
        return Outcome(verdict=Verdict.DUPLICATE)
    docs, heads = decode_snapshot(inner.payload)
    if all(seq <= node.feeds.head(group_id, author)[0] for author, seq, _ in heads):
        # Nothing in it we lack (a node that kept up sees the snapshots others publish):
        # taking it in would only cost a load and a rebuild.
        node.store.run("INSERT INTO seen_snapshots(id) VALUES (?)", (envelope.id,))
        return Outcome(verdict=Verdict.DUPLICATE, group_id=group_id)
    group = node.group(group_id)
    incoming = {name: LedgerDoc.load(saved, group.actor) for name, saved in docs}
    with node.writing(group_id) as ledger:
        view = ledger.view
        author = inner.author.hex()
        if _device_actors(view, author) is None:
            listed = LedgerView.build([incoming[LIVE]]) if LIVE in incoming else None
            if listed is None or _device_actors(listed, author) is None:
                raise ProtocolError("a snapshot from a device that is not a member's")
        for name, doc in incoming.items():
            ledger.document(name).merge(doc)
        ledger.view.rebuild(ledger.docs())
        node.feeds.cover(group_id, heads)
        node.store.run("INSERT INTO seen_snapshots(id) VALUES (?)", (envelope.id,))
        for name in incoming:
            target = ledger.document(name)
            known = target.change_ids()
            waiting = [
                r.hash for r in node.store.changes_after(group_id, name, 0) if r.hash not in known
            ]
            node.store.put_snapshot(
                group_id, name, target.save(), node.store.last_seq(), keep=waiting
            )
    return Outcome(verdict=Verdict.APPLIED, group_id=group_id, applied=1)


def _device_actors(view: LedgerView, device_key: str) -> set[bytes] | None:
    """The actor ids a member's device card lists, or ``None`` if no member has the device."""
    for raw in view.tables["members"].values():
        devices = raw.get("devices")
        for card in devices.values() if isinstance(devices, dict) else ():
            if isinstance(card, dict) and card.get("key") == device_key:
                listed = card.get("actors")
                return {bytes.fromhex(a) for a in listed} if isinstance(listed, dict) else set()
    return None


def allowed_actors(node: Node, group_id: str, view: LedgerView, inner: Inner) -> set[bytes] | None:
    """The actor ids the bundle's author may write under (``None``: any), or raise why not.

    A member's device writes under the actor ids its card lists (SECURITY.md R2); an
    unknown device may write with a claim to an invite an admin recorded and nobody else
    used; the group's founding device may write before its card is known (R1).
    """
    listed = _device_actors(view, inner.author.hex())
    if listed is not None:
        return listed
    if inner.claim:
        claim = decode_claim(inner.claim)
        if claim.device_key != inner.author:
            raise ProtocolError("a join claim for another device")
        invite = view.tables["invites"].get(claim.invite_id)
        if invite is None:
            raise _Wait("waiting for the invite it claims")
        if not claim.verifies(bytes.fromhex(str(invite.get("key", "")))):
            raise ProtocolError("a join claim that the invite's key did not sign")
        claimed_by = invite.get("claimed_by")
        if isinstance(claimed_by, str) and claimed_by != key_id(claim.member_key):
            raise ProtocolError("a join claim for an invite someone else already used")
        return set(claim.actors)
    if verify_genesis(node.group(group_id).genesis).get("device_key") == inner.author.hex():
        return None
    raise ProtocolError("a bundle from a device that is not a member's")


def _apply(node: Node, group_id: str, inner: Inner) -> None:
    batches = decode_changes(inner.payload)
    with node.writing(group_id) as ledger:
        actors = allowed_actors(node, group_id, ledger.view, inner)
        by_doc: defaultdict[str, list[bytes]] = defaultdict(list)
        touched: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
        for doc, change, refs in batches:
            info = change_hash(change)
            if actors is not None and info.actor not in actors:
                raise ProtocolError("a change under an actor id that is not the author's")
            by_doc[doc].append(change)
            touched[doc] += refs
        for doc, changes in by_doc.items():
            infos = [(change_hash(c).hash, c) for c in changes]
            node.store.append_changes(group_id, doc, infos, local=False, touched=touched[doc])
            try:
                ledger.apply_remote_to(ledger.document(doc), changes, touched[doc])
            except LedgerError as exc:
                raise ProtocolError(f"its changes could not be applied ({exc})") from exc


def _retry_waiting(node: Node, group_id: str, keys: EpochKeys) -> int:
    """Apply waiting bundles that can now go; return how many did."""
    applied = 0
    progress = True
    while progress:
        progress = False
        for stored in node.feeds.waiting(group_id):
            head_seq, head_id = node.feeds.head(group_id, stored.author)
            if stored.seq != head_seq + 1 or stored.prev != head_id:
                continue
            envelope = parse_envelope(stored.envelope)
            inner = open_envelope(envelope, keys)
            try:
                with node.store.savepoint():
                    _apply(node, group_id, inner)
            except _Wait:
                continue
            except HearthError as exc:
                log.warning("dropping a waiting bundle: %s", exc)
                node.store.run("DELETE FROM bundles WHERE id = ?", (stored.id,))
                continue
            node.feeds.mark_applied(stored.id)
            applied += 1
            progress = True
    return applied
