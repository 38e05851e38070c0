"""Pure functions from stored entries to what members see.

Quantities are sums of events, custody follows open lends, a commitment's status is
replayed from its status changes. Everything is ordered by ``(at, id)`` before it is
folded, so any two replicas holding the same entries compute the same answer, whatever
order the entries arrived in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from hearth.ledger.model import (
    COMMITMENT_TRANSITIONS,
    Action,
    Commitment,
    CommitmentStatus,
    Event,
    Kind,
    Member,
    Need,
    NeedStatus,
    Resource,
    Role,
    StatusChange,
)

__all__ = ["commitment", "event", "member", "need", "resource"]

Raw = Mapping[str, object]


def _str(raw: Raw, key: str, default: str = "") -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else default


def _int(raw: Raw, key: str) -> int | None:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _decimal(raw: Raw, key: str) -> Decimal | None:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        return None
    try:
        number = Decimal(value)
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def _enum_value(enum_type: type[Kind], value: str) -> Kind:
    try:
        return enum_type(value)
    except ValueError:
        return Kind.OTHER


_ACTIONS = {a.value: a for a in Action}
_ANSWERS = frozenset({CommitmentStatus.ACCEPTED, CommitmentStatus.DECLINED})
"""What only the other party to a promise may say of it (not the one who proposed it)."""


def event(event_id: str, raw: Raw) -> Event | None:
    """An event from its stored entry, or ``None`` if the entry is not a usable event."""
    action = _ACTIONS.get(_str(raw, "action"))
    if action is None:
        return None
    closes_text = _str(raw, "closes")
    closes = tuple(sorted(x for x in closes_text.split(",") if x)) if closes_text else ()
    return Event(
        id=event_id,
        action=action,
        resource=_str(raw, "resource"),
        quantity=_decimal(raw, "qty") or Decimal(0),
        to=_str(raw, "to"),
        until=_int(raw, "until"),
        closes=closes,
        fulfils=_str(raw, "fulfils"),
        note=_str(raw, "note"),
        by=_str(raw, "by"),
        at=_int(raw, "at") or 0,
    )


def open_lends(events: Iterable[Event]) -> list[Event]:
    """Lends no return has closed, oldest first."""
    lends: list[Event] = []
    closed: set[str] = set()
    for e in events:
        if e.action is Action.LEND:
            lends.append(e)
        elif e.action is Action.RETURN:
            closed.update(e.closes)
    return sorted((e for e in lends if e.id not in closed), key=lambda e: (e.at, e.id))


def quantity(events: Iterable[Event]) -> Decimal:
    """The quantity on hand: the exact sum of every event's signed quantity."""
    return sum((e.quantity * e.action.sign for e in events), Decimal(0))


def resource(resource_id: str, raw: Raw, events: Iterable[Event]) -> Resource:
    """A resource with its quantity and custodian worked out from its events."""
    events = list(events)
    lends = open_lends(events)
    keeper = _str(raw, "keeper") or _str(raw, "created_by")
    latest = lends[-1] if lends else None
    return Resource(
        id=resource_id,
        name=_str(raw, "name", "(unnamed)"),
        kind=_enum_value(Kind, _str(raw, "kind", "other")),
        unit=_str(raw, "unit"),
        quantity=quantity(events),
        owner=_str(raw, "owner"),
        keeper=keeper,
        custodian=latest.to if latest else keeper,
        lent_to=tuple(e.to for e in lends),
        lent_until=latest.until if latest else None,
        location=_str(raw, "location"),
        note=_str(raw, "note"),
        shareable=raw.get("shareable") is True,
        created_by=_str(raw, "created_by"),
        created_at=_int(raw, "created_at") or 0,
        updated_by=_str(raw, "updated_by") or _str(raw, "created_by"),
        updated_at=_int(raw, "updated_at") or _int(raw, "created_at") or 0,
        removed=raw.get("removed") is True,
    )


def need(need_id: str, raw: Raw) -> Need:
    """A need from its stored entry."""
    closed = raw.get("closed") is True
    return Need(
        id=need_id,
        what=_str(raw, "what", "(unnamed)"),
        quantity=_decimal(raw, "qty"),
        unit=_str(raw, "unit"),
        by=_int(raw, "by"),
        status=NeedStatus.CLOSED if closed else NeedStatus.OPEN,
        created_by=_str(raw, "created_by"),
        created_at=_int(raw, "created_at") or 0,
        closed_by=_str(raw, "closed_by"),
        closed_at=_int(raw, "closed_at"),
    )


def commitment(commitment_id: str, raw: Raw) -> Commitment:
    """A commitment whose status is replayed from its recorded status changes.

    Each change names the status its author saw, so changes are replayed along that chain
    (the clock only breaks ties between rivals); one whose starting status never comes
    round (because a concurrent change got there first) is kept but marked not applied,
    which :mod:`conflicts` reports. A change that names nobody, or by which the member
    who proposed a promise between herself and another accepts or declines it, does not
    count at all (``Ledger.change_commitment`` refuses to write one).
    """
    stored = raw.get("changes")
    items = stored.items() if isinstance(stored, Mapping) else ()
    pending: list[tuple[int, str, CommitmentStatus, CommitmentStatus, str]] = []
    proposer = _str(raw, "created_by")
    answers_own = not _str(raw, "handoff") and proposer in (
        _str(raw, "giver"),
        _str(raw, "receiver"),
    )
    for change_id, change in items:
        if not isinstance(change, Mapping):
            continue
        try:
            seen = CommitmentStatus(_str(change, "from"))
            target = CommitmentStatus(_str(change, "to"))
        except ValueError:
            continue
        by = _str(change, "by")
        if not by or (answers_own and by == proposer and target in _ANSWERS):
            # Nobody's, or the proposer answering her own promise: never counts, on any
            # node (who wrote it is the signing member, docs/security.md R2a).
            continue
        pending.append((_int(change, "at") or 0, change_id, seen, target, by))
    pending.sort(key=lambda item: (item[0], item[1]))
    # Replay by what each change saw, not by the clock: repeatedly take the earliest change
    # that starts from the current status. Changes left over lost to a concurrent one.
    status = CommitmentStatus.PROPOSED
    applied: list[StatusChange] = []
    while True:
        step = next(
            (c for c in pending if c[2] is status and c[3] in COMMITMENT_TRANSITIONS[status]), None
        )
        if step is None:
            break
        pending.remove(step)
        at, change_id, seen, target, by = step
        applied.append(
            StatusChange(
                id=change_id, from_status=seen, to_status=target, by=by, at=at, applied=True
            )
        )
        status = target
    lost = [
        StatusChange(id=change_id, from_status=seen, to_status=target, by=by, at=at, applied=False)
        for at, change_id, seen, target, by in pending
    ]
    replayed = sorted(applied + lost, key=lambda c: (c.at, c.id))
    return Commitment(
        id=commitment_id,
        what=_str(raw, "what", "(unnamed)"),
        giver=_str(raw, "giver"),
        receiver=_str(raw, "receiver"),
        resource=_str(raw, "resource"),
        quantity=_decimal(raw, "qty"),
        due=_int(raw, "due"),
        status=status,
        changes=tuple(replayed),
        created_by=_str(raw, "created_by"),
        created_at=_int(raw, "created_at") or 0,
        neighbour=_str(raw, "neighbour"),
        handoff=_str(raw, "handoff"),
    )


def member(member_id: str, raw: Raw) -> Member:
    """A member from its stored entry."""
    devices = raw.get("devices")
    try:
        role = Role(_str(raw, "role", "member"))
    except ValueError:
        role = Role.MEMBER
    live = (
        sorted(
            d for d, card in devices.items() if isinstance(card, Mapping) and "removed" not in card
        )
        if isinstance(devices, Mapping)
        else []
    )
    return Member(
        id=member_id,
        name=_str(raw, "name", "(unnamed)"),
        role=role,
        key=_str(raw, "key"),
        devices=tuple(live),
        joined_at=_int(raw, "joined_at") or 0,
        status="removed" if "removed" in raw else "left" if "left" in raw else "active",
    )
