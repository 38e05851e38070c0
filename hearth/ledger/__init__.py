"""A group's ledger: the domain model over Automerge, its view, conflicts and history."""

from hearth.ledger.automerge_doc import Edit, EntryRef, LedgerDoc
from hearth.ledger.conflicts import find_conflicts
from hearth.ledger.history import history
from hearth.ledger.ledger import Ledger, touched_of
from hearth.ledger.model import (
    Action,
    Commitment,
    CommitmentStatus,
    Conflict,
    Event,
    HistoryItem,
    Kind,
    Member,
    Need,
    NeedStatus,
    Resource,
    Role,
)

__all__ = [
    "Action",
    "Commitment",
    "CommitmentStatus",
    "Conflict",
    "Edit",
    "EntryRef",
    "Event",
    "HistoryItem",
    "Kind",
    "Ledger",
    "LedgerDoc",
    "Member",
    "Need",
    "NeedStatus",
    "Resource",
    "Role",
    "find_conflicts",
    "history",
    "touched_of",
]
