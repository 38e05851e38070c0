"""Neighbourhoods: what groups tell each other, as signed records, and what follows from them.

A neighbourhood is a group of groups with its own secret (so its own topic, relay key and
bundle keys: relays see one more topic, nothing else). Each member group holds a
neighbourhood key, an Ed25519 key pair kept in the group's own ledger, so every member of
the group can speak for it there and nobody else can. Everything said in a neighbourhood
is a :class:`Record`: a small map signed by a group's key (carried in a bundle signed by
the writing device, like any other).

:func:`fold` turns the set of records into the neighbourhood's state, as a pure function of
that set (no arrival order, no clock): which groups are in, what they offer, what they
asked for and what became of it. The rules:

- the founding record is the one whose group key and nonce hash to the neighbourhood id
  (and that counts: not one written past a cutoff); a group is in once admitted by a group
  that is in (the founder first), out once it leaves (a group that wants back in is
  invited again under a new key). It is named by the groups that let it in at the first
  step any did, counting from the founder's (two at one step who disagree both show);
- what a group cannot take back — founding, letting a group in — counts on any unbroken
  fork of a device's feed that signed twice, unless a handover lists the device as gone;
- each device's records form a chain, as a group's feeds do (R3, R4): seq rises by one
  and prev names the record before. A record counts only once every record before it in
  its device's chain is here and matches (a gap waits); two records for one seq cut the
  device off at the seq before, on every node that holds both, and the groups' admins are
  told (:attr:`State.equivocations`);
- a group hands its key on to a new one (a ``rekey`` record, signed by the old key and
  proved by the new) when someone leaves it, since they still hold the old key. The
  handover lists the group's devices: those still in, and those gone, each with the last
  place in its checked chain that still counts. From then on a record under the old key
  counts only if a listed device wrote it, within its cutoff — and a later handover's
  cutoffs apply to it too. A handover also ranks the group's admins' devices, most senior
  first (R7's order); the handover that made a key gives that key's *roster*. Of two
  handovers of one key, one loses when the other — or a handover after it — has its
  writer out: lists it as gone (whatever its cutoff: a handover written in advance by
  someone the group then removes never stands) or does not list it at all. Between two
  admins the key's roster ranks, one written after the other removed its writer (past the
  cutoff it gives) loses first. When each has the other's writer out (two admins removing
  each other at once), or neither (two admins handing on at once), the senior writer's
  stands: by the key's roster, else by the order both
  handovers give alike (R17: never by a record id). Where the records cannot tell (a
  group's first key, its admins unranked yet), neither stands and the group has no key
  that counts until one of them is removed or it is invited again. A device the key's
  roster does not rank as an admin (a member) may hand the key on only keeping every
  admin of the roster: its handover counts for nothing otherwise;
- a group's sealing key (``seal_key``), and a new secret for the neighbourhood sealed to
  the groups' sealing keys (``reseal``), count only under the group's key now;
- letting a group in and leaving are the admins' to say: under a key whose roster ranks
  the group's admins, only a device it ranks says them (under a first key, which nothing
  ranks, any device of the group does);
- an offer, request, answer or fulfilment counts only from a group that is in: once a
  group leaves, nothing it offered, asked or answered counts any more (what the groups'
  own ledgers recorded of a handoff stays there). Its admissions still count — a group
  it let in stays in — since a set of records has no "before the leave";
- an offer or a request is known by the id of the record that made it (never by a name
  its writer chose), so no other group's record can replace or hide it, and only its own
  group can withdraw it or ask with it;
- only the offering group answers a request; if its members answer differently at the
  same time, accepting stands (a member's node has recorded the promise already);
- an accepted request is a handoff: the offering group may say it handed over (``given``),
  and it is fulfilled once the receiving group says it arrived.

Nothing here does I/O; ``hearth.neighbourhood.participation`` keeps the records and talks to the
node.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TypeGuard, TypeVar

from hearth.crypto import SigningKey, verify
from hearth.errors import ProtocolError, UsageError
from hearth.protocol import codec
from hearth.values import parse_quantity

__all__ = [
    "MAX_CARRIED",
    "Chains",
    "Handoff",
    "Keys",
    "Offer",
    "Record",
    "Request",
    "Reseal",
    "State",
    "checked",
    "fold",
    "handover_proof",
    "known_keys",
    "neighbourhood_id",
    "secret_id",
    "sign_record",
    "verify_record",
]

_T = TypeVar("_T")
_SIGNED = b"hearth/v1/neighbourhood-record\x00"
_HANDOVER = b"hearth/v1/neighbourhood-handover\x00"
_MAX_TEXT = 200
_MAX_DEVICES = 1000
_LAST_DAY_MS = 221_845_392_000_000  # 9000-01-01: any offer's last day fits a date
_MAX_WRAP = 256  # a sealed 32-byte secret: ephemeral key, nonce, ciphertext, tag
MAX_CARRIED = 16 * 1024  # a record a handover carries (one it names as a feed's end)
OPS = (
    "found",
    "admit",
    "leave",
    "rekey",
    "seal_key",
    "reseal",
    "offer",
    "withdraw",
    "request",
    "answer",
    "fulfilled",
)


def neighbourhood_id(founder: bytes, nonce: bytes) -> str:
    """The id of the neighbourhood founded by the group key ``founder`` with ``nonce``."""
    return hashlib.sha256(b"hearth/v1/neighbourhood" + founder + nonce).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Record:
    """One signed statement of a group in a neighbourhood, as stored and folded."""

    id: bytes  # the id of the bundle that carried it
    body: Mapping[str, codec.Value]  # "op", "group" (its key) and the op's fields
    author: bytes = b""  # the device whose feed carried it
    seq: int = 0  # its place in that feed
    prev: bytes | None = None  # the id of the record before it there (None: kept before
    # records were chained, so trusted in the order they were kept)

    @property
    def ref(self) -> str:
        """What other records call it by: the start of its id, which nobody can choose."""
        return self.id[:16].hex()

    @property
    def op(self) -> str:
        """What the record says: one of :data:`OPS`."""
        return str(self.body["op"])

    @property
    def group(self) -> bytes:
        """The key of the group that said it."""
        return bytes(self.body["group"])  # type: ignore[arg-type]

    def text(self, name: str) -> str:
        """A text field ("" if absent)."""
        value = self.body.get(name, "")
        return value if isinstance(value, str) else ""

    def blob(self, name: str) -> bytes:
        """A bytes field (b"" if absent)."""
        value = self.body.get(name, b"")
        return value if isinstance(value, bytes) else b""

    def number(self, name: str) -> int:
        """An integer field (0 if absent)."""
        value = self.body.get(name, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0


def sign_record(key: SigningKey, fields: Mapping[str, codec.Value]) -> bytes:
    """The payload of a record: ``fields`` with the group's key, signed by it."""
    body = {**fields, "group": key.public}
    signature = key.sign(_SIGNED + codec.encode(body))
    return codec.encode({"body": body, "sig": signature})


def handover_proof(old: bytes, new: SigningKey) -> bytes:
    """The new key's half of a handover: its holder agrees to take over from ``old``."""
    return new.sign(_HANDOVER + old + new.public)


def _check_handover(body: Mapping[str, codec.Value]) -> None:
    successor, proof = body.get("successor"), body.get("proof")
    stay, gone = body.get("stay"), body.get("gone")
    if not (
        _is_key(successor)
        and isinstance(proof, bytes)
        and isinstance(stay, list)
        and isinstance(gone, list)
        and len(stay) + len(gone) <= _MAX_DEVICES
        and all(_is_key(d) for d in stay)
        and all(
            isinstance(g, list)
            and len(g) == 2
            and _is_key(g[0])
            and isinstance(g[1], int)
            and not isinstance(g[1], bool)
            and g[1] >= 0
            for g in gone
        )
    ):
        raise ProtocolError("a neighbourhood key handover that is malformed")
    old = bytes(body["group"])  # type: ignore[arg-type]
    if not verify(successor, proof, _HANDOVER + old + successor):
        raise ProtocolError("a neighbourhood key handover the new key did not agree to")
    gone_devices = {g[0] for g in gone}
    ends = body.get("ends", [])
    if not (
        isinstance(ends, list)
        and len(ends) <= _MAX_DEVICES
        and all(
            isinstance(e, list)
            and len(e) == 2
            and e[0] in gone_devices
            and isinstance(e[1], bytes)
            and len(e[1]) == 32
            for e in ends
        )
    ):
        raise ProtocolError("a neighbourhood key handover whose ends are not its gone devices'")
    carried = body.get("end_records", [])
    if not (
        isinstance(carried, list)
        and len(carried) <= len(ends)
        and all(isinstance(c, bytes) and len(c) <= MAX_CARRIED for c in carried)
    ):
        raise ProtocolError("a neighbourhood key handover whose carried records are malformed")
    if gone_devices & set(stay):
        raise ProtocolError("a neighbourhood key handover listing a device both staying and gone")
    admins = body.get("admins", [])
    listed = set(stay) | gone_devices
    if not (
        isinstance(admins, list)
        and all(_is_key(a) and a in listed for a in admins)
        and len(set(admins)) == len(admins)
    ):
        raise ProtocolError("a neighbourhood key handover whose admins are not its devices")


def verify_record(payload: bytes) -> dict[str, codec.Value]:
    """The body of a record payload whose signature and shape check out, or
    :class:`ProtocolError` naming what is wrong."""
    outer = codec.decode(payload)
    if not isinstance(outer, dict) or set(outer) != {"body", "sig"}:
        raise ProtocolError("a neighbourhood record that is not a signed record")
    body, signature = outer["body"], outer["sig"]
    if not isinstance(body, dict) or not isinstance(signature, bytes):
        raise ProtocolError("a neighbourhood record that is not a signed record")
    group = body.get("group")
    if not isinstance(group, bytes) or len(group) != 32:
        raise ProtocolError("a neighbourhood record without its group's key")
    if body.get("op") not in OPS:
        raise ProtocolError(f"a neighbourhood record of unknown kind {body.get('op')!r}")
    for name, value in body.items():
        if isinstance(value, str) and len(value) > _MAX_TEXT:
            raise ProtocolError(f"a neighbourhood record whose {name} is too long")
        if isinstance(value, str) and any(
            unicodedata.category(c) == "Cc" and c not in "\n\t" for c in value
        ):
            # What a member's terminal would obey (escape sequences), not show.
            raise ProtocolError(f"a neighbourhood record whose {name} has control characters")
    if not verify(group, signature, _SIGNED + codec.encode(body)):
        raise ProtocolError("a neighbourhood record not signed by the group it names")
    if body["op"] == "rekey":
        _check_handover(body)
    if body["op"] == "seal_key" and not _is_key(body.get("kem")):
        raise ProtocolError("a neighbourhood sealing key that is not a key")
    if body["op"] == "reseal":
        _check_reseal(body)
    return body


def _pairs(value: codec.Value | None) -> list[tuple[bytes, codec.Value]]:
    """The ``[bytes, value]`` pairs of a list field (its shape was checked on arrival)."""
    items = value if isinstance(value, list) else []
    return [
        (item[0], item[1])
        for item in items
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes)
    ]


def _is_key(value: object) -> TypeGuard[bytes]:
    return isinstance(value, bytes) and len(value) == 32


def secret_id(secret: bytes) -> bytes:
    """What a ``reseal`` names its secret by, so the group that made it can tell it apart
    from another of the same generation without opening a wrap."""
    return hashlib.sha256(b"hearth/v1/neighbourhood-secret" + secret).digest()[:16]


def _check_reseal(body: Mapping[str, codec.Value]) -> None:
    generation, wraps, named = body.get("generation"), body.get("wraps"), body.get("secret_id")
    if not (
        isinstance(generation, int)
        and not isinstance(generation, bool)
        and generation > 0
        and isinstance(named, bytes)
        and len(named) == 16
        and isinstance(wraps, list)
        and len(wraps) <= _MAX_DEVICES
        and all(
            isinstance(w, list)
            and len(w) == 2
            and _is_key(w[0])
            and isinstance(w[1], bytes)
            and len(w[1]) <= _MAX_WRAP
            for w in wraps
        )
    ):
        raise ProtocolError("a new neighbourhood secret that is malformed")


@dataclass(frozen=True, slots=True)
class _Handover:
    """A group's key handed on to a new one, and whose records under the old key count."""

    record: Record
    successor: bytes
    stay: frozenset[bytes]
    gone: Mapping[bytes, int]
    admins: tuple[bytes, ...] | None  # the admins' devices, most senior first (None: not said)
    ends: Mapping[bytes, bytes] = field(default_factory=dict)  # gone device -> its last record

    @classmethod
    def of(cls, record: Record) -> _Handover:
        """The handover a ``rekey`` record says (its shape was checked on arrival)."""
        stay, admins = record.body.get("stay"), record.body.get("admins")
        cutoffs = {d: c for d, c in _pairs(record.body.get("gone")) if isinstance(c, int)}
        return cls(
            record=record,
            successor=record.blob("successor"),
            stay=frozenset(d for d in stay if isinstance(d, bytes))
            if isinstance(stay, list)
            else frozenset(),
            gone=cutoffs,
            admins=tuple(a for a in admins if isinstance(a, bytes))
            if isinstance(admins, list)
            else None,
            ends={d: e for d, e in _pairs(record.body.get("ends")) if isinstance(e, bytes)},
        )

    def well_formed(self) -> bool:
        """No device both staying and gone, and the admins among the devices it lists (as
        :func:`verify_record` checks on arrival)."""
        listed = self.stay | set(self.gone)
        return not self.stay & set(self.gone) and set(self.admins or ()) <= listed

    @property
    def writer(self) -> bytes:
        """The device that wrote it."""
        return self.record.author

    def roster(self) -> tuple[bytes, ...] | None:
        """The admins' devices that stay, most senior first: who may hand the new key on."""
        if self.admins is None:
            return None
        return tuple(a for a in self.admins if a in self.stay)

    def allows(self, record: Record) -> bool:
        """Whether a record under the old key still counts by this handover's list."""
        cutoff = self.gone.get(record.author)
        return record.author in self.stay or (cutoff is not None and record.seq <= cutoff)

    def cuts_off(self, record: Record) -> bool:
        """Whether a record (under an older key) was written past its device's cutoff."""
        cutoff = self.gone.get(record.author)
        return cutoff is not None and record.seq > cutoff


def _lineages(records: Iterable[Record]) -> dict[bytes, bytes]:
    """Each group key that a handover (standing or not) names, with one key that stands for
    every key linked to it by handovers: only a holder of one of them can link another."""
    parent: dict[bytes, bytes] = {}

    def root(key: bytes) -> bytes:
        while parent.get(key, key) != key:
            key = parent[key]
        return key

    for record in records:
        successor = record.blob("successor")
        if record.op == "rekey" and len(successor) == 32:
            a, b = root(record.group), root(successor)
            if a != b:
                parent[max(a, b)] = min(a, b)
            parent.setdefault(min(a, b), min(a, b))
    return {key: root(key) for key in parent}


def _senior(a: _Handover, b: _Handover, roster: tuple[bytes, ...] | None) -> bool | None:
    """Whether ``a``'s writer is senior to ``b``'s (R7), by what neither of them chose now:
    the order of admins the handover that made the key gave (a device it does not list
    comes after every one it does), else the order both handovers give alike. None if
    the records cannot tell."""
    if roster is not None:
        ranks = [roster.index(h.writer) if h.writer in roster else len(roster) for h in (a, b)]
        if ranks[0] != ranks[1]:
            return ranks[0] < ranks[1]
    orders = [h.admins or () for h in (a, b)]
    if not all(a.writer in o and b.writer in o for o in orders):
        return None
    before = {o.index(a.writer) < o.index(b.writer) for o in orders}
    return before.pop() if len(before) == 1 else None


class Keys:
    """Which key each group speaks with now, after the handovers among the records."""

    def __init__(self, ordered: Iterable[Record]) -> None:
        offered: dict[bytes, list[_Handover]] = {}
        made: dict[bytes, list[_Handover]] = {}  # new key -> the handovers to it
        for record in ordered:
            if record.op == "rekey" and len(record.blob("successor")) == 32:
                handover = _Handover.of(record)
                if not handover.well_formed():
                    continue  # refused on arrival now; one kept before counts for nothing
                offered.setdefault(record.group, []).append(handover)
                made.setdefault(handover.successor, []).append(handover)
        self.handovers = [h.record for hs in offered.values() for h in hs]
        self._next: dict[bytes, _Handover] = {}
        self._previous: dict[bytes, bytes] = {}
        self._contested: set[bytes] = set()
        self._rosters: dict[bytes, tuple[bytes, ...]] = {}
        for key, makers in made.items():  # a key claimed twice has no roster (nor stands)
            if len(makers) == 1 and (roster := makers[0].roster()) is not None:
                self._rosters[key] = roster

        def gone_below(handover: _Handover) -> dict[bytes, int]:
            """The devices a handover lists as gone, and every handover after it does, each
            with the lowest cutoff any of them gives it."""
            gone: dict[bytes, int] = {}
            todo, seen = [handover], set()
            while todo:
                h = todo.pop()
                if h.successor in seen:
                    continue
                seen.add(h.successor)
                for device, cutoff in h.gone.items():
                    gone[device] = min(cutoff, gone.get(device, cutoff))
                todo.extend(offered.get(h.successor, ()))
            return gone

        below = {id(h): gone_below(h) for hs in offered.values() for h in hs}

        def excludes(a: _Handover, b: _Handover) -> bool:
            """Whether ``a`` (or a handover after it) has ``b``'s writer out of the group."""
            return b.writer not in a.stay or b.writer in below[id(a)]

        def late(a: _Handover, b: _Handover) -> bool:
            """Whether ``b`` was written after ``a`` (or one after it) removed its writer:
            past the cutoff it gives that device."""
            cutoff = below[id(a)].get(b.writer)
            return cutoff is not None and b.record.seq > cutoff

        def beats(a: _Handover, b: _Handover, roster: tuple[bytes, ...] | None) -> bool:
            """Whether ``a`` stands against ``b``: who removed whom first — between two
            admins the roster ranks, one written after the other removed its writer loses
            — then it has ``b``'s writer out and not the other way round, else its writer
            is the senior."""
            if roster is not None and a.writer in roster and b.writer in roster:
                a_late, b_late = late(b, a), late(a, b)
                if a_late != b_late:
                    return b_late
            a_out, b_out = excludes(a, b), excludes(b, a)
            if roster is not None:  # nothing a member writes has an admin out
                a_out = a_out and (a.writer in roster or b.writer not in roster)
                b_out = b_out and (b.writer in roster or a.writer not in roster)
            if a_out != b_out:
                return a_out
            return _senior(a, b, roster) is True

        for key, handovers in offered.items():
            roster = self._rosters.get(key)
            # A device the key's roster does not list as an admin (a member) may hand the
            # key on only keeping every admin: it cannot cut one out, by listing or leaving out.
            eligible = [
                h
                for h in handovers
                if roster is None or h.writer in roster or set(roster) <= h.stay
            ]
            if not eligible:
                continue  # none that counts: the key is not handed on
            standing = [h for h in eligible if all(o is h or beats(h, o, roster) for o in eligible)]
            if not standing:
                self._contested.add(key)
                continue
            chosen = standing[0]
            if chosen.successor in self._previous or chosen.successor == key:
                self._contested.add(key)  # one new key claimed twice: a mistake or a trick
                continue
            self._next[key] = chosen
            self._previous[chosen.successor] = key

    def removed(
        self, records: Iterable[Record], lineage: Mapping[bytes, bytes] | None = None
    ) -> dict[bytes, tuple[int, bytes | None]]:
        """Each device a handover that stands lists as gone, with the lowest cutoff any of
        them gives it and the id of its record there, as those handovers name it (None:
        not named, or named differently, or by a handover of a group the record is not of)."""
        records = list(records)
        lineage = _lineages(records) if lineage is None else lineage
        found: dict[bytes, tuple[int, set[bytes | None]]] = {}
        for handover in self._next.values():
            for device, cutoff in handover.gone.items():
                end = handover.ends.get(device)
                said = found.get(device)
                if said is None or cutoff < said[0]:
                    found[device] = (cutoff, {end})
                elif cutoff == said[0]:
                    said[1].add(end)
        ids = {r.id: r for r in records}
        removed: dict[bytes, tuple[int, bytes | None]] = {}
        for device, (cutoff, ends) in found.items():
            end = ends.pop() if len(ends) == 1 else None
            record = ids.get(end) if end is not None else None
            named = [h for h in self._next.values() if h.ends.get(device) == end]
            if record is None or not all(
                lineage.get(record.group) == lineage.get(h.record.group) for h in named
            ):
                end = None  # not here yet, or another group's: where it ends is not known
            removed[device] = (cutoff, end)
        return removed

    def roster(self, key: bytes) -> tuple[bytes, ...] | None:
        """The admins' devices, most senior first, that the handover which made ``key``
        gave (None: the group's first key, or one from before handovers ranked admins)."""
        return self._rosters.get(key)

    def ranked(self, key: bytes) -> tuple[bytes, ...] | None:
        """The admins' devices that may say what only admins say under ``key``: for a key a
        handover has retired, the admins that handover ranks — gone ones too, whose records
        count within their cutoff — so that a member, or an admin demoted since, cannot go
        back to an older key to say it; else the key's roster. None while nothing ranks
        them (a group's first key, not handed on yet)."""
        handover = self._next.get(key)
        if handover is not None and handover.admins is not None:
            return handover.admins
        return self._rosters.get(key)

    def handed_on(self, key: bytes) -> Record | None:
        """The handover of ``key`` that stands, if any."""
        handover = self._next.get(key)
        return handover.record if handover is not None else None

    def _chain(self, key: bytes) -> list[_Handover] | None:
        """The handovers from ``key`` to its group's key now; None if one was contested."""
        path: list[_Handover] = []
        seen = {key}
        while key not in self._contested:
            handover = self._next.get(key)
            if handover is None:
                return path
            if handover.successor in seen:
                return None
            path.append(handover)
            seen.add(handover.successor)
            key = handover.successor
        return None

    def current(self, key: bytes) -> bytes | None:
        """The key the group that once spoke with ``key`` speaks with now; None if its key
        was handed on twice at once, so it speaks with none."""
        path = self._chain(key)
        if path is None:
            return None
        return path[-1].successor if path else key

    def first(self, key: bytes) -> bytes:
        """The key the group was admitted (or founded) with."""
        seen = {key}
        while key in self._previous and self._previous[key] not in seen:
            key = self._previous[key]
            seen.add(key)
        return key

    def counts(self, record: Record) -> bool:
        """Whether a record stands as far as the handovers go: under the group's key now,
        or under an older one by a device the handover lists, within its cutoff."""
        path = self._chain(record.group)
        if path is None:
            return False
        if path and not path[0].allows(record):
            return False
        return not any(h.cuts_off(record) for h in path[1:])


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """Surplus a group shares with its neighbours."""

    id: str
    group: bytes
    group_name: str
    what: str
    quantity: Decimal
    unit: str
    until: int | None  # ms since the epoch; shown until then
    note: str
    resource: str  # the resource's id in the offering group's own ledger
    withdrawn: bool
    name: str = ""  # the id its writer gave it, before offers were known by record id


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A group asking for (part of) an offer; ``status`` is pending, accepted or declined."""

    id: str
    offer: str
    group: bytes
    group_name: str
    quantity: Decimal
    note: str
    by: str  # the asking member's id in the asking group's ledger
    status: str
    fulfilled: bool  # the receiving group said it arrived
    given: bool = False  # the offering group said it handed it over
    name: str = ""  # the id its writer gave it, before requests were known by record id


@dataclass(frozen=True, slots=True, kw_only=True)
class Handoff:
    """An accepted request: what passes from one group to another."""

    request: Request
    offer: Offer


@dataclass(frozen=True, slots=True, kw_only=True)
class Reseal:
    """A new secret for the neighbourhood, sealed to the groups' sealing keys."""

    generation: int
    secret_id: bytes  # see :func:`secret_id`
    by: bytes  # the key now of the group that made it
    wraps: Mapping[bytes, bytes]  # group key -> the secret sealed to its sealing key


@dataclass
class State:
    """A neighbourhood as its records make it."""

    id: str
    name: str = ""
    groups: dict[bytes, str] = field(default_factory=dict)  # key now -> name, those in
    keys: Keys = field(default_factory=lambda: Keys(()), compare=False, repr=False)
    offers: dict[str, Offer] = field(default_factory=dict)
    requests: dict[str, Request] = field(default_factory=dict)
    sealing: dict[bytes, bytes] = field(default_factory=dict)  # group key now -> its X25519 key
    reseals: list[Reseal] = field(default_factory=list)
    heads: dict[bytes, int] = field(default_factory=dict)  # device -> end of its checked chain
    equivocations: dict[bytes, int] = field(default_factory=dict)  # device -> seq signed twice
    ends: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)  # see Chains.ends
    # The group keys the records link to the neighbourhood (see :func:`known_keys`; None:
    # no founding record here yet, so none can be told from a stranger's), and the ids of
    # the records said under any other key: made up, or a group's whose admission has not
    # arrived yet.
    known: frozenset[bytes] | None = field(default=None, compare=False, repr=False)
    strangers: list[bytes] = field(default_factory=list, compare=False, repr=False)

    def handoffs(self) -> list[Handoff]:
        """Every accepted request with its offer."""
        return [
            Handoff(request=r, offer=self.offers[r.offer])
            for r in sorted(self.requests.values(), key=lambda r: r.id)
            if r.status == "accepted"
        ]

    def left(self, offer_id: str) -> Decimal:
        """How much of an offer is still to be had: what was offered less what accepted
        requests took."""
        offer = self.offers[offer_id]
        taken = sum(
            (
                r.quantity
                for r in self.requests.values()
                if r.offer == offer_id and r.status == "accepted"
            ),
            Decimal(0),
        )
        return max(offer.quantity - taken, Decimal(0))

    def open_offers(self, now_ms: int) -> list[Offer]:
        """Offers neither withdrawn, expired nor all taken, from groups still in; each
        with ``quantity`` what is left of it."""
        return sorted(
            (
                replace(o, quantity=self.left(o.id))
                for o in self.offers.values()
                if not o.withdrawn
                and (o.until is None or o.until > now_ms)
                and o.group in self.groups
                and self.left(o.id) > 0
            ),
            key=lambda o: (o.group_name.casefold(), o.what.casefold(), o.id),
        )


def _quantity(text: str) -> Decimal | None:
    """A record's quantity, if a ledger would take it: Decimal takes ``1E+99999999``, but
    no sum or display of it does (it overflows), and a record is anyone's text."""
    try:
        return parse_quantity(text)
    except UsageError:
        return None


_GRANTS = frozenset({"found", "admit"})  # what a group says that it cannot take back


@dataclass(frozen=True, slots=True)
class Chains:
    """What the devices' feeds let count (see :func:`checked`)."""

    counted: list[Record]
    heads: dict[bytes, int]  # device -> the seq its checked chain ends at
    twice: dict[bytes, int]  # device -> the lowest seq it signed two records for
    ends: dict[bytes, tuple[int, bytes]]  # removed device -> (seq, id) its chain ends at


def _path(feed: Mapping[int, list[Record]], seq: int, end: bytes) -> list[Record] | None:
    """A device's records from its first to the one with id ``end`` at ``seq``, along the
    records each names as the one before; None unless all are here."""
    by_id = {r.id: r for at in feed.values() for r in at}
    path: list[Record] = []
    record_id: bytes | None = end
    while seq >= 1 and record_id is not None:
        record = by_id.get(record_id)
        if record is None or record.seq != seq:
            return None
        path.append(record)
        seq, record_id = seq - 1, record.prev
    return path[::-1] if seq == 0 and not record_id else None


def _whole(feed: Mapping[int, list[Record]]) -> set[bytes]:
    """The ids of a device's records that an unbroken chain leads to from its first, along
    any fork."""
    whole: set[bytes] = set()
    seq, level = 1, {r.id for r in feed.get(1, []) if not r.prev}
    while level:
        whole |= level
        seq += 1
        level = {r.id for r in feed.get(seq, []) if r.prev is None or r.prev in level}
    return whole


def checked(
    records: Iterable[Record], removed: Mapping[bytes, tuple[int, bytes | None]] | None = None
) -> Chains:
    """The records whose device's chain is whole and unbroken up to them (R3), the end of
    each device's checked chain, and the devices that signed two records for one seq (R4),
    each with that seq: such a device counts up to the seq before.

    Two exceptions, so that signing twice never takes back what counted (R6): a device a
    standing handover lists as gone (``removed``: its cutoff, and the id of its record
    there) counts along the chain that ends at that record, whatever it signed since below
    it; and what a group cannot take back — founding the neighbourhood, letting a group in
    — counts from any device not gone, on any fork an unbroken chain leads to."""
    removed = removed or {}
    feeds: dict[bytes, dict[int, list[Record]]] = {}
    for record in records:
        feeds.setdefault(record.author, {}).setdefault(record.seq, []).append(record)
    chains = Chains(counted=[], heads={}, twice={}, ends={})
    for author, feed in feeds.items():
        for seq, at in feed.items():
            if len({r.id for r in at}) > 1:
                chains.twice[author] = min(seq, chains.twice.get(author, seq))
        cutoff, end = removed.get(author, (0, None))
        path = _path(feed, cutoff, end) if end is not None else None
        if path and end is not None:
            chains.ends[author] = (cutoff, end)
        path = path or []
        seq, prev = len(path), path[-1].id if path else b""
        while len(feed.get(seq + 1, ())) == 1:  # on from there: one record a seq, chained
            record = feed[seq + 1][0]
            if record.prev is not None and record.prev != prev:
                break  # a broken chain: nothing from here counts
            path.append(record)
            seq, prev = seq + 1, record.id
        chains.counted.extend(path)
        if seq:
            chains.heads[author] = seq
        if author not in removed and author in chains.twice:
            whole = _whole(feed)
            chains.counted.extend(
                r
                for at in feed.values()
                for r in at
                if r.seq > seq and r.op in _GRANTS and r.id in whole
            )
    return chains


def _by_name(
    counting: Iterable[Record], op: str, known: Mapping[str, Offer] | Mapping[str, Request]
) -> dict[str, str]:
    """Offers or requests said before they were known by their record's id, by the name
    their writer gave them (an ``id`` field) — only names no two of them share, so that a
    copy of a name hides nothing."""
    named: dict[str, set[str]] = {}
    for r in counting:
        if r.op == op and r.text("id") and r.ref in known:
            named.setdefault(r.text("id"), set()).add(r.ref)
    return {name: next(iter(refs)) for name, refs in named.items() if len(refs) == 1}


def _named(known: Mapping[str, _T], by_name: Mapping[str, str], text: str) -> _T | None:
    """What a record refers to: by its record's id, or (said before that) by its name."""
    found = known.get(text)
    if found is None and text in by_name:
        found = known.get(by_name[text])
    return found


def _one_name(names: Iterable[str]) -> str:
    """The name several records give one thing: the one they agree on, or every one they
    give, in order (a name given twice at once is no reason to pick either)."""
    given = sorted(set(names))
    return " / ".join(given)[:_MAX_TEXT]


def known_keys(
    nid: str, records: Iterable[Record], lineage: Mapping[bytes, bytes] | None = None
) -> frozenset[bytes] | None:
    """Every group key the records link to neighbourhood ``nid``, whether what is said under
    it counts or not: a founding key (one that hashes to the id), a key one of those lets in
    — and so on —, and every key a handover links to one of them. None without a founding
    record. Whoever holds none of these keys can write records (anyone who ever held the
    neighbourhood's first secret can), but none of them will ever count unless a known
    key lets theirs in: what a node keeps of them is bounded
    (:func:`hearth.neighbourhood.participation.take_record`)."""
    records = list(records)
    lineage = _lineages(records) if lineage is None else lineage

    def root(key: bytes) -> bytes:
        return lineage.get(key, key)

    roots = {
        root(r.group)
        for r in records
        if r.op == "found" and neighbourhood_id(r.group, r.blob("nonce")) == nid
    }
    if not roots:
        return None
    admits = [(root(r.group), r.blob("newcomer")) for r in records if r.op == "admit"]
    grown = True
    while grown:
        grown = False
        for by, newcomer in admits:
            if by in roots and root(newcomer) not in roots:
                roots.add(root(newcomer))
                grown = True
    return frozenset(roots | {key for key, at in lineage.items() if at in roots})


_ADMINS_ONLY = frozenset({"admit", "leave"})  # what only a group's admins say for it


def _may_say(keys: Keys, record: Record) -> bool:
    """Whether the device that wrote a record may say it for its group: letting a group in
    and leaving are the admins' to say, so under a key whose roster ranks the group's
    admins (:meth:`Keys.roster`) only a device it ranks says them, and under a key a
    handover retired, only a device that handover ranks (:meth:`Keys.ranked`: a member
    still in holds the group's first key too). Under a group's first key while nothing
    ranks its admins yet, any device of the group does (docs/security.md, §6a)."""
    if record.op not in _ADMINS_ONLY:
        return True
    ranked = keys.ranked(record.group)
    return ranked is None or record.author in ranked


def fold(nid: str, records: Iterable[Record]) -> State:
    """The state of neighbourhood ``nid`` given every record known (see the module rules)."""
    state = State(id=nid)
    records = list(records)
    lineage = _lineages(records)
    state.known = known = known_keys(nid, records, lineage)
    if known is not None:
        state.strangers = [r.id for r in records if r.group not in known]
    chains = checked(records)
    removed = Keys(sorted(chains.counted, key=lambda r: r.id)).removed(records, lineage)
    if removed:  # those the handovers standing so far have out count as far as they say
        chains = checked(records, removed)
    state.heads, state.equivocations, state.ends = chains.heads, chains.twice, chains.ends
    ordered = sorted(chains.counted, key=lambda r: r.id)
    keys = state.keys = Keys(ordered)
    counting = [r for r in ordered if keys.counts(r) and _may_say(keys, r)]
    # Only the founding group's key hashes to the id; of its founding records, those that
    # count under it found (not one a removed member writes past their cutoff) — unless its
    # key was handed on twice at once: that silences the group, not the neighbourhood.
    founded = [
        r for r in ordered if r.op == "found" and neighbourhood_id(r.group, r.blob("nonce")) == nid
    ]
    founding = [r for r in founded if keys.counts(r)] or founded
    if not founding:
        return state
    state.name = _one_name(r.text("name") for r in founding)
    # Groups come in step by step from the founder's: a group is named by the groups that
    # let it in at the first step any did (R17: a group let in earlier names it, and two
    # at one step that disagree both show; a record id never picks one).
    admitted = {founding[0].group: _one_name(r.text("group_name") for r in founding)}
    step = set(admitted)  # by the key each came in with
    while step:
        names: dict[bytes, list[str]] = {}
        for r in counting:
            newcomer = r.blob("newcomer")
            if (
                r.op == "admit"
                and keys.first(r.group) in step
                and newcomer not in admitted
                and keys.first(newcomer) == newcomer
            ):
                names.setdefault(newcomer, []).append(r.text("group_name"))
        admitted.update((newcomer, _one_name(given)) for newcomer, given in names.items())
        step = set(names)
    left = {keys.first(r.group) for r in counting if r.op == "leave"}
    for first, name in admitted.items():
        now = keys.current(first)
        if first not in left and now is not None:
            state.groups[now] = name

    def speaker(r: Record) -> bytes | None:
        """The key now of the group that said ``r``, if it counts and the group is in."""
        now = keys.current(r.group)
        return now if now in state.groups else None

    for r in counting:
        group = speaker(r)
        if r.op != "offer" or group is None:
            continue
        quantity = _quantity(r.text("qty"))
        if quantity is None:
            continue
        until = r.number("until") or None
        if until is not None and not 0 < until < _LAST_DAY_MS:
            continue  # a day no calendar shows
        state.offers[r.ref] = Offer(
            id=r.ref,
            group=group,
            group_name=state.groups[group],
            what=r.text("what"),
            quantity=quantity,
            unit=r.text("unit"),
            until=until,
            note=r.text("note"),
            resource=r.text("resource"),
            withdrawn=False,
            name=r.text("id"),
        )
    offers_by_name = _by_name(counting, "offer", state.offers)
    for r in counting:
        offer = _named(state.offers, offers_by_name, r.text("offer"))
        if r.op == "withdraw" and offer is not None and offer.group == speaker(r):
            state.offers[offer.id] = replace(offer, withdrawn=True)

    for r in counting:
        offer = _named(state.offers, offers_by_name, r.text("offer"))
        quantity = _quantity(r.text("qty"))
        group = speaker(r)
        if (
            r.op != "request"
            or group is None
            or offer is None
            or offer.group == group
            or quantity is None
        ):
            continue
        state.requests[r.ref] = Request(
            id=r.ref,
            offer=offer.id,
            group=group,
            group_name=state.groups[group],
            quantity=quantity,
            note=r.text("note"),
            by=r.text("by"),
            status="pending",
            fulfilled=False,
            name=r.text("id"),
        )
    requests_by_name = _by_name(counting, "request", state.requests)
    for r in counting:  # an acceptance stands against a refusal said at the same time
        request = _named(state.requests, requests_by_name, r.text("request"))
        if r.op != "answer" or request is None or request.status == "accepted":
            continue
        if state.offers[request.offer].group == speaker(r):
            status = "accepted" if r.number("accept") else "declined"
            state.requests[request.id] = replace(request, status=status)
    for r in counting:
        request = _named(state.requests, requests_by_name, r.text("request"))
        if r.op != "fulfilled" or request is None or request.status != "accepted":
            continue  # (a request or offer counts only while its group is in: see above)
        if speaker(r) == request.group:  # it arrived: only the receiving group says so
            state.requests[request.id] = replace(state.requests[request.id], fulfilled=True)
        elif speaker(r) == state.offers[request.offer].group:
            state.requests[request.id] = replace(state.requests[request.id], given=True)

    # Sealing keys and new secrets count only under a group's key now: whoever holds an
    # older one (someone who left) must not be sealed to, nor hand out secrets.
    for r in counting:
        group = speaker(r)
        if group != r.group:
            continue
        if r.op == "seal_key" and group not in state.sealing:
            state.sealing[group] = r.blob("kem")
        elif r.op == "reseal":
            sealed = {k: v for k, v in _pairs(r.body.get("wraps")) if isinstance(v, bytes)}
            state.reseals.append(
                Reseal(
                    generation=r.number("generation"),
                    secret_id=r.blob("secret_id"),
                    by=group,
                    wraps=sealed,
                )
            )
    return state
