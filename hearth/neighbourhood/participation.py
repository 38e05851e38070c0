"""A node's neighbourhoods: joining them, saying things in them, and what they mean for the
group's own ledger (the rules are in :mod:`hearth.neighbourhood.rules`).

What a group keeps about a neighbourhood — its id, name, secret and the group's keys there —
is an entry in the group's own ledger (``meta``, under ``neighbourhood:ID``), so every
member's devices have it and nobody outside the group does. When someone leaves the group
an admin's node hands the group's key on to a new one and gives the neighbourhood a new
secret, sealed to the other groups (:func:`hand_on_keys`); both are kept in the ledger under
the group's new epoch, so the one who left has the old ones only.

The records said in a neighbourhood are bundles like any other, sealed under keys derived
from the neighbourhood's secret and carried through the group's relays (and peer relays to
other groups' relays); the node keeps them in ``neighbourhood_records``.

:func:`reconcile` keeps the two sides in step: an accepted request becomes an accepted
commitment in both groups' ledgers (keyed by the request, so recording it twice is
harmless); the giving side's fulfilment is said as handed over, and the handoff is
fulfilled in both ledgers once the receiving group says it arrived.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import unicodedata
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from hearth import lookup
from hearth.crypto import KemKey, SigningKey, open_sealed, seal_to
from hearth.errors import (
    HearthError,
    LedgerError,
    NotAuthorized,
    NotFound,
    ProtocolError,
    UsageError,
)
from hearth.ledger import entry_ids
from hearth.ledger import membership_rules as group_membership
from hearth.ledger.model import CommitmentStatus, Need, Resource, Role
from hearth.neighbourhood.matching import Match, Matcher
from hearth.neighbourhood.rules import (
    MAX_CARRIED,
    Offer,
    Record,
    Request,
    State,
    fold,
    handover_proof,
    neighbourhood_id,
    secret_id,
    sign_record,
    verify_record,
)
from hearth.node.changes import NeighbourhoodRecordKept
from hearth.node.node import Node
from hearth.protocol import codec
from hearth.protocol.bundle import (
    Envelope,
    EpochKeys,
    Inner,
    open_envelope,
    parse_envelope,
    seal_bundle,
)
from hearth.values import MAX_NAME, check_text, format_quantity

__all__ = [
    "STANDINGS",
    "Membership",
    "Taken",
    "add_offer",
    "admit",
    "answer",
    "arrivals",
    "create",
    "decode_token",
    "encode_token",
    "find",
    "find_offer",
    "hand_on_keys",
    "join",
    "keys_for_topic",
    "leave",
    "memberships",
    "need_matches",
    "newest_arrival",
    "outgoing",
    "reconcile",
    "request",
    "requests",
    "require_admin",
    "standing",
    "state",
    "take_record",
    "topics",
    "withdraw",
]

log = logging.getLogger(__name__)

_META = "neighbourhood:"
_KEY = "key:"  # a meta field per key the group has had in a neighbourhood, by public key
_KEM = "kem:"  # a meta field per sealing key (X25519) made for one of the group's keys
_SECRET = "secret:"  # noqa: S105 - a meta field per secret the neighbourhood changed to
_TOKEN_PREFIX = "hearth-neighbourhood-1."  # noqa: S105 - a prefix, not a secret
RECORD_KIND = "neighbourhood"


@dataclass(frozen=True, slots=True)
class Membership:
    """One group's place in one neighbourhood, as its ledger keeps it."""

    id: str
    name: str
    group_id: str
    secrets: tuple[tuple[int, bytes], ...]  # (generation, secret), oldest first
    key: SigningKey  # the group's key in the neighbourhood now
    held: frozenset[bytes]  # every key the group has had there (public halves)
    sealing: Mapping[bytes, tuple[KemKey, ...]]  # group key -> sealing keys made for it
    left: bool
    keyed_without: frozenset[bytes]  # the departed devices the key was made after

    @property
    def secret(self) -> bytes:
        """The neighbourhood's newest secret: what is said now is sealed under it."""
        return self.secrets[-1][1]

    @property
    def generation(self) -> int:
        """How many times the neighbourhood's secret has changed, as far as we know."""
        return self.secrets[-1][0]

    @property
    def keys(self) -> EpochKeys:
        """The topic, relay key and bundle keys of the newest secret: to say things."""
        return self._keys(self.secret)

    @property
    def every_keys(self) -> list[EpochKeys]:
        """Those of every secret we hold: to read (older ones hold what was said before)."""
        return [self._keys(secret) for _, secret in self.secrets]

    def _keys(self, secret: bytes) -> EpochKeys:
        nid = bytes.fromhex(self.id)
        return EpochKeys(
            group_id=nid, epoch_id=hashlib.sha256(b"neighbourhood" + nid).digest(), secret=secret
        )

    def __repr__(self) -> str:  # never print secrets
        return f"Membership({self.name!r}, group={self.group_id[:8]})"


def memberships(node: Node, group_id: str, *, include_left: bool = False) -> list[Membership]:
    """The neighbourhoods a group is in (or has left, if asked), by name."""
    found = []
    for key, raw in node.view(group_id).tables["meta"].items():
        if not key.startswith(_META) or not isinstance(raw, dict):
            continue
        nid = key.removeprefix(_META)
        try:
            latest = SigningKey(bytes.fromhex(str(raw["key"])))
            held = {
                bytes.fromhex(name.removeprefix(_KEY)): SigningKey(bytes.fromhex(str(secret)))
                for name, secret in raw.items()
                if name.startswith(_KEY)
            }
            membership = Membership(
                id=nid,
                name=str(raw["name"]),
                group_id=group_id,
                secrets=_secrets(raw),
                key=_key_now(node, nid, latest, held),
                held=frozenset(held) | {latest.public},
                sealing=_sealing(raw),
                left=bool(raw.get("left", False)),
                keyed_without=frozenset(
                    bytes.fromhex(d) for d in str(raw.get("keyed_without", "")).split(",") if d
                ),
            )
        except (KeyError, ValueError):
            log.warning("a damaged neighbourhood entry in the ledger: %s", key)
            continue
        if include_left or not membership.left:
            found.append(membership)
    return sorted(found, key=lambda m: (m.name.casefold(), m.id))


def _sealing(raw: dict[str, object]) -> dict[bytes, tuple[KemKey, ...]]:
    """The sealing keys a ledger entry holds (``kem:GROUP-KEY:KEM-KEY``), by group key."""
    found: dict[bytes, list[KemKey]] = {}
    for name, secret in raw.items():
        if name.startswith(_KEM):
            group_key = bytes.fromhex(name.removeprefix(_KEM).split(":")[0])
            found.setdefault(group_key, []).append(KemKey(bytes.fromhex(str(secret))))
    return {k: tuple(v) for k, v in found.items()}


def _secrets(raw: dict[str, object]) -> tuple[tuple[int, bytes], ...]:
    """Every secret of a neighbourhood its ledger entry holds, oldest first: the one it
    joined with (``secret``), and one per change since (``secret:HEX``, its generation).
    Two secrets of one generation (two groups changed it at once): the greater wins."""
    found = {bytes.fromhex(str(raw["secret"])): 0}
    for name, generation in raw.items():
        if name.startswith(_SECRET) and isinstance(generation, int):
            found[bytes.fromhex(name.removeprefix(_SECRET))] = generation
    return tuple(sorted((g, s) for s, g in found.items()))


def _key_now(node: Node, nid: str, latest: SigningKey, held: dict[bytes, SigningKey]) -> SigningKey:
    """The group's key in a neighbourhood: of the keys its ledger holds (two admins may
    each have handed the key on at once), the one the neighbourhood's records lead to;
    until they say, the one written last."""
    if len(held) < 2:
        return latest
    current = _fold(node, nid)
    # A key of ours that lost to a rival handover leads nowhere: follow one that leads in.
    for key in [latest.public, *sorted(held)]:
        now = current.keys.current(key)
        if now in held and now in current.groups:
            return held[now]
    now = current.keys.current(latest.public)
    return held.get(now, latest) if now is not None else latest


def _every(node: Node) -> Iterator[Membership]:
    for group in node.groups():
        yield from memberships(node, group.id)


def keys_for_topic(node: Node, topic: bytes) -> tuple[Membership, EpochKeys] | None:
    """The neighbourhood (of one of our groups) that a topic is, if any, with its keys."""
    return next(
        ((m, keys) for m in _every(node) for keys in m.every_keys if keys.topic == topic), None
    )


def topics(node: Node, group_id: str) -> set[bytes]:
    """Every topic of the group's neighbourhoods: one per secret each has had."""
    return {keys.topic for m in memberships(node, group_id) for keys in m.every_keys}


def find(node: Node, group_id: str, text: str = "") -> Membership:
    """The group's neighbourhood named or id-prefixed by ``text`` (the only one if empty)."""
    mine = memberships(node, group_id)
    if not mine:
        raise NotFound(
            "This group is in no neighbourhood yet: an admin can start one with "
            "`hearth neighbourhood create NAME` or join one with a code."
        )
    if not text.strip():
        if len(mine) == 1:
            return mine[0]
        names = ", ".join(m.name for m in mine)
        raise UsageError(f"Say which neighbourhood: {names} (use --neighbourhood NAME).")
    by_id = {m.id: m for m in mine}
    chosen = lookup.pick(
        [lookup.Candidate(m.id, m.name) for m in mine],
        text,
        noun="neighbourhood of this group",
        plural="neighbourhoods",
        listing="hearth neighbourhood list",
    )
    return by_id[chosen.id]


def require_admin(node: Node, group_id: str, doing: str) -> None:
    """Refuse, with words a member can act on, unless this node's member is an admin."""
    me = node.view(group_id).member(node.identity.member_id)
    if me.role is not Role.ADMIN or me.status != "active":
        raise NotAuthorized(f"Only the group's admins can {doing}; ask one of them.")


def _remember(
    node: Node,
    group_id: str,
    nid: str,
    name: str,
    secrets: Sequence[tuple[int, bytes]],
    key: SigningKey,
) -> KemKey:
    """Keep a neighbourhood in the group's ledger; returns the sealing key made for ``key``
    (for :func:`_sealing_record`)."""
    # Whoever left the group before it had this key never held it: no handover for them.
    gone = [
        c.key.hex()
        for c in group_membership.cards(node.view(group_id).tables["members"])
        if c.cutoff is not None
    ]
    kem, fields = _new_sealing_key(node, key)
    with node.change(group_id) as ledger:
        ledger.put_meta(
            _META + nid,
            {
                "name": name,
                "secret": secrets[0][1].hex(),
                **{_SECRET + s.hex(): g for g, s in secrets[1:]},
                "key": key.secret.hex(),
                _KEY + key.public.hex(): key.secret.hex(),
                "keyed_without": ",".join(sorted(gone)),
                "left": False,
                **fields,
            },
        )
    return kem


def _new_sealing_key(node: Node, key: SigningKey) -> tuple[KemKey, dict[str, str | int | bool]]:
    """A sealing key for one of the group's keys, and the ledger field that keeps it: other
    groups seal the neighbourhood's next secret to it."""
    kem = KemKey.generate(node.random_bytes)
    return kem, {f"{_KEM}{key.public.hex()}:{kem.public.hex()}": kem.secret.hex()}


def _sealing_record(kem: KemKey) -> dict[str, codec.Value]:
    return {"op": "seal_key", "kem": kem.public}


# --- records ------------------------------------------------------------------------------


def _append(
    node: Node,
    membership: Membership,
    fields: dict[str, codec.Value],
    *,
    under: EpochKeys | None = None,
) -> bytes:
    """Say something in a neighbourhood as our group: the next bundle of this device's
    feed there, kept for sending; returns the record's id. Sealed under the newest secret
    unless ``under`` says which."""
    device = node.identity.device_key
    rows = node.store.query(
        "SELECT seq, id FROM neighbourhood_records WHERE neighbourhood = ? AND author = ? "
        "ORDER BY seq DESC LIMIT 1",
        (membership.id, device.public),
    )
    seq, prev = (int(rows[0][0]), bytes(rows[0][1])) if rows else (0, b"")
    keys = under or membership.keys
    inner = Inner(
        kind=RECORD_KIND,
        group_id=keys.group_id,
        epoch_id=keys.epoch_id,
        author=device.public,
        seq=seq + 1,
        prev=prev,
        auth_heads=(),
        created_at=node.clock.now_ms(),
        payload=sign_record(membership.key, fields),
    )
    envelope = seal_bundle(inner, keys=keys, device=device, salt=node.random_bytes(32))
    with node.store.write():
        _keep(node, membership.id, envelope, inner)
    return envelope.id


def _keep(node: Node, nid: str, envelope: Envelope, inner: Inner) -> None:
    node.store.run(
        "INSERT OR IGNORE INTO neighbourhood_records(id, neighbourhood, author, seq, prev, "
        "payload, envelope, arrived) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            envelope.id,
            nid,
            inner.author,
            inner.seq,
            inner.prev,
            inner.payload,
            envelope.encode(),
            node.clock.now_ms(),
        ),
    )
    node.changes.notify(NeighbourhoodRecordKept(nid))


_MAX_AT_ONE_PLACE = 3  # records kept for one place in a device's feed (see take_record)
_MAX_STRANGERS = 64  # records kept under keys no group of the neighbourhood holds


@dataclass(frozen=True, slots=True)
class Taken:
    """What became of a record that arrived: whether it was new here, and how many records
    under strangers' keys were dropped to make room for it (see :func:`take_record`)."""

    new: bool
    dropped: int = 0


def take_record(
    node: Node, membership: Membership, envelope: Envelope, inner: Inner, *, named: bool = False
) -> Taken:
    """Keep a record that arrived (``new`` False if it was here already). Raises
    :class:`ProtocolError` for one that is not a group's signed record.

    Whether it counts is the fold's to say (:func:`hearth.neighbourhood.rules.checked`): only
    once its device's chain is whole up to it. A second record for one place in a device's
    feed is kept too — it is the evidence that cuts the device off there on every node —
    and a third: the device may be gone, and a handover name where its feed ends by that
    record (a node that kept two forks and not it would count the feed to the place
    before, and differ for good from one that had it first); no fourth, unless a
    handover carries it (``named``: a handover carries each record it names, so that
    even a device that sends many records for that place ahead of it splits no nodes) or
    a handover kept here names it (one too big to carry, arriving after).

    A record under a key the records link to no group there (:func:`rules.known_keys`:
    made up, or a group's whose admission has not arrived yet) is kept among the last
    :data:`_MAX_STRANGERS` such records only: the oldest makes room (``dropped``), so that
    records which will never count cost a bounded store, and a flood of them passes."""
    if inner.kind != RECORD_KIND or inner.seq < 1:
        raise ProtocolError(f"a neighbourhood bundle of unknown kind {inner.kind!r}")
    if (inner.seq == 1) != (inner.prev == b"") or len(inner.prev) not in (0, 32):
        raise ProtocolError("a neighbourhood record whose chain is broken")
    body = verify_record(inner.payload)
    held = {
        bytes(row[0])
        for row in node.store.query(
            "SELECT id FROM neighbourhood_records "
            "WHERE neighbourhood = ? AND author = ? AND seq = ?",
            (membership.id, inner.author, inner.seq),
        )
    }
    if envelope.id in held or (
        len(held) >= _MAX_AT_ONE_PLACE
        and not named
        and not _named_end(node, membership.id, inner.author, envelope.id)
    ):
        return Taken(new=False)
    if held:
        log.warning("a device signed two neighbourhood records for one place in its feed")
    with node.store.write():
        dropped = _make_room(node, membership.id, bytes(body["group"]))  # type: ignore[arg-type]
        _keep(node, membership.id, envelope, inner)
        if body["op"] == "rekey":
            _take_carried(node, membership, body)
    return Taken(new=True, dropped=dropped)


def _named_end(node: Node, nid: str, author: bytes, record_id: bytes) -> bool:
    """Whether a handover kept here names ``record_id`` as where ``author``'s feed ends: one
    too big for the handover to carry (past :data:`rules.MAX_CARRIED`) is kept whenever it
    comes, however many other records for its place are here (see :func:`take_record`).
    The ends named are remembered per node and read on from the last record looked at, so
    a flood of records past the cap costs no scan of the store each."""
    seen = _NAMED_ENDS.setdefault(node, {})
    last, named = seen.get(nid, (0, frozenset()))
    rows = node.store.query(
        "SELECT rowid, payload FROM neighbourhood_records WHERE neighbourhood = ? AND rowid > ? "
        "ORDER BY rowid",
        (nid, last),
    )
    if rows:
        more = set(named)
        for _, payload in rows:
            outer = codec.decode(bytes(payload))
            body = outer.get("body") if isinstance(outer, dict) else None
            ends = body.get("ends") if isinstance(body, dict) and body.get("op") == "rekey" else []
            more.update(
                (e[0], e[1])
                for e in (ends if isinstance(ends, list) else [])
                if isinstance(e, list)
                and len(e) == 2
                and isinstance(e[0], bytes)
                and isinstance(e[1], bytes)
            )
        last, named = int(rows[-1][0]), frozenset(more)
        seen[nid] = (last, named)
    return (author, record_id) in named


_NAMED_ENDS: weakref.WeakKeyDictionary[
    Node, dict[str, tuple[int, frozenset[tuple[bytes, bytes]]]]
] = weakref.WeakKeyDictionary()


def _take_carried(node: Node, membership: Membership, handover: Mapping[str, codec.Value]) -> None:
    """Keep the records a handover carries: each the one it names as where a gone device's
    feed ends (:func:`_hand_on`), so that every node holding the handover holds it, however
    many other records for its place the device signed and sent ahead of it. One that is
    not what the handover names, or does not open, is passed over (the handover is its
    writer's word, sound or not)."""
    ends = {
        bytes(e[1]): bytes(e[0])
        for e in handover.get("ends", [])  # type: ignore[union-attr]
        if isinstance(e, list)
        and len(e) == 2
        and isinstance(e[0], bytes)
        and isinstance(e[1], bytes)
    }
    for raw in handover.get("end_records", []):  # type: ignore[union-attr]
        if not isinstance(raw, bytes):
            continue
        try:
            envelope = parse_envelope(raw)
            keys = next(k for k in membership.every_keys if k.topic == envelope.topic)
            if ends.get(envelope.id) is None or not envelope.relay_signature_valid(
                keys.relay_key.public
            ):
                continue
            inner = open_envelope(envelope, keys)
            if inner.author != ends[envelope.id]:
                continue
            take_record(node, membership, envelope, inner, named=True)
        except (HearthError, StopIteration) as exc:
            log.warning("a record a neighbourhood key handover carries does not hold: %s", exc)


def _make_room(node: Node, nid: str, group: bytes) -> int:
    """Before keeping a record under ``group``: if that key is a stranger's and
    :data:`_MAX_STRANGERS` records of other devices under strangers' keys are kept already,
    drop the oldest of them; how many were dropped. The neighbourhood is folded again at
    most once every :data:`_MAX_STRANGERS` records that arrive (a flood of them costs no
    fold each); those since are read one by one."""
    cached = _FOLDED.get(node, {}).get(nid)
    if cached is not None and cached[1].known is not None and group in cached[1].known:
        return 0  # known before: keys stay known (no fold for each honest record)
    (_, last), base = cached if cached is not None else ((0, 0), None)
    since = node.store.query(
        "SELECT id, payload FROM neighbourhood_records WHERE neighbourhood = ? AND rowid > ?",
        (nid, last),
    )
    if base is None or base.known is None or len(since) >= _MAX_STRANGERS:
        base, since = _fold(node, nid), []
    known = base.known
    if known is None or group in known:
        return 0
    strangers = set(base.strangers) | {
        bytes(i) for i, payload in since if _group_of(bytes(payload)) not in known
    }
    if len(strangers) < _MAX_STRANGERS:
        return 0
    marks = ",".join("?" * len(strangers))
    rows = node.store.query(
        f"SELECT id, author FROM neighbourhood_records WHERE id IN ({marks}) ORDER BY rowid",  # noqa: S608 - placeholders only
        tuple(strangers),
    )
    # Never what this device said (our group's records may wait for its admission here).
    me = node.identity.device_key.public
    theirs = [bytes(i) for i, author in rows if bytes(author) != me]
    oldest = theirs[: max(len(theirs) - _MAX_STRANGERS + 1, 0)]
    if not oldest:
        return 0
    node.store.run_many("DELETE FROM neighbourhood_records WHERE id = ?", [(i,) for i in oldest])
    log.warning("dropped %d neighbourhood records under keys no group there holds", len(oldest))
    return len(oldest)


def _group_of(payload: bytes) -> bytes:
    """The group key a kept record's payload names (checked when it arrived)."""
    outer = codec.decode(payload)
    body = outer.get("body") if isinstance(outer, dict) else None
    group = body.get("group") if isinstance(body, dict) else None
    return group if isinstance(group, bytes) else b""


def outgoing(
    node: Node, membership: Membership, url: str
) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """(id, envelope) of every record of a neighbourhood that this relay has not
    acknowledged, by the topic (the secret) it was said under."""
    rows = node.store.query(
        "SELECT id, envelope FROM neighbourhood_records WHERE neighbourhood = ? "
        "AND id NOT IN (SELECT bundle_id FROM relay_has WHERE url = ?) ORDER BY author, seq",
        (membership.id, url),
    )
    by_topic: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for record_id, envelope in rows:
        topic = parse_envelope(bytes(envelope)).topic
        by_topic.setdefault(topic, []).append((bytes(record_id), bytes(envelope)))
    return by_topic


def newest_arrival(node: Node) -> int:
    """A mark for :func:`arrivals`: records kept after now come after it."""
    rows = node.store.query("SELECT MAX(rowid) FROM neighbourhood_records")
    return int(rows[0][0] or 0)


def arrivals(node: Node, after: int) -> tuple[list[tuple[bytes, bytes, bytes]], int]:
    """(id, topic, envelope) of records kept since a mark — said here, by another process
    on this home, or received — and the new mark."""
    rows = node.store.query(
        "SELECT rowid, id, neighbourhood, envelope FROM neighbourhood_records WHERE rowid > ? "
        "ORDER BY rowid",
        (after,),
    )
    ours = {m.id for m in _every(node)}
    found = [
        (bytes(i), parse_envelope(bytes(e)).topic, bytes(e)) for _, i, n, e in rows if n in ours
    ]
    return found, int(rows[-1][0]) if rows else after


_FOLDED: weakref.WeakKeyDictionary[Node, dict[str, tuple[tuple[int, int], State]]] = (
    weakref.WeakKeyDictionary()
)


def state(node: Node, membership: Membership) -> State:
    """What a neighbourhood's records add up to (folded again only when records came)."""
    return _fold(node, membership.id)


def _fold(node: Node, nid: str) -> State:
    mark_row = node.store.query(
        "SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM neighbourhood_records "
        "WHERE neighbourhood = ?",
        (nid,),
    )[0]
    mark = (int(mark_row[0]), int(mark_row[1]))
    folded = _FOLDED.setdefault(node, {})
    cached = folded.get(nid)
    if cached is not None and cached[0] == mark:
        return cached[1]
    rows = node.store.query(
        "SELECT id, author, seq, prev, payload FROM neighbourhood_records WHERE neighbourhood = ?",
        (nid,),
    )
    records = []
    for record_id, author, seq, prev, payload in rows:
        # Each was checked when it arrived (verify_record); here it is only read.
        outer = codec.decode(bytes(payload))
        if isinstance(outer, dict) and isinstance(outer.get("body"), dict):
            records.append(
                Record(
                    id=bytes(record_id),
                    body=outer["body"],
                    author=bytes(author),
                    seq=seq,
                    prev=None if prev is None else bytes(prev),
                )
            )
    result = fold(nid, records)
    folded[nid] = (mark, result)
    return result


# What each standing means for a member, and what to do about it.
STANDINGS = {
    "in": ("in, and what the group says there counts", ""),
    "waiting": (
        "not let in yet: the record admitting the group has not arrived",
        "Sync (`hearth sync`); if it stays like this, ask the group that invited you.",
    ),
    "no-key": (
        "the group's key there was handed on twice at once, so nothing it says counts",
        "Ask an admin of a group there for a code and join again "
        "(`hearth neighbourhood join CODE`).",
    ),
}


def standing(node: Node, membership: Membership) -> str:
    """Where our group stands in a neighbourhood: ``in``; ``no-key`` (a key it had was
    handed on twice at once, so nothing it says counts until a neighbour group invites it
    again); or ``waiting`` (the records letting it in have not arrived yet)."""
    current = state(node, membership)
    if current.keys.current(membership.key.public) in current.groups:
        return "in"
    if any(current.keys.current(key) is None for key in membership.held):
        return "no-key"
    return "waiting"


# --- joining and leaving -----------------------------------------------------------------


def create(node: Node, group_id: str, name: str) -> Membership:
    """Start a neighbourhood with our group as its first member."""
    require_admin(node, group_id, "start a neighbourhood")
    name = check_text(name, "neighbourhood name")
    key = SigningKey.generate(node.random_bytes)
    nonce = node.random_bytes(16)
    nid = neighbourhood_id(key.public, nonce)
    kem = _remember(node, group_id, nid, name, [(0, node.random_bytes(32))], key)
    membership = find(node, group_id, nid)
    group_name = node.view(group_id).group_name
    _append(
        node, membership, {"op": "found", "name": name, "nonce": nonce, "group_name": group_name}
    )
    _append(node, membership, _sealing_record(kem))
    return membership


def admit(node: Node, membership: Membership, newcomer: bytes, group_name: str) -> None:
    """Let another group in (its key, proven in the invite exchange)."""
    _append(
        node,
        _ranked(node, membership),
        {"op": "admit", "newcomer": newcomer, "group_name": check_text(group_name, "group name")},
    )


def _ranked(node: Node, membership: Membership) -> Membership:
    """The group's place in a neighbourhood, with a key whose roster ranks this device, so
    that what only admins say (letting a group in, leaving) counts when it says it: an
    admin promoted since the key's handover is not on its roster yet, and their node first
    hands the key on, keeping everyone in and ranking the admins as the group's membership
    has them now. A first key (no roster: any device of the group counts) stays."""
    current = state(node, membership)
    roster = current.keys.roster(membership.key.public)
    if roster is None or node.identity.device_key.public in roster:
        return membership
    view = node.view(membership.group_id)
    members = view.tables["members"]
    if group_membership.effective_role(members, node.identity.member_id) != "admin":
        return membership  # what it says as a member counts for nothing there
    cards = group_membership.cards(members)
    departed = sorted(c.key for c in cards if c.cutoff is not None)
    stay = sorted(c.key for c in cards if c.cutoff is None)
    _, _, excluded = node.feeds.current(membership.group_id)
    if not set(departed) <= excluded:  # the new key goes in the ledger under the new epoch
        raise UsageError(
            "Someone left the group and its keys are not renewed yet; sync (`hearth sync`) "
            "and try again."
        )
    _hand_on(node, membership, current, stay=stay, gone=departed, admins=_admins(members, cards))
    return find(node, membership.group_id, membership.id)


def encode_token(membership: Membership) -> str:
    """What a joining group needs, sealed to it by the invite exchange."""
    secrets: list[codec.Value] = [[generation, secret] for generation, secret in membership.secrets]
    body = codec.encode([2, membership.id, membership.name, secrets])
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode_token(text: str) -> tuple[str, str, list[tuple[int, bytes]]]:
    """(id, name, every (generation, secret) oldest first) from a neighbourhood token, or
    :class:`UsageError`. A token from before the secret could change carries one secret."""
    raw = text.strip().removeprefix(_TOKEN_PREFIX)
    try:
        value = codec.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, ProtocolError):
        value = None
    secrets: list[tuple[int, bytes]] = []
    if isinstance(value, list) and len(value) == 4:
        if value[0] == 1 and isinstance(value[3], bytes):
            secrets = [(0, value[3])]
        elif value[0] == 2 and isinstance(value[3], list):
            secrets = [
                (s[0], s[1])
                for s in value[3]
                if isinstance(s, list)
                and len(s) == 2
                and isinstance(s[0], int)
                and isinstance(s[1], bytes)
            ]
    if not (
        text.strip().startswith(_TOKEN_PREFIX)
        and isinstance(value, list)
        and isinstance(value[1], str)
        and isinstance(value[2], str)
        and secrets
        and all(len(s) == 32 for _, s in secrets)
        and secrets[0][0] == 0
    ):
        raise UsageError("The inviting group sent something that is not a neighbourhood invite.")
    return value[1], value[2], secrets


def join(node: Node, group_id: str, token: str, key: SigningKey) -> Membership:
    """Keep a neighbourhood our group was let into (``key``: the one the inviter admitted)."""
    nid, name, secrets = decode_token(token)
    kem = _remember(node, group_id, nid, name, secrets, key)
    membership = find(node, group_id, nid)
    _append(node, membership, _sealing_record(kem))
    return membership


def leave(node: Node, group_id: str, text: str = "") -> Membership:
    """Take our group out of a neighbourhood: its offers and requests go with it."""
    require_admin(node, group_id, "take the group out of a neighbourhood")
    membership = _ranked(node, find(node, group_id, text))
    _append(node, membership, {"op": "leave"})
    with node.change(group_id) as ledger:
        ledger.put_meta(_META + membership.id, {"left": True})
    return membership


def hand_on_keys(node: Node, group_id: str) -> bool:
    """What `hearth sync` and `hearth serve` do after a new epoch, on an admin's node: once
    someone who held the group's key in a neighbourhood is gone — or a member handed it on
    to a key of their own — hand it on to a new one and give the neighbourhood a new
    secret, sealed to every other group's sealing key (see :mod:`hearth.neighbourhood.rules`);
    a new secret too when the one in use was sealed to an old key of ours; publish a
    sealing key where the group has none yet (it joined before there were any); and seal
    the secrets we made to groups left out of them. Whether it did any of these."""
    view = node.view(group_id)
    try:
        me = view.member(node.identity.member_id)
    except NotFound:
        return False
    cards = group_membership.cards(view.tables["members"])
    departed = {c.key for c in cards if c.cutoff is not None}
    _, _, excluded = node.feeds.current(group_id)
    if (
        me.role is not Role.ADMIN
        or me.status != "active"
        or node.identity.device_key.public in departed
        or not departed <= excluded  # the new key goes in the ledger under the new epoch
    ):
        return False
    handed = False
    members = view.tables["members"]
    for membership in memberships(node, group_id):
        current = state(node, membership)
        ours = current.keys.current(membership.key.public)
        if not departed <= membership.keyed_without or _a_members_handover(
            node, members, membership, current
        ):
            stay = sorted(c.key for c in cards if c.key not in departed)
            admins = _admins(members, cards)
            _hand_on(node, membership, current, stay=stay, gone=sorted(departed), admins=admins)
            handed = True
        elif ours in current.groups and _exposed(membership, current):
            _reseal(node, membership, _others(membership, current))
            handed = True
        elif ours in current.groups and ours not in current.sealing:
            made = membership.sealing.get(membership.key.public)
            kem, fields = (made[0], {}) if made else _new_sealing_key(node, membership.key)
            with node.store.write():
                if fields:
                    with node.change(group_id) as ledger:
                        ledger.put_meta(_META + membership.id, fields)
                _append(node, membership, _sealing_record(kem))
            handed = True
        else:
            handed = _pass_on_secrets(node, membership, current) or handed
    return handed


def _a_members_handover(
    node: Node, members: group_membership.Table, membership: Membership, current: State
) -> bool:
    """Whether the key we hold was handed on by a device of no admin of ours (a member
    keeping or moving the group's key for themselves), and the key's roster ranks this
    device: a handover from here, keeping everyone the group's membership says is in, then
    stands against it (:mod:`hearth.neighbourhood.rules`), so that no member's handover lasts."""
    handover = current.keys.handed_on(membership.key.public)
    me = node.identity.device_key.public
    if handover is None or handover.author == me:
        return False
    if me not in (current.keys.roster(membership.key.public) or ()):
        return False  # the group's first key: nothing ranks us above the writer
    writer = next((c for c in group_membership.cards(members) if c.key == handover.author), None)
    return writer is None or group_membership.effective_role(members, writer.member_id) != "admin"


def _pass_on_secrets(node: Node, membership: Membership, current: State) -> bool:
    """Seal each secret our group holds to every group in that our group has not sealed
    it to (nor made one of its own under it): whether they were let in after it was made,
    ran an older Hearth, or the group that made it sealed it to some groups only — what
    another group's record says it sealed to whom is no proof (a wrap opens only for its
    group), and a group that writes under a secret others lack splits the neighbourhood.
    Whether there were any."""
    ours = current.keys.current(membership.key.public)
    mine = {secret_id(s): (g, s) for g, s in membership.secrets if g > 0}
    holding: dict[bytes, set[bytes]] = {}  # secret id -> groups we know hold it
    exposed = set()  # sealed to an old key of ours, whose sealing key someone who left holds
    for reseal in current.reseals:
        known = holding.setdefault(reseal.secret_id, set())
        known.add(reseal.by)  # said under its key now: it holds the secret
        if reseal.by == ours:
            known.update(reseal.wraps)  # ours: sealed as they should be
        if any(k in membership.held and k != ours for k in reseal.wraps):
            exposed.add(reseal.secret_id)
    passed = False
    for named in sorted(mine.keys() - exposed):
        generation, secret = mine[named]
        missing = sorted(
            g
            for g in current.sealing
            if g in current.groups and g != ours and g not in holding.get(named, set())
        )
        if not missing:
            continue
        to = {group: current.sealing[group] for group in missing}
        _say_reseal(node, membership, _reseal_record(node, generation, secret, to))
        passed = True
    return passed


def _hand_on(
    node: Node,
    membership: Membership,
    current: State,
    *,
    stay: list[bytes],
    gone: list[bytes],
    admins: list[bytes],
) -> None:
    """A new key for the group and a new secret for the neighbourhood, in the group's
    ledger under its new epoch; said under the neighbourhood's old secret, where everyone
    still there reads."""
    new = SigningKey.generate(node.random_bytes)
    kem, kem_field = _new_sealing_key(node, new)
    with node.store.write():
        with node.change(membership.group_id) as ledger:
            ledger.put_meta(
                _META + membership.id,
                {
                    "key": new.secret.hex(),
                    _KEY + new.public.hex(): new.secret.hex(),
                    "keyed_without": ",".join(d.hex() for d in gone),
                    **kem_field,
                },
            )
        ends = {d: _chain_end(node, membership.id, d) for d in gone}
        _append(
            node,
            membership,
            {
                "op": "rekey",
                "successor": new.public,
                "proof": handover_proof(membership.key.public, new),
                "stay": list(stay),
                "gone": [[d, seq] for d, (seq, _) in ends.items()],
                # The record each ends at, by id: signing another for a place before it
                # later takes back nothing (hearth.neighbourhood.rules.checked).
                "ends": [[d, end] for d, (seq, end) in ends.items() if seq],
                # And the records themselves: a node that has other records for their
                # places might not keep one arriving after them (take_record).
                "end_records": _envelopes(node, [end for seq, end in ends.values() if seq]),
                "admins": list(admins),
            },
        )
        handed_on = replace(membership, key=new)
        _append(node, handed_on, _sealing_record(kem))
        _reseal(node, handed_on, _others(membership, current))


_CARRIED_IN_ALL = 256 * 1024  # what one handover carries at most, well inside a bundle


def _envelopes(node: Node, record_ids: Sequence[bytes]) -> list[codec.Value]:
    """The envelopes of records this node holds, by id, for a handover to carry: each up to
    :data:`rules.MAX_CARRIED` (a larger one, such as a new secret sealed to very many
    groups, is named only, as before handovers carried records), and no more than
    :data:`_CARRIED_IN_ALL` together."""
    found: list[codec.Value] = []
    total = 0
    for record_id in record_ids:
        rows = node.store.query(
            "SELECT envelope FROM neighbourhood_records WHERE id = ?", (record_id,)
        )
        for (envelope,) in rows:
            size = len(envelope)
            if size <= MAX_CARRIED and total + size <= _CARRIED_IN_ALL:
                found.append(bytes(envelope))
                total += size
    return found


def _admins(members: group_membership.Table, cards: Sequence[group_membership.Card]) -> list[bytes]:
    """The devices of the group's admins (those gone too), most senior first (R7): what a
    handover says, so that the neighbourhood can settle a rival one by seniority and tell
    an admin's handover from a member's."""
    ranked = sorted(
        (group_membership.seniority(members, c.member_id), c.key)
        for c in cards
        if group_membership.effective_role(members, c.member_id) == "admin"
    )
    return [key for _, key in ranked]


def _others(membership: Membership, current: State) -> dict[bytes, bytes]:
    """The sealing keys of every group in but ours, by group key."""
    ours = current.keys.current(membership.key.public)
    return {g: kem for g, kem in current.sealing.items() if g in current.groups and g != ours}


def _reseal(node: Node, membership: Membership, others: Mapping[bytes, bytes]) -> None:
    """A new secret for the neighbourhood: kept in our ledger, and sealed to ``others``."""
    secret = node.random_bytes(32)
    generation = membership.generation + 1
    with node.store.write():
        with node.change(membership.group_id) as ledger:
            ledger.put_meta(_META + membership.id, {_SECRET + secret.hex(): generation})
        _say_reseal(node, membership, _reseal_record(node, generation, secret, others))


def _say_reseal(node: Node, membership: Membership, record: dict[str, codec.Value]) -> None:
    # Said under the neighbourhood's first secret: every group has it, also one left out of
    # later ones; the wraps open only with the sealing keys they name.
    _append(node, membership, record, under=membership.every_keys[0])


def _exposed(membership: Membership, current: State) -> bool:
    """Whether the secret in use was sealed to an old key of our group — by a group that
    had not heard of our handover — whose sealing key someone who left may hold."""
    ours = current.keys.current(membership.key.public)
    newest = secret_id(membership.secret)
    return any(
        reseal.secret_id == newest and any(k in membership.held and k != ours for k in reseal.wraps)
        for reseal in current.reseals
    )


def _reseal_record(
    node: Node, generation: int, secret: bytes, sealing: Mapping[bytes, bytes]
) -> dict[str, codec.Value]:
    """A new secret of the neighbourhood, sealed to each group's sealing key (by group key)."""
    wraps: list[codec.Value] = [
        [group, seal_to(kem, secret, node.random_bytes)] for group, kem in sorted(sealing.items())
    ]
    return {
        "op": "reseal",
        "generation": generation,
        "secret_id": secret_id(secret),
        "wraps": wraps,
    }


def _take_secrets(node: Node, membership: Membership, current: State) -> int:
    """Keep, in the group's ledger, each new secret of the neighbourhood sealed to one of
    our group's sealing keys; how many were new."""
    ours = current.keys.current(membership.key.public)
    # Ours now first; an older key's too, from a group that had not heard of our new one.
    keys = ([ours] if ours is not None else []) + sorted(membership.held - {ours})
    held = {secret for _, secret in membership.secrets}
    fields: dict[str, str | int | bool] = {}
    for reseal in current.reseals:
        for key in keys:
            sealed = reseal.wraps.get(key)
            opened = (
                [open_sealed(k, sealed) for k in membership.sealing.get(key, ())] if sealed else []
            )
            secret = next((s for s in opened if s and secret_id(s) == reseal.secret_id), None)
            if secret is not None:
                if secret not in held:
                    fields[_SECRET + secret.hex()] = reseal.generation
                    held.add(secret)
                break
    if fields:
        with node.change(membership.group_id) as ledger:
            ledger.put_meta(_META + membership.id, fields)
    return len(fields)


def _chain_end(node: Node, nid: str, device: bytes) -> tuple[int, bytes]:
    """Where this node has a device's checked chain in a neighbourhood end (whole,
    unbroken, not signed twice), and the id of its record there (b"": none): where it ends
    if it is gone. A record far ahead of the rest of its chain is no place to end: what it
    would let count has not been seen. One a handover ended already ends there."""
    current = _fold(node, nid)
    if device in current.ends:
        return current.ends[device]
    end = current.heads.get(device, 0)
    if not end:
        return 0, b""
    rows = node.store.query(
        "SELECT id FROM neighbourhood_records WHERE neighbourhood = ? AND author = ? AND seq = ?",
        (nid, device, end),
    )
    return end, bytes(rows[0][0])


# --- offers and requests -----------------------------------------------------------------


def find_offer(node: Node, group_id: str, text: str) -> tuple[Membership, Offer]:
    """An offer in one of the group's neighbourhoods, by id or id prefix, or by what it
    is of, typed in part ("compost"); see :mod:`hearth.lookup`."""
    every = [(m, o) for m in memberships(node, group_id) for o in state(node, m).offers.values()]
    chosen = lookup.pick(
        [
            lookup.Candidate(o.id, o.what, current=not o.withdrawn, former_id=o.name)
            for _, o in every
        ],
        text,
        noun="offer in this group's neighbourhoods",
        plural="offers",
        listing="hearth offer list",
    )
    return next((m, o) for m, o in every if o.id == chosen.id)


def add_offer(
    node: Node,
    group_id: str,
    resource_text: str,
    quantity: Decimal,
    *,
    neighbourhood: str = "",
    until: int | None = None,
    note: str = "",
) -> Offer:
    """Offer part of a resource the group has chosen to share (marked shareable)."""
    membership = find(node, group_id, neighbourhood)
    view = node.view(group_id)
    resource: Resource = view.resource(view.find("resources", resource_text))
    if resource.removed:
        raise NotFound(f"'{resource.name}' was removed from the ledger.")
    if not resource.shareable:
        raise UsageError(
            f"The group has not chosen to share '{resource.name}'; mark it shareable first "
            f"(`hearth resource edit {resource.name} --shareable`)."
        )
    if quantity > resource.quantity:
        unit = f" {resource.unit}" if resource.unit else ""
        raise UsageError(f"Only {resource.quantity}{unit} of '{resource.name}' are recorded.")
    if until is not None and until <= node.clock.now_ms():
        raise UsageError("That date has passed; an offer must run until a later day.")
    fields: dict[str, codec.Value] = {
        "op": "offer",
        "what": resource.name,
        "qty": str(quantity),
        "unit": resource.unit,
        "note": check_text(note, "note", empty_ok=True),
        "resource": resource.id,
    }
    if until is not None:
        fields["until"] = until
    said = _append(node, membership, fields)
    # Built here, not read back: until the records letting our group in have arrived,
    # the neighbourhood does not count what we say yet (it will once they do). Its id is
    # its record's, which no other group can give one of theirs.
    return Offer(
        id=_ref(said),
        group=membership.key.public,
        group_name=view.group_name,
        what=resource.name,
        quantity=quantity,
        unit=resource.unit,
        until=until,
        note=str(fields["note"]),
        resource=resource.id,
        withdrawn=False,
    )


def _ref(record_id: bytes) -> str:
    """What records call the offer or request a record made (:attr:`Record.ref`)."""
    return Record(id=record_id, body={}).ref


def withdraw(node: Node, group_id: str, text: str) -> Offer:
    """Take back one of our group's offers."""
    membership, offer = find_offer(node, group_id, text)
    if offer.group != membership.key.public:
        raise NotAuthorized(f"That offer is {offer.group_name}'s; only they can withdraw it.")
    _append(node, membership, {"op": "withdraw", "offer": offer.id})
    return replace(offer, withdrawn=True)


def request(
    node: Node, group_id: str, offer_text: str, quantity: Decimal, *, note: str = ""
) -> Request:
    """Ask a neighbour group for (part of) its offer, on behalf of our group."""
    membership, offer = find_offer(node, group_id, offer_text)
    if offer.group == membership.key.public:
        raise UsageError("That is your own group's offer.")
    if offer.withdrawn or (offer.until is not None and offer.until <= node.clock.now_ms()):
        raise UsageError(f"{offer.group_name} no longer offers {offer.what}.")
    left = state(node, membership).left(offer.id)
    if quantity > left:
        raise UsageError(
            f"{offer.group_name} has {format_quantity(left)} {offer.unit} of {offer.what} "
            "left to offer, not more.".replace("  ", " ")
        )
    note = check_text(note, "note", empty_ok=True)
    fields: dict[str, codec.Value] = {
        "op": "request",
        "offer": offer.id,
        "qty": str(quantity),
        "note": note,
        "by": node.identity.member_id,
    }
    said = _append(node, membership, fields)
    return Request(
        id=_ref(said),
        offer=offer.id,
        group=membership.key.public,
        group_name=node.view(group_id).group_name,
        quantity=quantity,
        note=note,
        by=node.identity.member_id,
        status="pending",
        fulfilled=False,
    )


def requests(node: Node, group_id: str) -> list[tuple[Membership, State, Request, str]]:
    """Every request to or from our group: (neighbourhood, its state, the request,
    "incoming" or "outgoing")."""
    found = []
    for membership in memberships(node, group_id):
        current = state(node, membership)
        for item in current.requests.values():
            offer = current.offers[item.offer]
            if offer.group == membership.key.public:
                found.append((membership, current, item, "incoming"))
            elif item.group == membership.key.public:
                found.append((membership, current, item, "outgoing"))
    return sorted(found, key=lambda f: (f[2].status != "pending", f[2].id))


def answer(node: Node, group_id: str, text: str, *, accept: bool) -> Request:
    """Accept or decline a request for one of our group's offers; accepting records the
    handoff as a commitment in our ledger at once."""
    every = requests(node, group_id)
    chosen = lookup.pick(
        [lookup.Candidate(f[2].id, "", former_id=f[2].name) for f in every],
        text,
        noun="request to or from this group",
        plural="requests",
        listing="hearth request list",
    )
    membership, current, item, direction = next(f for f in every if f[2].id == chosen.id)
    if direction != "incoming":
        raise NotAuthorized("Only the group that made the offer answers a request.")
    if item.status != "pending":
        raise UsageError(f"That request was {item.status} already.")
    if accept:
        offer = current.offers[item.offer]
        resource = node.view(group_id).resource(offer.resource)
        if item.quantity > resource.quantity:
            raise UsageError(
                f"Only {resource.quantity} of '{resource.name}' are recorded; "
                "decline, or record more first."
            )
    _append(node, membership, {"op": "answer", "request": item.id, "accept": int(accept)})
    reconcile(node, group_id)
    return state(node, membership).requests[item.id]  # the offer is ours: we are in


def need_matches(node: Node, group_id: str, needs: Sequence[Need]) -> dict[str, list[Match]]:
    """Need id -> what could meet it: the group's own resources, then neighbours' offers."""
    now = node.clock.now_ms()
    joined = memberships(node, group_id)
    ours = {m.key.public for m in joined}
    offers = {
        o.id: o for m in joined for o in state(node, m).open_offers(now) if o.group not in ours
    }
    matcher = Matcher(node.view(group_id).resources(), list(offers.values()))
    return {n.id: matcher.for_need(n) for n in needs}


# --- keeping the group's ledger and the neighbourhood in step ---------------------------


def _for_ledger(text: str, limit: int) -> str:
    """A neighbour group's text as the ledger takes it: a record carries up to 200
    characters of anything, a ledger's names fewer and no control characters."""
    text = " ".join("".join(" " if unicodedata.category(c) == "Cc" else c for c in text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _commitment_key(
    commitments: Mapping[str, object],
    current: State,
    item: Request,
    neighbour: str,
    *,
    tagged: bool = False,
) -> str:
    """What our ledger keeps an accepted request's commitment under: its id (made
    :func:`entry_ids.handoff_id` in a group whose entry ids are tagged); or, for a
    request said before requests were known by their record's id, the name its writer gave
    it, if a commitment with the same neighbour was recorded under that name. A name counts
    only if no other request carries it and it is no request's id: any group can put any
    name in a record, and one copied from another group's request must not reach that
    request's commitment (to have it fulfilled on the copier's word)."""
    own = entry_ids.handoff_id(item.id) if tagged else item.id
    if own in commitments or not item.name or item.name not in commitments:
        return own
    sharing = [r for r in current.requests.values() if r.name == item.name]
    recorded = commitments[item.name]
    if (
        len(sharing) > 1
        or item.name in current.requests
        or not isinstance(recorded, Mapping)
        or recorded.get("neighbour") != neighbour
    ):
        return own
    return item.name


def reconcile(node: Node, group_id: str) -> int:
    """Keep new secrets of the neighbourhoods sealed to our group, record accepted handoffs
    as commitments in our ledger and pass on fulfilments, both ways; returns how many
    changes it made."""
    made = 0
    me = node.identity.member_id
    tagged = node.tags_entry_ids(group_id)
    for membership in memberships(node, group_id):
        current = state(node, membership)
        made += _take_secrets(node, membership, current)
        ours = membership.key.public
        for handoff in current.handoffs():
            item, offer = handoff.request, handoff.offer
            if ours not in (offer.group, item.group):
                continue
            giving = offer.group == ours
            view = node.view(group_id)
            neighbour = _for_ledger(item.group_name if giving else offer.group_name, MAX_NAME)
            neighbour = neighbour or "a neighbour group"
            commitments = view.tables["commitments"]
            key = _commitment_key(commitments, current, item, neighbour, tagged=tagged)
            if key not in commitments:
                # The member who asked, on the asking side; whoever records it, on the other.
                member = item.by if not giving and item.by in view.tables["members"] else me
                what = f"{offer.what} {'to' if giving else 'from'} {neighbour}"
                try:
                    with node.change(group_id) as ledger:
                        ledger.add_handoff(
                            key,
                            _for_ledger(what, MAX_NAME),
                            neighbour=neighbour,
                            member=member,
                            giving=giving,
                            resource=offer.resource if giving else "",
                            quantity=item.quantity,
                            unit=_for_ledger(offer.unit, 30),
                        )
                except HearthError as exc:  # say, the resource was removed since
                    log.warning("a handoff could not be recorded: %s", exc)
                    continue
                made += 1
            status = node.view(group_id).commitment(key).status
            said = item.given if giving else item.fulfilled
            if giving and item.fulfilled and status is CommitmentStatus.ACCEPTED:
                # The receiving group says it arrived: only it can (a record of ours, or of
                # any other group, never moves our stock for it).
                try:
                    with node.change(group_id) as ledger:
                        ledger.change_commitment(key, CommitmentStatus.FULFILLED)
                except LedgerError as exc:  # say, not enough left in stock to give
                    log.warning("a fulfilled handoff could not be recorded: %s", exc)
                    continue
                made += 1
            elif status is CommitmentStatus.FULFILLED and not said:
                # Ours says it is done: we handed it over, or (receiving) it arrived.
                _append(node, membership, {"op": "fulfilled", "request": item.id})
                made += 1
    return made
