"""The materialised view every query reads.

The view keeps each table's entries as plain dicts, filled once when a ledger opens and
then refreshed entry by entry from what an edit or a batch of remote changes touched —
never by re-reading the whole document. Derived resources (quantity, custodian) are
cached per resource and dropped when one of its entries changes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from hearth.errors import NotFound
from hearth.ledger import derive
from hearth.ledger.automerge_doc import EntryRef, LedgerDoc
from hearth.ledger.model import (
    TABLES,
    Commitment,
    Event,
    Member,
    Need,
    Resource,
)

__all__ = ["LedgerView"]

_NOUN = {
    "resources": "resource",
    "needs": "need",
    "commitments": "commitment",
    "events": "event",
    "members": "member",
}


class LedgerView:
    """Entries of one ledger, indexed for queries, kept current from touched entries."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, object]]] = {t: {} for t in TABLES}
        self._events_by_resource: defaultdict[str, set[str]] = defaultdict(set)
        self._resources: dict[str, Resource] = {}
        self._events: dict[str, Event] = {}

    @classmethod
    def build(cls, docs: Iterable[LedgerDoc]) -> LedgerView:
        """Read every table of every document once (on open)."""
        view = cls()
        for doc in docs:
            for table in TABLES:
                for entry_id, raw in doc.read_table(table).items():
                    view._store(table, entry_id, raw)
        return view

    def refresh(self, doc: LedgerDoc, touched: Iterable[EntryRef]) -> None:
        """Re-read just the entries an edit or a remote batch touched."""
        for table, entry_id in touched:
            if table not in self.tables:
                continue
            raw = doc.read_entry(table, entry_id)
            if raw is None:
                self._drop(table, entry_id)
            else:
                self._store(table, entry_id, raw)

    def _store(self, table: str, entry_id: str, raw: dict[str, object]) -> None:
        self.tables[table][entry_id] = raw
        if table == "events":
            self._forget_event(entry_id)
            parsed = derive.event(entry_id, raw)
            if parsed is not None:
                self._events[entry_id] = parsed
                self._events_by_resource[parsed.resource].add(entry_id)
                self._resources.pop(parsed.resource, None)
        elif table == "resources":
            self._resources.pop(entry_id, None)

    def _drop(self, table: str, entry_id: str) -> None:
        self.tables[table].pop(entry_id, None)
        if table == "events":
            self._forget_event(entry_id)
        elif table == "resources":
            self._resources.pop(entry_id, None)

    def _forget_event(self, event_id: str) -> None:
        old = self._events.pop(event_id, None)
        if old is not None:
            self._events_by_resource[old.resource].discard(event_id)
            self._resources.pop(old.resource, None)

    # --- queries ------------------------------------------------------------------

    def resource(self, resource_id: str) -> Resource:
        """One resource with its derived quantity and custodian."""
        cached = self._resources.get(resource_id)
        if cached is None:
            raw = self.tables["resources"].get(resource_id)
            if raw is None:
                raise NotFound(f"There is no resource {resource_id!r}.")
            cached = derive.resource(resource_id, raw, self.events_of(resource_id))
            self._resources[resource_id] = cached
        return cached

    def resources(self, *, include_removed: bool = False) -> list[Resource]:
        """Every resource, by name."""
        found = (self.resource(rid) for rid in self.tables["resources"])
        return sorted(
            (r for r in found if include_removed or not r.removed),
            key=lambda r: (r.name.casefold(), r.id),
        )

    def events_of(self, resource_id: str) -> list[Event]:
        """A resource's events, oldest first."""
        found = (self._events[e] for e in self._events_by_resource.get(resource_id, ()))
        return sorted(found, key=lambda e: (e.at, e.id))

    def events(self) -> list[Event]:
        """Every event, oldest first."""
        return sorted(self._events.values(), key=lambda e: (e.at, e.id))

    def needs(self) -> list[Need]:
        """Every need, soonest due first."""
        found = (derive.need(nid, raw) for nid, raw in self.tables["needs"].items())
        return sorted(found, key=lambda n: (n.by is None, n.by or 0, n.created_at, n.id))

    def need(self, need_id: str) -> Need:
        """One need."""
        raw = self.tables["needs"].get(need_id)
        if raw is None:
            raise NotFound(f"There is no need {need_id!r}.")
        return derive.need(need_id, raw)

    def commitments(self) -> list[Commitment]:
        """Every commitment, soonest due first."""
        found = (derive.commitment(cid, raw) for cid, raw in self.tables["commitments"].items())
        return sorted(found, key=lambda c: (c.due is None, c.due or 0, c.created_at, c.id))

    def commitment(self, commitment_id: str) -> Commitment:
        """One commitment with its replayed status."""
        raw = self.tables["commitments"].get(commitment_id)
        if raw is None:
            raise NotFound(f"There is no commitment {commitment_id!r}.")
        return derive.commitment(commitment_id, raw)

    def members(self) -> list[Member]:
        """Every member, by name."""
        found = (derive.member(mid, raw) for mid, raw in self.tables["members"].items())
        return sorted(found, key=lambda m: (m.name.casefold(), m.id))

    def member(self, member_id: str) -> Member:
        """One member."""
        raw = self.tables["members"].get(member_id)
        if raw is None:
            raise NotFound(f"There is no member {member_id!r}.")
        return derive.member(member_id, raw)

    def member_name(self, member_id: str) -> str:
        """A member's name for display, or a short id for someone unknown."""
        raw = self.tables["members"].get(member_id)
        if raw is None:
            return member_id[:8] if member_id else "the group"
        name = raw.get("name")
        return name if isinstance(name, str) else member_id[:8]

    def committed_from(self, resource_id: str) -> Decimal:
        """How much of a resource open commitments promise away."""
        return sum(
            (
                c.quantity or Decimal(0)
                for c in self.commitments()
                if c.resource == resource_id and c.status.is_open
            ),
            Decimal(0),
        )

    # --- finding entries by what a member types ----------------------------------

    def find(self, table: str, text: str) -> str:
        """The id of the one entry whose id starts with ``text`` (or whose name is ``text``)."""
        noun = _NOUN.get(table, table)
        key = text.strip()
        if not key:
            raise NotFound(f"No {noun} given.")
        entries = self.tables[table]
        if key in entries:
            return key
        matches = [i for i in entries if i.startswith(key.lower())]
        if not matches and table in ("resources", "members"):
            wanted = key.casefold()
            names = {
                i: str(raw["name"]).casefold()
                for i, raw in entries.items()
                if isinstance(raw.get("name"), str) and raw.get("removed") is not True
            }
            matches = [i for i, name in names.items() if name == wanted]
            matches = matches or [i for i, name in names.items() if name.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(f"No {noun} matches {text!r}; list them to see their ids.")
        raise NotFound(f"{text!r} matches {len(matches)} {table}; give more of the id to pick one.")
