"""Who is in a group, who may change that, and which devices' writes still count.

Membership lives in the ledger's ``members`` table (SECURITY.md §5–§6):

- a member entry holds a role (``admin`` or ``member``) and device cards (each with the
  device's keys and the Automerge actor ids it writes under);
- removing a member sets ``removed`` on the entry, leaving sets ``left``, and removing one
  device sets ``removed`` on its card; each records a **cutoff** per device: the highest seq
  of that device's feed the writer had accepted. Bundles past a cutoff are invalid whatever
  they cite; those at or before it stay valid even if they arrive late (R6).

Everything here is a pure function of table entries, so every node judges alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeGuard

from hearth.errors import ProtocolError

__all__ = [
    "Card",
    "Table",
    "active_admins",
    "card_of",
    "cards",
    "check_change",
    "check_invites",
    "check_joined_at",
    "cutoff_of",
    "departed",
    "effective_role",
    "is_gone",
    "next_admin_rank",
    "seniority",
]

Raw = Mapping[str, object]
Table = Mapping[str, Raw]


@dataclass(frozen=True, slots=True, kw_only=True)
class Card:
    """One device of one member, as the ledger lists it."""

    member_id: str
    device_id: str
    key: bytes  # Ed25519 public key: the author of the device's bundles
    kem: bytes  # X25519 public key: what a new epoch's secret is sealed to
    actors: frozenset[bytes]
    cutoff: int | None  # None while the device's writes count; else the last seq that does


def _sub(raw: Raw, key: str) -> Raw:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def _cutoffs(raw: Raw) -> Mapping[str, object]:
    """The per-device cutoffs a member entry's removal or departure records, if any."""
    for marker in ("removed", "left"):
        if marker in raw:
            return _sub(_sub(raw, marker), "cutoffs")
    return {}


def is_gone(raw: Raw) -> bool:
    """Whether a member entry is of someone removed or who left."""
    return "removed" in raw or "left" in raw


def cards(members: Table) -> list[Card]:
    """Every device card of every member (gone ones too, with their cutoffs)."""
    return list(_cards(members))


def card_of(members: Table, device_key: bytes) -> Card | None:
    """The card of one device, or ``None`` if no member lists it: the first that
    :func:`cards` would give for it, found without reading every other card in full."""
    return next(_cards(members, only=device_key), None)


def _cards(members: Table, only: bytes | None = None) -> Iterator[Card]:
    """The cards :func:`cards` lists, in its order; with ``only``, those of that device
    key alone (a card whose key differs is not read further)."""
    for member_id, raw in members.items():
        gone = is_gone(raw)
        cutoffs = _cutoffs(raw)
        for device_id, card in _sub(raw, "devices").items():
            if not isinstance(card, Mapping):
                continue
            try:
                key = bytes.fromhex(str(card.get("key", "")))
                if only is not None and key != only:
                    continue
                kem = bytes.fromhex(str(card.get("kem", "")))
                actors = frozenset(bytes.fromhex(a) for a in _sub(card, "actors"))
            except ValueError:
                continue  # a malformed card grants nothing
            cutoff: object = None
            if gone:
                cutoff = cutoffs.get(key.hex(), 0)
            elif "removed" in card:
                cutoff = _sub(card, "removed").get("cutoff", 0)
            yield Card(
                member_id=member_id,
                device_id=device_id,
                key=key,
                kem=kem,
                actors=actors,
                cutoff=cutoff if isinstance(cutoff, int) or cutoff is None else 0,
            )


def cutoff_of(members: Table, device_key: bytes) -> int | None:
    """The last seq of a removed device's feed that counts (``None``: still counts)."""
    card = card_of(members, device_key)
    return None if card is None else card.cutoff


def departed(members: Table) -> frozenset[bytes]:
    """The device keys of everyone removed or gone, and of every device removed: a node
    turns these away when they connect to it directly, or it to them."""
    return frozenset(card.key for card in cards(members) if card.cutoff is not None)


def active_admins(members: Table) -> list[str]:
    """Member ids of the admins still in the group."""
    return [mid for mid, raw in members.items() if not is_gone(raw) and raw.get("role") == "admin"]


def effective_role(members: Table, member_id: str) -> str:
    """A member's role, with R7's rule that a group never ends with no admin: if every
    admin is gone, the earliest-joined remaining member (ties by id) acts as one."""
    raw = members.get(member_id, {})
    if is_gone(raw):
        return str(raw.get("role", "member"))
    if raw.get("role") == "admin":
        return "admin"
    if active_admins(members):
        return "member"
    remaining = sorted(
        (joined if isinstance(joined := r.get("joined_at"), int) else 0, mid)
        for mid, r in members.items()
        if not is_gone(r)
    )
    return "admin" if remaining and remaining[0][1] == member_id else "member"


_UNRANKED = 2**31  # an admin made before ranks were recorded: junior to every ranked one


def _rank(member_id: str, raw: Raw) -> int:
    rank = raw.get("admin_rank")
    if isinstance(rank, int) and not isinstance(rank, bool) and rank >= 0:
        return rank
    return 0 if raw.get("added_by") == member_id and "invite" not in raw else _UNRANKED


def seniority(members: Table, member_id: str) -> tuple[int, str]:
    """How senior an admin is: smaller is more senior (R7). The founder ranks 0; each
    promotion ranks the new admin one after every admin its writer knew of, which every
    node checks (:func:`check_change`), so nobody can make themselves or anyone else more
    senior than the order of promotions allows. Admins promoted at the same time, each
    unaware of the other, tie on rank and are told apart by member id (the hash of their
    member key). Admins made before ranks were recorded come after every ranked one."""
    return _rank(member_id, members.get(member_id, {})), member_id


def next_admin_rank(members: Table, promoted: str) -> int:
    """The rank a member promoted now must be given: after every admin (also those gone
    since) that the table, as the promoting admin sees it, lists."""
    ranks = [
        _rank(mid, raw)
        for mid, raw in members.items()
        if mid != promoted and raw.get("role") == "admin" and _rank(mid, raw) != _UNRANKED
    ]
    return max(ranks, default=-1) + 1


_JOINING_FACTS = ("joined_at", "added_by", "invite", "admin_rank")
"""What a member entry says of when and how its member joined (and ranks as an admin):
fixed once written, except by an admin."""


def check_change(
    before: Table,
    after: Table,
    *,
    author: str | None,
    joining: str | None = None,
    invite: Raw | None = None,
) -> None:
    """Raise :class:`ProtocolError` unless a bundle's change to ``members`` was allowed.

    ``author`` is the writing device's member (``None``: the group's founding device before
    its card is known, which may do anything); ``joining`` is the member id a valid invite
    claim lets the bundle create, by ``invite`` (its entry as the node judging holds it),
    dated no earlier than that invite was made (:func:`check_joined_at`). Admins change
    anything; a member may change their own name and devices and may leave — not when or
    how they joined; nobody else changes anyone, and no device belongs to two members. (A
    group whose admins have all gone is not refused: :func:`effective_role` gives it one;
    the commands refuse to demote or let leave the last admin.)
    """
    if author is None:
        return
    is_admin = effective_role(before, author) == "admin"
    for member_id in set(before) | set(after):
        old, new = before.get(member_id), after.get(member_id)
        if old == new:
            continue
        if is_admin:
            _check_rank(before, member_id, old, new)
            continue
        if old is None and member_id == joining and new is not None and not is_gone(new):
            if new.get("role") not in (None, "member"):
                raise ProtocolError("a joining member who gave themselves a role")
            check_joined_at(new, invite)
            continue
        if member_id != author or old is None or new is None:
            raise ProtocolError(
                "a change to someone else's membership by a member who is not an admin"
            )
        if old.get("role") != new.get("role") or old.get("removed") != new.get("removed"):
            raise ProtocolError("a member who is not an admin changing their own role")
        if any(old.get(f) != new.get(f) for f in _JOINING_FACTS):
            # When and how they joined rank them for R7's fallback (effective_role).
            raise ProtocolError("a member changing when or how they joined")
        for device_id, card in _sub(new, "devices").items():
            old_card = _sub(old, "devices").get(device_id)
            if isinstance(old_card, Mapping) and not set(_sub(old_card, "actors")) <= set(
                _sub(card if isinstance(card, Mapping) else {}, "actors")
            ):
                # Adding one is how a device writes again what did not count (R8).
                raise ProtocolError("a member taking actor ids off a device they added")
    listed: dict[bytes, str] = {}
    bound: dict[bytes, bytes] = {}
    for card in cards(after):
        if listed.setdefault(card.key, card.member_id) != card.member_id:
            raise ProtocolError("a device listed for two members")
        for actor in card.actors:
            if bound.setdefault(actor, card.key) != card.key:
                raise ProtocolError("an actor id listed for two devices")


def check_joined_at(entry: Raw, invite: Raw | None) -> None:
    """Raise :class:`ProtocolError` unless a joining member's own entry dates their joining
    no earlier than the invite they join by was made (R7a).

    R7's fallback (:func:`effective_role`) ranks by ``joined_at``, which the joining
    device writes itself: dated freely, a newcomer would be the most senior member. An
    invite's ``join_not_before`` (when it was made) is the inviter's word, and nobody
    changes it once recorded (:func:`check_invites`), so every node judges a claim against the
    same time. (A token carries it, so an honest device with a slow clock dates its
    joining at it.) An invite made before the rule has none and bounds nothing: claims
    that counted then count on a node that judges them again (R12)."""
    made = (invite or {}).get("join_not_before")
    if not _is_time(made):
        return
    joined = entry.get("joined_at")
    if not _is_time(joined) or joined < made:
        raise ProtocolError("a joining member who dates their joining before their invite was made")


def _is_time(value: object) -> TypeGuard[int]:
    """Whether a field holds a time (ms): a whole number, not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_rank(before: Table, member_id: str, old: Raw | None, new: Raw | None) -> None:
    """A promotion's rank (when it gives one) must be the next after every admin its
    writer knew of: no admin can be made more senior than the order of promotions."""
    if new is None or "admin_rank" not in new:
        return  # no rank: the admin counts as made before ranks, junior to every ranked one
    if old is not None and old.get("admin_rank") == new.get("admin_rank"):
        return
    if new.get("admin_rank") != next_admin_rank(before, member_id):
        raise ProtocolError("a promotion that ranks the new admin before admins made earlier")


def check_invites(
    before: Table,
    after: Table,
    *,
    members: Table,
    author: str | None,
    claimed: str | None,
    device: bytes,
) -> None:
    """Raise :class:`ProtocolError` unless a bundle's change to ``invites`` was allowed:
    admins record invites; a joining device marks only the invite it claims as used by
    itself; a member may record a device invite for themselves. Whoever writes: an invite
    names the device that made it, which alone confirms which claim counts, once (R14),
    and its ``join_not_before`` is fixed once recorded (R7a)."""
    for invite_id in set(before) | set(after):
        old, new = before.get(invite_id), after.get(invite_id)
        if old != new and new is not None:
            _check_confirmation(old, new, device.hex())
        if old is not None and new is not None and old.get(_DATE) != new.get(_DATE):
            # A claim is judged against the invite as the judging node holds it: a date
            # moved after a claim counted on some nodes would split the lists of members
            # (R7a, R12). Fixed once recorded, for admins too.
            raise ProtocolError("a change to when an invite was made (its join_not_before)")
    if author is None or effective_role(members, author) == "admin":
        return
    for invite_id in set(before) | set(after):
        old, new = before.get(invite_id), after.get(invite_id)
        if old == new:
            continue
        if old is not None and new is not None and new.get("by_device") == device.hex():
            changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
            if changed <= {"confirmed", "confirmed_at"}:
                continue  # its maker confirming a claim (checked above)
        if invite_id == claimed and old is not None and new is not None:
            changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
            if changed <= {"claimed_by", "claimed_at"} and new.get("claimed_by") == author:
                continue
        if (
            old is None
            and new is not None
            and new.get("kind") == "device"
            and new.get("member") == author
        ):
            continue
        raise ProtocolError("an invite recorded or changed by a member who is not an admin")


_DATE = "join_not_before"
"""An invite's date (R7a): what a claim to it is judged against, on every node."""


def _check_confirmation(old: Raw | None, new: Raw, device: str) -> None:
    """R14: an invite is made in the name of the device that writes it, and only that
    device confirms a claim to it — once."""
    if old is None:
        if "by_device" in new and new.get("by_device") != device:
            raise ProtocolError("an invite recorded in the name of another device")
    elif old.get("by_device") != new.get("by_device"):
        raise ProtocolError("a change to the device that made an invite")
    if (old or {}).get("confirmed") == new.get("confirmed"):
        return
    if old is not None and "confirmed" in old:
        raise ProtocolError("a second confirmation of an invite: a join token works once")
    if new.get("by_device") != device:
        raise ProtocolError("a join confirmed by a device other than the one that invited")
