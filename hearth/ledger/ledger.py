"""A group's ledger: the operations members perform, each one Automerge transaction.

Every operation checks what it can locally (a resource that is already lent out cannot
be lent again here), writes one transaction, refreshes the view from what it touched and
queues the resulting change for the node to store. Checks a single replica cannot make —
two members lending the same ladder while both offline — are left to
:mod:`hearth.ledger.conflicts`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import cast
from urllib.parse import urlsplit

from hearth.clock import Clock
from hearth.errors import LedgerError, NotAuthorized, NotFound, UsageError
from hearth.ledger import clashes, entry_ids
from hearth.ledger.archive import Archives, archivable
from hearth.ledger.automerge_doc import DocWriter, Edit, EntryRef, Fields, LedgerDoc, change_hash
from hearth.ledger.derive import open_lends
from hearth.ledger.membership_rules import next_admin_rank
from hearth.ledger.model import (
    COMMITMENT_TRANSITIONS,
    STARTING_STOCK,
    TABLES,
    Action,
    Commitment,
    CommitmentStatus,
    Kind,
    Need,
    NeedStatus,
    Resource,
    Role,
)
from hearth.ledger.view import LedgerView
from hearth.values import MAX_NOTE, check_text, format_date, format_quantity

__all__ = ["Ledger", "touched_of"]

IdFactory = Callable[[], str]
LIVE = "live"
"""The name of a group's live ledger document (archives are named by quarter)."""


class Ledger:
    """One group's live ledger document with its view, acting as one member."""

    def __init__(
        self,
        doc: LedgerDoc,
        *,
        author: str,
        clock: Clock,
        new_id: IdFactory,
        view: LedgerView | None = None,
        archives: Archives | None = None,
    ) -> None:
        self.doc = doc
        self.author = author
        self.archives = archives
        self.view = view if view is not None else LedgerView.build(self.docs())
        self._clock = clock
        self._new_id = new_id
        self.outbox: list[tuple[str, Edit]] = []

    @classmethod
    def create(
        cls,
        *,
        seed: bytes,
        name: str,
        actor: bytes,
        creator: str,
        creator_name: str,
        creator_key: str,
        devices: dict[str, Fields],
        clock: Clock,
        new_id: IdFactory,
        archives: Archives | None = None,
    ) -> Ledger:
        """A new group's ledger with its creator as the first admin."""
        name = check_text(name, "group name")
        ledger = cls(
            LedgerDoc.genesis(seed, TABLES, actor),
            author=creator,
            clock=clock,
            new_id=new_id,
            archives=archives,
        )
        now = clock.now_ms()
        with ledger._edit() as w:
            w.put("meta", "group", {"name": name, "created_by": creator, "created_at": now})
            w.put(
                "members",
                creator,
                {
                    "name": creator_name,
                    "key": creator_key,
                    "role": Role.ADMIN.value,
                    "admin_rank": 0,  # the founder is the most senior admin (R7)
                    "joined_at": now,
                    "added_by": creator,
                    "devices": devices,
                },
            )
        return ledger

    @property
    def name(self) -> str:
        """The group's name."""
        return self.view.group_name

    # --- plumbing -------------------------------------------------------------------

    @contextmanager
    def _edit(self, doc_name: str = LIVE, doc: LedgerDoc | None = None) -> Iterator[DocWriter]:
        target = doc or self.doc
        with target.edit() as writer:
            yield writer
        edit = target.last_edit
        self.view.refresh_with(self._read, edit.touched)
        if edit.changes:
            self.outbox.append((doc_name, edit))

    def take_outbox(self) -> list[tuple[str, Edit]]:
        """The local edits made since the last call, as ``(document, edit)``, to store and send."""
        edits, self.outbox = self.outbox, []
        return edits

    def document(self, name: str) -> LedgerDoc:
        """The live document, or the archive document of a quarter."""
        if name == LIVE:
            return self.doc
        if self.archives is None:
            raise LedgerError("This ledger keeps no archives.")
        return self.archives.get(name)

    def archive_docs(self) -> dict[str, LedgerDoc]:
        """Every archive document by quarter."""
        if self.archives is None:
            return {}
        return self.archives.named()

    def docs(self) -> list[LedgerDoc]:
        """The live document and every archive."""
        return [self.doc, *(self.archives.all() if self.archives else [])]

    def _read(self, table: str, entry_id: str) -> dict[str, object] | None:
        """An entry from the live document or, once moved, from an archive."""
        raw = self.doc.read_entry(table, entry_id)
        if raw is None and self.archives is not None:
            for archive in self.archives.all():
                raw = archive.read_entry(table, entry_id)
                if raw is not None:
                    break
        return raw

    def archive_old(self, group_seed: bytes) -> int:
        """Move finished entries older than the archive age out of the live document.

        Returns how many entries moved. Each quarter's entries are copied into its archive
        document, then deleted from the live one; the view does not change.
        """
        if self.archives is None:
            return 0
        moved = 0
        for period, refs in sorted(archivable(self.view, self._clock.now_ms()).items()):
            present = [(t, i, raw) for t, i in refs if (raw := self.doc.read_entry(t, i))]
            if not present:
                continue
            archive = self.archives.get(period)
            with self._edit(period, archive) as w:
                for table, entry_id, raw in present:
                    w.put(table, entry_id, raw)  # type: ignore[arg-type]
            with self._edit() as w:
                for table, entry_id, _ in present:
                    w.delete(table, entry_id)
            moved += len(present)
        return moved

    def apply_remote(self, changes: Sequence[bytes], touched: Sequence[EntryRef] | None) -> int:
        """Apply changes from another device; return how many were new.

        ``touched`` lists the entries the author's edits touched, which lets the view
        refresh just those. With no list, or when the batch also released changes that
        were waiting for a dependency (whose touched entries are not known here), the view
        is rebuilt from the document.
        """
        return len(self.apply_remote_to(self.doc, changes, touched))

    def apply_remote_to(
        self, doc: LedgerDoc, changes: Sequence[bytes], touched: Sequence[EntryRef] | None
    ) -> set[bytes]:
        """:meth:`apply_remote` for any of the group's documents (live or archive);
        returns the hashes applied (held-back ones that could now go in too)."""
        submitted = {change_hash(c).hash for c in changes}
        applied = doc.apply(changes)
        if applied:
            if touched is None or applied - submitted:
                self.view.rebuild(self.docs())
            else:
                self.view.refresh_with(self._read, touched)
        return applied

    def _entry_id(self) -> str:
        """A new entry's or record's id, tagged as this member's (:mod:`.entry_ids`)."""
        return entry_ids.tagged_id(self._new_id(), self.author)

    def _stamp(self) -> dict[str, str | int]:
        return {"created_by": self.author, "created_at": self._clock.now_ms()}

    def _live_resource(self, resource_id: str) -> Resource:
        resource = self.view.resource(resource_id)
        if resource.removed:
            raise LedgerError(f"'{resource.name}' was removed from the ledger.")
        return resource

    def _member(self, member_id: str) -> str:
        return self.view.find("members", member_id)

    def _event(self, w: DocWriter, action: Action, resource_id: str, **fields: str | int) -> str:
        event_id = self._entry_id()
        body: dict[str, str | int] = {
            "action": action.value,
            "resource": resource_id,
            "by": self.author,
            "at": self._clock.now_ms(),
        }
        body.update(fields)
        w.put("events", event_id, body)
        return event_id

    # --- members ----------------------------------------------------------------------

    def add_member(
        self, *, member_id: str, name: str, key: str, role: Role, devices: dict[str, Fields]
    ) -> None:
        """Record a member (and their devices) in the ledger."""
        name = check_text(name, "member name")
        with self._edit() as w:
            w.put(
                "members",
                member_id,
                {
                    "name": name,
                    "key": key,
                    "role": role.value,
                    "joined_at": self._clock.now_ms(),
                    "added_by": self.author,
                    "devices": devices,
                },
            )

    def add_invite(
        self,
        invite_id: str,
        *,
        key: str,
        expires_at: int,
        by_device: str,
        for_member: str | None = None,
        confirmed: str | None = None,
    ) -> None:
        """Record an invite: the public key a joiner's claim must be signed with, and the
        device (``by_device``, hex) that alone confirms which claim counts (R14) — here at
        once when the joining device is known (``confirmed``, hex: an invite code). With
        ``for_member``, an invite for another device of that member only."""
        stamp = self._stamp()
        fields: dict[str, str | int] = {
            "key": key,
            "expires_at": expires_at,
            "by_device": by_device,
            **stamp,
            # A claim dates its joining no earlier than the invite was made (R7a).
            "join_not_before": stamp["created_at"],
        }
        if for_member is not None:
            fields |= {"kind": "device", "member": for_member}
        if confirmed is not None:
            fields |= {"confirmed": confirmed, "confirmed_at": self._clock.now_ms()}
        with self._edit() as w:
            w.put("invites", invite_id, fields)

    def confirm_invite(self, invite_id: str, device: str) -> None:
        """As the device that made an invite: the claim of ``device`` (hex) is the one
        that counts; no other claim to it ever will."""
        with self._edit() as w:
            w.put("invites", invite_id, {"confirmed": device, "confirmed_at": self._clock.now_ms()})

    def claim_device(self, invite_id: str, device_id: str, card: Fields) -> None:
        """As a member's new device: add it to the member's entry and mark the invite used."""
        self.view.member(self.author)
        with self._edit() as w:
            w.put("members", self.author, {"devices": {device_id: card}})
            w.put(
                "invites",
                invite_id,
                {"claimed_by": self.author, "claimed_at": self._clock.now_ms()},
            )

    def claim_invite(
        self,
        invite_id: str,
        *,
        name: str,
        key: str,
        device_id: str,
        device: Fields,
        not_before: int = 0,
    ) -> None:
        """As a joining member: add yourself and this device, and mark the invite used.
        ``not_before``: when the invite was made; the joining is dated no earlier, or
        the claim would not count (docs/security.md, R7a)."""
        now = self._clock.now_ms()
        with self._edit() as w:
            w.put(
                "members",
                self.author,
                {
                    "name": check_text(name, "member name"),
                    "key": key,
                    "role": Role.MEMBER.value,
                    "joined_at": max(now, not_before),
                    "invite": invite_id,
                    "devices": {device_id: device},
                },
            )
            w.put("invites", invite_id, {"claimed_by": self.author, "claimed_at": now})

    def add_relay(self, url: str) -> None:
        """List a relay the group's nodes sync through."""
        url = check_relay_url(url)
        with self._edit() as w:
            w.put("relays", relay_key(url), {"url": url, "removed": False, **self._stamp()})

    def remove_relay(self, url: str) -> None:
        """Stop listing a relay."""
        key = relay_key(url.strip())
        raw = self.view.tables["relays"].get(key)
        if raw is None or raw.get("removed") is True:
            listed = ", ".join(self.view.relays()) or "none"
            raise NotFound(f"The group does not list the relay {url}; it lists: {listed}.")
        with self._edit() as w:
            w.put("relays", key, {"removed": True, "removed_by": self.author})

    def remove_member(self, member_id: str, cutoffs: dict[str, int]) -> None:
        """Record that a member is out of the group; ``cutoffs``: device key (hex) -> the
        last seq of its feed that counts (SECURITY.md R6)."""
        self._live_member(member_id)
        with self._edit() as w:
            w.put("members", member_id, {"removed": {**self._stamp(), "cutoffs": cutoffs}})

    def leave(self, cutoffs: dict[str, int]) -> None:
        """Record that this member has left the group."""
        self._live_member(self.author)
        with self._edit() as w:
            w.put(
                "members", self.author, {"left": {"at": self._clock.now_ms(), "cutoffs": cutoffs}}
            )

    def set_role(self, member_id: str, role: Role) -> None:
        """Make a member an admin (ranked after every admin known here, R7), or an
        ordinary member."""
        self._live_member(member_id)
        fields: dict[str, str | int] = {"role": role.value}
        if role is Role.ADMIN:
            fields["admin_rank"] = next_admin_rank(self.view.tables["members"], member_id)
        with self._edit() as w:
            w.put("members", member_id, fields)

    def remove_device(self, member_id: str, device_id: str, cutoff: int) -> None:
        """Record that one device no longer writes for its member, after seq ``cutoff``."""
        with self._edit() as w:
            w.put(
                "members",
                member_id,
                {"devices": {device_id: {"removed": {**self._stamp(), "cutoff": cutoff}}}},
            )

    def write_again(self, table: str, entry_id: str, fields: dict[str, object]) -> None:
        """Write an entry's fields again as this member's change (R8's re-issue of edits
        that were built on a removed device's writes and so did not count)."""
        with self._edit() as w:
            w.put(table, entry_id, cast(Fields, fields))

    def _live_member(self, member_id: str) -> None:
        if self.view.member(member_id).status != "active":
            raise NotFound(f"{self.view.member_name(member_id)} is no longer in the group.")

    def add_actor(self, member_id: str, device_id: str, actor: str) -> None:
        """List one more actor id (hex) a device of this member writes under."""
        with self._edit() as w:
            w.put("members", member_id, {"devices": {device_id: {"actors": {actor: True}}}})

    def add_device(self, member_id: str, device_id: str, card: Fields) -> None:
        """Record one of a member's devices (with the actor ids it writes under)."""
        self.view.member(member_id)
        with self._edit() as w:
            w.put("members", member_id, {"devices": {device_id: card}})

    # --- resources ----------------------------------------------------------------------

    def add_resource(
        self,
        name: str,
        *,
        kind: Kind = Kind.OTHER,
        quantity: Decimal = Decimal(1),
        unit: str = "",
        location: str = "",
        note: str = "",
        shareable: bool = False,
    ) -> Resource:
        """Add a resource with its starting quantity (recorded as a ``produce`` event)."""
        fields: dict[str, str | int | bool] = {
            "name": check_text(name, "resource name"),
            "kind": kind.value,
            "unit": check_text(unit, "unit", limit=30, empty_ok=True),
            "location": check_text(location, "location", empty_ok=True),
            "note": check_text(note, "note", limit=MAX_NOTE, empty_ok=True),
            "keeper": self.author,
            "shareable": shareable,
            **self._stamp(),
        }
        resource_id = self._entry_id()
        with self._edit() as w:
            # Sub-maps are made with their entry, never later: two devices creating the
            # same sub-map concurrently would each make one and only one would survive.
            w.put("resources", resource_id, {**fields, "edits": {}})
            if quantity > 0:
                self._event(w, Action.PRODUCE, resource_id, qty=str(quantity), note=STARTING_STOCK)
        return self.view.resource(resource_id)

    def edit_resource(
        self,
        resource_id: str,
        *,
        name: str | None = None,
        kind: Kind | None = None,
        unit: str | None = None,
        location: str | None = None,
        note: str | None = None,
        keeper: str | None = None,
        shareable: bool | None = None,
        quantity: Decimal | None = None,
    ) -> Resource:
        """Change a resource's details; a new quantity is recorded as a correction event."""
        current = self._live_resource(resource_id)
        fields: dict[str, str | bool] = {}
        if name is not None:
            fields["name"] = check_text(name, "resource name")
        if kind is not None:
            fields["kind"] = kind.value
        if unit is not None:
            fields["unit"] = check_text(unit, "unit", limit=30, empty_ok=True)
        if location is not None:
            fields["location"] = check_text(location, "location", empty_ok=True)
        if note is not None:
            fields["note"] = check_text(note, "note", limit=MAX_NOTE, empty_ok=True)
        if keeper is not None:
            fields["keeper"] = self._member(keeper)
        if shareable is not None:
            fields["shareable"] = shareable
        raw = self.view.tables["resources"][resource_id]
        # A form sends every field: only those it changes are edits (and can clash), or
        # those it sets again to settle a clash.
        fields = {
            f: v
            for f, v in fields.items()
            if raw.get(f) != v or len(clashes.field_heads(raw, f)) > 1
        }
        delta = None if quantity is None else quantity - current.quantity
        if not fields and not delta:
            raise LedgerError("Nothing to change: give at least one new value.")
        changed = ",".join(sorted([*fields, *(["quantity"] if delta else [])]))
        now = self._clock.now_ms()
        # What this edit saw of each field, so that an edit made elsewhere at the same
        # time shows as a clash rather than one value vanishing (hearth.ledger.clashes).
        record: dict[str, object] = {
            "by": self.author,
            "at": now,
            "fields": changed,
            "over": clashes.over_fields(raw, sorted(fields)),
            "values": {f: clashes.as_value(v) for f, v in fields.items() if f in clashes.TRACKED},
        }
        with self._edit() as w:
            w.put(
                "resources",
                resource_id,
                cast(
                    Fields,
                    {
                        **fields,
                        "updated_by": self.author,
                        "updated_at": now,
                        "edits": {self._entry_id(): record},
                    },
                ),
            )
            if delta:
                action = Action.RAISE if delta > 0 else Action.LOWER
                self._event(w, action, resource_id, qty=str(abs(delta)), note="correction")
        return self.view.resource(resource_id)

    def remove_resource(self, resource_id: str) -> Resource:
        """Mark a resource removed; its history stays."""
        self._live_resource(resource_id)
        now = self._clock.now_ms()
        with self._edit() as w:
            w.put(
                "resources",
                resource_id,
                {
                    "removed": True,
                    "updated_by": self.author,
                    "updated_at": now,
                    "edits": {
                        self._entry_id(): {"by": self.author, "at": now, "fields": "removed"}
                    },
                },
            )
        return self.view.resource(resource_id)

    # --- what happens to resources ---------------------------------------------------------

    def lend(self, resource_id: str, *, to: str, until: int | None = None) -> Resource:
        """Record that a member now has the resource, until a date if given."""
        resource = self._live_resource(resource_id)
        borrower = self._member(to)
        if resource.lent_to:
            holder = self.view.member_name(resource.lent_to[-1])
            when = f" until {format_date(resource.lent_until)}" if resource.lent_until else ""
            raise LedgerError(
                f"'{resource.name}' is already lent to {holder}{when}; record its return first."
            )
        if borrower == resource.keeper:
            # The keeper has it whenever it is not lent: "lending" it to them records nothing
            # a member could read (a member other than the keeper taking it is a lend to
            # themselves, told as "took" in the history).
            who = self.view.member_name(borrower)
            keeps, has = ("You keep", "you") if borrower == self.author else (f"{who} keeps", who)
            raise LedgerError(
                f"{keeps} '{resource.name}': it is with {has} whenever it is not lent out, so "
                "there is nothing to lend. Choose who borrows it, or change who keeps it."
            )
        fields: dict[str, str | int] = {"to": borrower, "qty": "0"}
        if until is not None:
            if until <= self._clock.now_ms():
                raise LedgerError("The return date is in the past; give a later date.")
            fields["until"] = until
        with self._edit() as w:
            self._event(w, Action.LEND, resource_id, **fields)
        return self.view.resource(resource_id)

    def return_(self, resource_id: str, *, borrower: str | None = None) -> Resource:
        """Record that the resource came back (from every borrower, or just one)."""
        resource = self._live_resource(resource_id)
        who = None if borrower is None else self._member(borrower)
        lends = [
            e.id for e in open_lends(self.view.events_of(resource_id)) if who is None or e.to == who
        ]
        if not lends:
            raise LedgerError(f"'{resource.name}' is not lent out, so there is nothing to return.")
        with self._edit() as w:
            self._event(w, Action.RETURN, resource_id, qty="0", closes=",".join(sorted(lends)))
        return self.view.resource(resource_id)

    def produce(self, resource_id: str, quantity: Decimal, *, note: str = "") -> Resource:
        """Record that more of a resource exists (harvested, made, donated)."""
        self._live_resource(resource_id)
        with self._edit() as w:
            self._event(
                w,
                Action.PRODUCE,
                resource_id,
                qty=str(quantity),
                note=check_text(note, "note", limit=MAX_NOTE, empty_ok=True),
            )
        return self.view.resource(resource_id)

    def consume(self, resource_id: str, quantity: Decimal, *, note: str = "") -> Resource:
        """Record that some of a resource was used up."""
        self._check_available(self._live_resource(resource_id), quantity, "use")
        with self._edit() as w:
            self._event(
                w,
                Action.CONSUME,
                resource_id,
                qty=str(quantity),
                note=check_text(note, "note", limit=MAX_NOTE, empty_ok=True),
            )
        return self.view.resource(resource_id)

    def give(self, resource_id: str, *, to: str, quantity: Decimal, fulfils: str = "") -> Resource:
        """Record that some of a resource went to a member."""
        receiver = self._member(to)
        self._check_available(self._live_resource(resource_id), quantity, "give")
        with self._edit() as w:
            self._give(w, resource_id, receiver, quantity, fulfils)
        return self.view.resource(resource_id)

    def _give(
        self, w: DocWriter, resource_id: str, receiver: str, quantity: Decimal, fulfils: str
    ) -> None:
        fields: dict[str, str | int] = {"to": receiver, "qty": str(quantity)}
        if fulfils:
            fields["fulfils"] = fulfils
        self._event(w, Action.GIVE, resource_id, **fields)

    def _check_available(self, resource: Resource, quantity: Decimal, verb: str) -> None:
        if quantity > resource.quantity:
            unit = f" {resource.unit}" if resource.unit else ""
            raise LedgerError(
                f"Cannot {verb} {format_quantity(quantity)}{unit} of '{resource.name}': "
                f"only {format_quantity(resource.quantity)}{unit} recorded."
            )

    # --- needs ----------------------------------------------------------------------

    def add_need(
        self, what: str, *, quantity: Decimal | None = None, unit: str = "", by: int | None = None
    ) -> Need:
        """Record that a member needs something."""
        fields: dict[str, str | int] = {
            "what": check_text(what, "need"),
            "unit": check_text(unit, "unit", limit=30, empty_ok=True),
            **self._stamp(),
        }
        if quantity is not None:
            fields["qty"] = str(quantity)
        if by is not None:
            fields["by"] = by
        need_id = self._entry_id()
        with self._edit() as w:
            w.put("needs", need_id, fields)
        return self.view.need(need_id)

    def close_need(self, need_id: str) -> Need:
        """Mark a need as met or no longer wanted."""
        need = self.view.need(need_id)
        if need.status is NeedStatus.CLOSED:
            raise LedgerError(f"The need for '{need.what}' is already closed.")
        with self._edit() as w:
            w.put(
                "needs",
                need_id,
                {"closed": True, "closed_by": self.author, "closed_at": self._clock.now_ms()},
            )
        return self.view.need(need_id)

    # --- commitments ------------------------------------------------------------------

    def add_commitment(
        self,
        what: str,
        *,
        giver: str,
        receiver: str,
        resource: str = "",
        quantity: Decimal | None = None,
        due: int | None = None,
    ) -> Commitment:
        """Record a proposed promise from one member to another."""
        fields: dict[str, str | int] = {
            "what": check_text(what, "commitment"),
            "giver": self._member(giver),
            "receiver": self._member(receiver),
            **self._stamp(),
        }
        if fields["giver"] == fields["receiver"]:
            raise LedgerError("A commitment needs two different members.")
        if resource:
            fields["resource"] = self._live_resource(resource).id
        if quantity is not None:
            fields["qty"] = str(quantity)
        if due is not None:
            fields["due"] = due
        commitment_id = self._entry_id()
        with self._edit() as w:
            w.put("commitments", commitment_id, {**fields, "changes": {}})
        return self.view.commitment(commitment_id)

    def put_meta(self, key: str, fields: dict[str, str | int | bool]) -> None:
        """Keep a group-wide setting (such as a neighbourhood the group is in)."""
        with self._edit() as w:
            w.put("meta", key, fields)

    def add_handoff(
        self,
        handoff: str,
        what: str,
        *,
        neighbour: str,
        member: str,
        giving: bool,
        resource: str = "",
        quantity: Decimal | None = None,
        unit: str = "",
    ) -> Commitment:
        """Record an accepted neighbourhood request as an accepted commitment between one
        of our members and a neighbour group; keyed by the request, so recording it twice
        (two members' devices at once) writes the same entry. ``unit`` is the offer's (the
        receiving group has no resource of its own to take it from)."""
        existing = self.view.tables["commitments"].get(handoff)
        if existing is not None:
            return self.view.commitment(handoff)
        fields: dict[str, str | int] = {
            "what": check_text(what, "commitment"),
            "giver": self._member(member) if giving else "",
            "receiver": "" if giving else self._member(member),
            "neighbour": check_text(neighbour, "neighbour"),
            "handoff": handoff,
            **self._stamp(),
        }
        if resource:
            fields["resource"] = self._live_resource(resource).id
        if quantity is not None:
            fields["qty"] = str(quantity)
        if unit:
            fields["unit"] = check_text(unit, "unit", limit=30, empty_ok=True)
        now = self._clock.now_ms()
        accepted: Fields = {"from": "proposed", "to": "accepted", "by": self.author, "at": now}
        with self._edit() as w:
            w.put("commitments", handoff, {**fields, "changes": {self._entry_id(): accepted}})
        return self.view.commitment(handoff)

    def change_commitment(self, commitment_id: str, to: CommitmentStatus) -> Commitment:
        """Move a commitment along its life; fulfilling one tied to a resource records a gift."""
        commitment = self.view.commitment(commitment_id)
        if to not in COMMITMENT_TRANSITIONS[commitment.status]:
            allowed = sorted(s.value for s in COMMITMENT_TRANSITIONS[commitment.status])
            hint = f"it can be {', '.join(allowed)}" if allowed else "it is closed"
            raise LedgerError(
                f"'{commitment.what}' is {commitment.status.value}, so it cannot be "
                f"{to.value}; {hint}."
            )
        if (
            to in (CommitmentStatus.ACCEPTED, CommitmentStatus.DECLINED)
            and not commitment.handoff
            and self.author == commitment.created_by
            and self.author in (commitment.giver, commitment.receiver)
        ):
            other = commitment.receiver if self.author == commitment.giver else commitment.giver
            raise NotAuthorized(
                f"You proposed '{commitment.what}': {self.view.member_name(other)} accepts or "
                "declines it; you can cancel it."
            )
        gives = to is CommitmentStatus.FULFILLED and commitment.resource and commitment.quantity
        if gives:
            assert commitment.quantity is not None
            self._check_available(
                self._live_resource(commitment.resource), commitment.quantity, "give"
            )
        now = self._clock.now_ms()
        change = {"from": commitment.status.value, "to": to.value, "by": self.author, "at": now}
        with self._edit() as w:
            w.put("commitments", commitment_id, {"changes": {self._entry_id(): change}})
            if gives:
                assert commitment.quantity is not None
                self._give(
                    w, commitment.resource, commitment.receiver, commitment.quantity, commitment_id
                )
        return self.view.commitment(commitment_id)


def relay_key(url: str) -> str:
    """The ledger key of a relay entry."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def check_relay_url(url: str, kind: str = "relay") -> str:
    """A relay's (or a ``kind`` of node's) address as ``ws://host:port`` or
    ``wss://host[:port][/path]``, or a clear error."""
    text = url.strip()
    parsed = urlsplit(text)
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname:
        raise UsageError(f"{url!r} is not a {kind} address; it looks like ws://HOST:PORT.")
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"{url!r} has a port that is not a number between 0 and 65535.") from None
    return text


def touched_of(edits: Sequence[Edit]) -> list[EntryRef]:
    """All entries a list of edits touched, in a stable order."""
    return sorted({ref for edit in edits for ref in edit.touched})
