"""The ledger's vocabulary: what a group records, shaped after ValueFlows.

Stored entries are plain maps in the Automerge document (see ``schema`` below); the
frozen dataclasses here are what queries return, with everything derived already
worked out (quantity from events, custodian from lends, status from status changes).

All commitment status changes live in one table, :data:`COMMITMENT_TRANSITIONS`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

__all__ = [
    "COMMITMENT_TRANSITIONS",
    "STARTING_STOCK",
    "TABLES",
    "Action",
    "Commitment",
    "CommitmentStatus",
    "Conflict",
    "Event",
    "HistoryItem",
    "Kind",
    "Member",
    "Need",
    "NeedStatus",
    "Resource",
    "Role",
    "StatusChange",
]

TABLES = (
    "meta",
    "members",
    "resources",
    "needs",
    "commitments",
    "events",
    "relays",
    "invites",
)
"""The tables of a group's live ledger document (archives hold the same tables)."""


class Kind(str, enum.Enum):
    """What sort of thing a resource is."""

    TOOL = "tool"
    FOOD = "food"
    SPACE = "space"
    SKILL = "skill"
    MONEY = "money"
    OTHER = "other"


class Role(str, enum.Enum):
    """A member's role: admins change membership, everyone edits the ledger."""

    ADMIN = "admin"
    MEMBER = "member"


class NeedStatus(str, enum.Enum):
    """Whether a need is still wanted."""

    OPEN = "open"
    CLOSED = "closed"


class CommitmentStatus(str, enum.Enum):
    """Where a commitment is in its life."""

    PROPOSED = "proposed"
    ACCEPTED = "accepted"
    FULFILLED = "fulfilled"
    DECLINED = "declined"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        """Whether the commitment still promises something."""
        return self in (CommitmentStatus.PROPOSED, CommitmentStatus.ACCEPTED)


COMMITMENT_TRANSITIONS: dict[CommitmentStatus, frozenset[CommitmentStatus]] = {
    CommitmentStatus.PROPOSED: frozenset(
        {CommitmentStatus.ACCEPTED, CommitmentStatus.DECLINED, CommitmentStatus.CANCELLED}
    ),
    CommitmentStatus.ACCEPTED: frozenset({CommitmentStatus.FULFILLED, CommitmentStatus.CANCELLED}),
    CommitmentStatus.FULFILLED: frozenset(),
    CommitmentStatus.DECLINED: frozenset(),
    CommitmentStatus.CANCELLED: frozenset(),
}
"""Every allowed status change of a commitment, and nothing else."""


STARTING_STOCK = "starting stock"  # the note of the event recording a new resource's stock


class Action(str, enum.Enum):
    """An economic event's action (the ValueFlows action in :attr:`valueflows`)."""

    PRODUCE = "produce"  # more of it now exists (also a resource's starting quantity)
    CONSUME = "consume"  # used up
    RAISE = "raise"  # a correction upwards after a count
    LOWER = "lower"  # a correction downwards
    LEND = "lend"  # custody passes to a member for a while
    RETURN = "return"  # custody comes back
    GIVE = "give"  # some of it leaves the group's stock for a member

    @property
    def sign(self) -> int:
        """How the event moves the resource's quantity: +1, -1 or 0."""
        return _SIGN[self]

    @property
    def valueflows(self) -> str:
        """The ValueFlows action id."""
        return _VALUEFLOWS[self]


_SIGN = {
    Action.PRODUCE: 1,
    Action.RAISE: 1,
    Action.CONSUME: -1,
    Action.LOWER: -1,
    Action.GIVE: -1,
    Action.LEND: 0,
    Action.RETURN: 0,
}
_VALUEFLOWS = {
    Action.PRODUCE: "produce",
    Action.CONSUME: "consume",
    Action.RAISE: "raise",
    Action.LOWER: "lower",
    Action.LEND: "transfer-custody",
    Action.RETURN: "transfer-custody",
    Action.GIVE: "transfer",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A person in the group."""

    id: str
    name: str
    role: Role
    key: str
    devices: tuple[str, ...]  # ids of the devices that still write for the member
    joined_at: int
    status: str = "active"  # or "removed", or "left"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """A shared thing, with its quantity and custodian derived from events."""

    id: str
    name: str
    kind: Kind
    unit: str
    quantity: Decimal
    owner: str  # member id, or "" for the group as a whole
    keeper: str  # member who looks after it when it is not lent out
    custodian: str  # who has it now: the borrower while lent, else the keeper
    lent_to: tuple[str, ...]  # open lends; more than one is a conflict
    lent_until: int | None
    location: str
    note: str
    shareable: bool
    created_by: str
    created_at: int
    updated_by: str
    updated_at: int
    removed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Need:
    """Something a member needs (a ValueFlows intent)."""

    id: str
    what: str
    quantity: Decimal | None
    unit: str
    by: int | None
    status: NeedStatus
    created_by: str
    created_at: int
    closed_by: str
    closed_at: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChange:
    """One recorded change of a commitment's status."""

    id: str
    from_status: CommitmentStatus
    to_status: CommitmentStatus
    by: str
    at: int
    applied: bool  # False when it lost to a concurrent change (a conflict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Commitment:
    """A promise from one member to another, with its derived status."""

    id: str
    what: str
    giver: str
    receiver: str
    resource: str
    quantity: Decimal | None
    due: int | None
    status: CommitmentStatus
    changes: tuple[StatusChange, ...]
    created_by: str
    created_at: int
    # A handoff with a neighbour group: its name, and the neighbourhood request behind it.
    # The giver (when the neighbour receives) or the receiver (when it gives) is then "".
    neighbour: str = ""
    handoff: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that actually happened to a resource."""

    id: str
    action: Action
    resource: str
    quantity: Decimal
    to: str
    until: int | None
    closes: tuple[str, ...]  # for a return: the lends it ends
    fulfils: str  # the commitment this event fulfils, if any
    note: str
    by: str
    at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """A problem a merge cannot see, for members to settle with ordinary edits."""

    id: str
    kind: str
    summary: str
    advice: str
    entries: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryItem:
    """One line of the group's history: who did what, when."""

    at: int
    by: str
    what: str
    entry: str
