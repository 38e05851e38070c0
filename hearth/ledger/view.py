"""The materialised view every query reads.

The view keeps each table's entries as plain dicts, filled once when a ledger opens and
then refreshed entry by entry from what an edit or a batch of remote changes touched —
never by re-reading the whole document. Derived resources (quantity, custodian) are
cached per resource and dropped when one of its entries changes.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable
from decimal import Decimal

from hearth import lookup
from hearth.errors import NotFound
from hearth.ledger import derive, membership_rules
from hearth.ledger.automerge_doc import EntryRef, LedgerDoc
from hearth.ledger.model import (
    TABLES,
    Commitment,
    Event,
    Member,
    Need,
    NeedStatus,
    Resource,
    Role,
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
    """Entries of one ledger, indexed for queries, kept current from touched entries.

    The view also remembers what changed since the node last saved it (:meth:`take_dirty`),
    so the node can keep its stored copy of the view in step.
    """

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.tables: dict[str, dict[str, dict[str, object]]] = {t: {} for t in TABLES}
        self._events_by_resource: defaultdict[str, set[str]] = defaultdict(set)
        self._resources: dict[str, Resource] = {}
        self._events: dict[str, Event] = {}  # parsed lazily
        self._event_resource: dict[str, str] = {}
        self._dirty: set[EntryRef] = set()
        self._rebuilt = False

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, str, dict[str, object]]]) -> LedgerView:
        """A view from stored ``(table, id, entry)`` rows."""
        view = cls()
        for table, entry_id, raw in entries:
            if table in view.tables:
                view._store(table, entry_id, raw)
        view._dirty.clear()
        return view

    @classmethod
    def build(cls, docs: Iterable[LedgerDoc]) -> LedgerView:
        """Read every table of every document once (costly: only when nothing is stored)."""
        view = cls()
        view.rebuild(docs)
        return view

    def rebuild(self, docs: Iterable[LedgerDoc]) -> None:
        """Forget everything and read the documents afresh."""
        self._clear()
        for doc in docs:
            for table in TABLES:
                for entry_id, raw in doc.read_table(table).items():
                    self._store(table, entry_id, raw)
        self._dirty.clear()
        self._rebuilt = True

    def refresh(self, doc: LedgerDoc, touched: Iterable[EntryRef]) -> None:
        """Re-read just the entries an edit or a remote batch touched."""
        self.refresh_with(doc.read_entry, touched)

    def refresh_with(
        self, read: Callable[[str, str], dict[str, object] | None], touched: Iterable[EntryRef]
    ) -> None:
        """Re-read the touched entries through ``read`` (the document, or the store)."""
        for table, entry_id in touched:
            if table not in self.tables:
                continue
            raw = read(table, entry_id)
            if raw is None:
                self._drop(table, entry_id)
            else:
                self._store(table, entry_id, raw)

    def take_dirty(self) -> tuple[bool, list[tuple[str, str, dict[str, object] | None]]]:
        """What changed since the last call: ``(rebuilt, entries)`` for the node to store.

        When ``rebuilt`` is true the entries are the whole view.
        """
        entries: list[tuple[str, str, dict[str, object] | None]]
        if self._rebuilt:
            entries = [(t, i, raw) for t, rows in self.tables.items() for i, raw in rows.items()]
        else:
            entries = [(t, i, self.tables[t].get(i)) for t, i in sorted(self._dirty)]
        rebuilt = self._rebuilt
        self._dirty.clear()
        self._rebuilt = False
        return rebuilt, entries

    def _store(self, table: str, entry_id: str, raw: dict[str, object]) -> None:
        self.tables[table][entry_id] = raw
        self._dirty.add((table, entry_id))
        if table == "events":
            # Parsed on first use: opening a big ledger should not parse every event.
            self._forget_event(entry_id)
            resource = raw.get("resource")
            if isinstance(resource, str):
                self._event_resource[entry_id] = resource
                self._events_by_resource[resource].add(entry_id)
                self._resources.pop(resource, None)
        elif table == "resources":
            self._resources.pop(entry_id, None)

    def _drop(self, table: str, entry_id: str) -> None:
        self.tables[table].pop(entry_id, None)
        self._dirty.add((table, entry_id))
        if table == "events":
            self._forget_event(entry_id)
        elif table == "resources":
            self._resources.pop(entry_id, None)

    def _forget_event(self, event_id: str) -> None:
        self._events.pop(event_id, None)
        resource = self._event_resource.pop(event_id, None)
        if resource is not None:
            self._events_by_resource[resource].discard(event_id)
            self._resources.pop(resource, None)

    def _event(self, event_id: str) -> Event | None:
        parsed = self._events.get(event_id)
        if parsed is None:
            raw = self.tables["events"].get(event_id)
            parsed = None if raw is None else derive.event(event_id, raw)
            if parsed is not None:
                self._events[event_id] = parsed
        return parsed

    @property
    def group_name(self) -> str:
        """The group's name as the ledger records it."""
        value = self.tables["meta"].get("group", {}).get("name")
        return value if isinstance(value, str) else "(unnamed group)"

    def relays(self) -> list[str]:
        """The relay addresses the group lists."""
        return sorted(
            str(raw["url"])
            for raw in self.tables["relays"].values()
            if isinstance(raw.get("url"), str) and raw.get("removed") is not True
        )

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
        found = (self._event(e) for e in self._events_by_resource.get(resource_id, ()))
        return sorted((e for e in found if e is not None), key=lambda e: (e.at, e.id))

    def events(self) -> list[Event]:
        """Every event, oldest first."""
        found = (self._event(e) for e in self._event_resource)
        return sorted((e for e in found if e is not None), key=lambda e: (e.at, e.id))

    def events_before(self, cutoff_ms: int) -> list[Event]:
        """Events that happened before a moment (read without deriving the newer ones: the
        archive check asks this often, of ledgers with many events)."""
        events = self.tables["events"]
        old = (
            self._event(event_id)
            for event_id in self._event_resource
            if _before(events.get(event_id, {}).get("at"), cutoff_ms)
        )
        return sorted((e for e in old if e is not None), key=lambda e: (e.at, e.id))

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

    def members(self, *, include_gone: bool = False) -> list[Member]:
        """The group's members by name (with those removed or gone, if asked)."""
        found = (self.member(mid) for mid in self.tables["members"])
        return sorted(
            (m for m in found if include_gone or m.status == "active"),
            key=lambda m: (m.name.casefold(), m.id),
        )

    def member(self, member_id: str) -> Member:
        """One member, with the role they act in (SECURITY.md R7: never no admin)."""
        members = self.tables["members"]
        raw = members.get(member_id)
        if raw is None:
            raise NotFound(f"There is no member {member_id!r}.")
        found = derive.member(member_id, raw)
        role = Role(membership_rules.effective_role(members, member_id))
        return found if role is found.role else dataclasses.replace(found, role=role)

    def giver_name(self, commitment: Commitment) -> str:
        """Who gives in a commitment: a member, or the neighbour group of a handoff."""
        if commitment.neighbour and not commitment.giver:
            return commitment.neighbour
        return self.member_name(commitment.giver)

    def receiver_name(self, commitment: Commitment) -> str:
        """Who receives in a commitment: a member, or the neighbour group of a handoff."""
        if commitment.neighbour and not commitment.receiver:
            return commitment.neighbour
        return self.member_name(commitment.receiver)

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
        """The id of the one entry ``text`` names: an id or its start, or a name typed in
        part (a need's or commitment's "what"); see :mod:`hearth.lookup`."""
        noun = _NOUN.get(table, table)
        listing = "hearth history" if table == "events" else f"hearth {noun} list"
        return lookup.pick(self.candidates(table), text, noun=noun, listing=listing).id

    def candidates(self, table: str) -> list[lookup.Candidate]:
        """Every entry of a table as something a member can name."""
        entries = self.tables[table]
        if table == "resources":
            return [
                lookup.Candidate(i, _text(raw.get("name")), current=raw.get("removed") is not True)
                for i, raw in entries.items()
            ]
        if table == "members":
            return [
                lookup.Candidate(
                    i,
                    _text(raw.get("name")),
                    current=not raw.get("removed") and "left" not in raw,
                )
                for i, raw in entries.items()
            ]
        if table == "needs":
            return [
                lookup.Candidate(n.id, n.what, current=n.status is NeedStatus.OPEN)
                for n in self.needs()
            ]
        if table == "commitments":
            return [
                lookup.Candidate(c.id, c.what, current=c.status.is_open) for c in self.commitments()
            ]
        return [lookup.Candidate(i, "") for i in entries]


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _before(at: object, cutoff_ms: int) -> bool:
    return isinstance(at, int) and at < cutoff_ms
