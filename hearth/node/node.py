"""A node: one home directory, its store, its identity and the ledgers of its groups.

:func:`open_node` is the one place a node is put together; the CLI, the TUI and the demo
all start here. Every change to a ledger goes through :meth:`Node.change`, which holds
the store's write lock, first catches up with whatever other processes on the same home
wrote, then lets the caller edit, then stores the new changes durably before returning.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hearth import lookup
from hearth.clock import Clock, SystemClock
from hearth.crypto import RandomBytes, SigningKey, verify
from hearth.errors import (
    IdentityError,
    LedgerError,
    NotAuthorized,
    NotFound,
    StorageError,
    UsageError,
)
from hearth.ledger import EntryRef, Ledger, LedgerDoc, entry_ids, membership_rules, touched_of
from hearth.ledger.archive import archive_seed
from hearth.ledger.attribution import own_part
from hearth.ledger.automerge_doc import Fields, change_hash
from hearth.ledger.ledger import LIVE
from hearth.ledger.model import TABLES, Role
from hearth.ledger.view import LedgerView
from hearth.node.changes import ChangeNotifier, LocalChange
from hearth.node.feeds import Feeds
from hearth.node.identity import Identity, has_identity, load_identity
from hearth.protocol.bundle import EpochKeys, Inner, decode_changes
from hearth.protocol.invite_token import Token, make_claim
from hearth.store import GroupRow, Store
from hearth.store.home import make_private
from hearth.values import check_text

__all__ = ["LIVE", "Node", "open_node"]


STORE_FILE = "hearth.db"
_SNAPSHOT_EVERY = 500  # stored changes of one document before they are folded into a snapshot
_REBUILD_ABOVE = 200  # remote changes in one catch-up above which the view is rebuilt whole
_ARCHIVE_CHECK_EVERY = 200  # stored changes between looks for entries old enough to archive
_GENESIS_CONTEXT = b"hearth/v1/genesis\x00"


def random_id() -> str:
    """A fresh 128-bit entry id as hex."""
    return secrets.token_hex(16)


@dataclass(slots=True)
class _Loaded:
    """A group's ledger as this process holds it."""

    view: LedgerView  # always: read from the store's copy of the view
    ledger: Ledger | None  # the Automerge document too, once something writes
    seen: int  # the newest stored change the view (and document) reflect
    claim: bytes = b""  # a join claim for the next bundle this device seals
    # The store's version when it last held nothing newer than ``seen`` (Store.version).
    checked: tuple[int, int] | None = None


class _StoredArchives:
    """A group's archive documents, loaded from the store on first use."""

    def __init__(self, store: Store, group: GroupRow) -> None:
        self._store = store
        self._group = group
        self._docs: dict[str, LedgerDoc] | None = None

    def _loaded(self) -> dict[str, LedgerDoc]:
        if self._docs is None:
            names = sorted(self._store.doc_names(self._group.id) - {LIVE})
            self._docs = {name: load_doc(self._store, self._now(), name) for name in names}
        return self._docs

    def _now(self) -> GroupRow:
        """The group as stored now (the actor id this device writes under may change)."""
        return next((g for g in self._store.groups() if g.id == self._group.id), self._group)

    def get(self, period: str) -> LedgerDoc:
        """The archive document of a quarter, created if there is none yet."""
        docs = self._loaded()
        if period not in docs:
            docs[period] = load_doc(self._store, self._now(), period)
        return docs[period]

    def all(self) -> list[LedgerDoc]:
        """Every archive document of the group."""
        return list(self._loaded().values())

    def named(self) -> dict[str, LedgerDoc]:
        """Every archive document of the group, by quarter."""
        return dict(self._loaded())

    def forget(self) -> None:
        """Drop what is loaded (another process changed the archives)."""
        self._docs = None


def load_doc(store: Store, group: GroupRow, name: str) -> LedgerDoc:
    """One of a group's documents: its snapshot (or genesis) plus every change after it."""
    snapshot = store.snapshot(group.id, name)
    if snapshot is None:
        seed = group.seed if name == LIVE else archive_seed(group.seed, name)
        doc = LedgerDoc.genesis(seed, TABLES, group.actor)
        after = 0
    else:
        try:
            doc = LedgerDoc.load(snapshot[0], group.actor)
        except LedgerError as exc:
            raise StorageError(f"The saved ledger of '{group.name}' is damaged ({exc}).") from exc
        after = snapshot[1]
    doc.apply([r.bytes for r in store.changes_after(group.id, name, after)])
    return doc


class Node:
    """A running node over one home directory."""

    def __init__(
        self,
        home: Path,
        store: Store,
        identity: Identity | None,
        *,
        clock: Clock,
        new_id: Callable[[], str],
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        self.home = home
        self.random_bytes = random_bytes
        self.store = store
        self._identity = identity
        self.clock = clock
        self.new_id = new_id
        self._ledgers: dict[str, _Loaded] = {}
        self._tagged: dict[str, bool] = {}  # a group's founding record never changes
        self._feeds = Feeds(store, identity.device_key, clock, random_bytes) if identity else None
        # A long-running node with an event loop to keep responsive (``hearth serve``, the
        # app) folds changes into snapshots in another process: saving a large document
        # holds the GIL for a noticeable time. Groups due for that collect here.
        self.compact_elsewhere = False
        self.compactions_due: set[str] = set()
        # Told of every change a watcher would show (the app redraws from these).
        self.changes = ChangeNotifier()

    @property
    def feeds(self) -> Feeds:
        """This node's epoch keys and bundles."""
        if self._feeds is None:
            raise IdentityError(
                f"No identity in {self.home} yet: run `hearth init --name YOUR-NAME` first."
            )
        return self._feeds

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def identity(self) -> Identity:
        """Who this node acts as; raises if ``hearth init`` has not run."""
        if self._identity is None:
            raise IdentityError(
                f"No identity in {self.home} yet: run `hearth init --name YOUR-NAME` first."
            )
        return self._identity

    # --- groups -----------------------------------------------------------------------

    def groups(self) -> list[GroupRow]:
        """Every group this node belongs to."""
        return self.store.groups()

    def current_group(self) -> GroupRow:
        """The group commands act on: the one last created or chosen with ``group use``."""
        groups = self.groups()
        if not groups:
            raise NotFound("You are in no group yet: run `hearth group create NAME` first.")
        current = self.store.get_meta("current_group")
        for group in groups:
            if group.id == current:
                return group
        return groups[0]

    def find_group(self, text: str) -> GroupRow:
        """The group ``text`` names: its id or the start of it, or its name typed in part."""
        groups = {g.id: g for g in self.groups()}
        found = lookup.pick(
            [lookup.Candidate(g.id, g.name) for g in groups.values()],
            text,
            noun="group",
            listing="hearth group list",
        )
        return groups[found.id]

    def use_group(self, text: str) -> GroupRow:
        """Make a group the current one."""
        group = self.find_group(text)
        with self.store.write():
            self.store.set_meta("current_group", group.id)
        return group

    def create_group(self, name: str) -> GroupRow:
        """Create a group with this member as its first admin and make it current."""
        me = self.identity
        name = check_text(name, "group name")
        genesis_body = json.dumps(
            {
                "v": 1,
                "kind": "genesis",
                "name": name,
                "member_key": me.member_key.public.hex(),
                "device_key": me.device_key.public.hex(),
                "created_at": self.clock.now_ms(),
                "nonce": self.new_id(),
                "entry_ids": entry_ids.TAGGED,
            },
            sort_keys=True,
        ).encode()
        signature = me.device_key.sign(_GENESIS_CONTEXT + genesis_body)
        genesis = json.dumps(
            {"op": genesis_body.decode(), "sig": signature.hex()}, sort_keys=True
        ).encode()
        group_id = _group_id(genesis)
        actor = self.random_bytes(16)
        row = GroupRow(
            id=group_id,
            name=name,
            actor=actor,
            seed=bytes.fromhex(group_id),
            genesis=genesis,
            created_at=self.clock.now_ms(),
        )
        ledger = Ledger.create(
            seed=row.seed,
            name=name,
            actor=actor,
            creator=me.member_id,
            creator_name=me.name,
            creator_key=me.member_key.public.hex(),
            devices={me.device_id: self._device_card(actor)},
            clock=self.clock,
            new_id=self.new_id,
            archives=_StoredArchives(self.store, row),
        )
        with self.store.write():
            self.store.add_group(row)
            self.feeds.new_epoch(group_id)
            loaded = _Loaded(view=ledger.view, ledger=ledger, seen=self.store.last_seq())
            self._ledgers[group_id] = loaded
            self._save(group_id, loaded)
            self.store.set_meta("current_group", group_id)
        return row

    def _device_card(self, actor: bytes) -> Fields:
        me = self.identity
        return {
            "name": me.device_name,
            "key": me.device_key.public.hex(),
            "kem": me.kem_key.public.hex(),
            "certificate": me.certificate.hex(),
            "actors": {actor.hex(): True},
        }

    def create_invite(
        self,
        *,
        valid_for_ms: int = 24 * 3_600_000,
        device: bool = False,
        for_device: bytes | None = None,
    ) -> Token:
        """Record an invite in the current group's ledger and return its join token.

        ``device``: an invite for another device of this member (any member may make
        one), rather than for a new member (admins only). ``for_device``: the joining
        device's key when it is known (an invite code's exchange proved it): the invite
        is confirmed for it at once. Otherwise this device confirms the first claim that
        reaches it (:mod:`hearth.validity.joins`).
        """
        group = self.current_group()
        view = self.view(group.id)
        me = self.identity
        if not device and view.member(me.member_id).role is not Role.ADMIN:
            raise NotAuthorized("Only the group's admins can invite new members.")
        invite_key = SigningKey.generate(self.random_bytes)
        invite_id = self.new_id()
        expires = self.clock.now_ms() + valid_for_ms
        with self.change(group.id) as ledger:
            ledger.add_invite(
                invite_id,
                key=invite_key.public.hex(),
                expires_at=expires,
                by_device=me.device_key.public.hex(),
                for_member=me.member_id if device else None,
                confirmed=None if for_device is None else for_device.hex(),
            )
            relays = tuple(
                str(r["url"])
                for r in ledger.view.tables["relays"].values()
                if isinstance(r.get("url"), str) and not r.get("removed")
            )
            made = ledger.view.tables["invites"][invite_id].get("join_not_before")
        epochs = tuple((n, k.epoch_id, k.secret) for n, k in self.feeds.epochs(group.id))
        return Token(
            group_id=group.id,
            group_name=ledger.name,
            genesis=group.genesis,
            epochs=epochs,
            relays=relays,
            invite_id=invite_id,
            invite_secret=invite_key.secret,
            expires_at=expires,
            join_not_before=made if isinstance(made, int) else 0,
        )

    def join_with_token(self, token: Token, *, as_device: bool = False) -> GroupRow:
        """Join the group a token invites to: keep its keys and claim the invite.

        The claim goes out with this device's first bundle at the next sync; until then
        the member sees only what they add themselves. ``as_device``: this is another
        device of a member already in the group; its claim waits (:meth:`claim_device`)
        until the member's entry has arrived, so as not to write a rival one.
        """
        if token.expires_at <= self.clock.now_ms():
            raise UsageError("This join token has expired; ask for a new one.")
        verify_genesis(token.genesis)
        group_id = _group_id(token.genesis)
        if group_id != token.group_id:
            raise UsageError("The join token is damaged: its group does not match its record.")
        if any(g.id == group_id for g in self.groups()):
            raise LedgerError("This node already belongs to that group.")
        me = self.identity
        actor = self.random_bytes(16)
        row = GroupRow(
            id=group_id,
            name=token.group_name,
            actor=actor,
            seed=bytes.fromhex(group_id),
            genesis=token.genesis,
            created_at=self.clock.now_ms(),
        )
        claim = make_claim(
            token,
            member_key=me.member_key.public,
            member_name=me.name,
            device_key=me.device_key.public,
            actors=(actor,),
        )
        with self.store.write():
            self.store.add_group(row)
            for number, epoch_id, secret in token.epochs:
                keys = EpochKeys(group_id=bytes.fromhex(group_id), epoch_id=epoch_id, secret=secret)
                self.feeds.add_epoch(group_id, keys, number)
            self.store.set_meta("current_group", group_id)
            if as_device:
                pending = json.dumps({"invite": token.invite_id, "claim": claim.hex()})
                self.store.set_meta(f"device_claim:{group_id}", pending)
                return self.group(group_id)
            with self.writing(group_id) as ledger:
                self._ledgers[group_id].claim = claim
                ledger.claim_invite(
                    token.invite_id,
                    # Never before the invite was made, whatever this device's clock says:
                    # else the claim does not count (R7a: R7's fallback ranks by it).
                    not_before=token.join_not_before,
                    name=me.name,
                    key=me.member_key.public.hex(),
                    device_id=me.device_id,
                    device=self._device_card(actor),
                )
                # Until the group's ledger arrives, sync needs to know where to find it.
                for url in token.relays:
                    if url not in ledger.view.relays():
                        ledger.add_relay(url)
        return self.group(group_id)

    def claim_device(self, group_id: str) -> bool:
        """Add this device to its member's entry, once that entry has arrived, claiming the
        device invite; ``True`` if it was done (now or before)."""
        key = f"device_claim:{group_id}"
        pending = self.store.get_meta(key)
        if not pending:
            return True
        me = self.identity
        if me.member_id not in self.view(group_id).tables["members"]:
            return False
        found = json.loads(pending)
        with self.store.write():
            with self.writing(group_id) as ledger:
                self._ledgers[group_id].claim = bytes.fromhex(found["claim"])
                ledger.claim_device(
                    str(found["invite"]),
                    me.device_id,
                    self._device_card(self.group(group_id).actor),
                )
            self.store.set_meta(key, "")
        return True

    def receive_changes(
        self,
        group_id: str,
        changes: Sequence[bytes],
        touched: Sequence[EntryRef] | None = None,
        *,
        doc: str = LIVE,
    ) -> int:
        """Store and apply Automerge changes as they are; return how many were new.

        No authorship checks: this is for tools and tests that hold trusted changes. What
        comes from other devices arrives as bundles through :mod:`hearth.validity.intake`. A
        damaged change is refused before anything is stored.
        """
        infos = [(change_hash(c).hash, c) for c in changes]
        with self.store.write(), self.writing(group_id) as ledger:
            added = self.store.append_changes(group_id, doc, infos, local=False, touched=touched)
            if added:
                ledger.apply_remote_to(ledger.document(doc), changes, touched)
        return added

    # --- ledgers -------------------------------------------------------------------------

    def view(self, group_id: str | None = None) -> LedgerView:
        """A group's ledger for reading (the current group's by default), up to date.

        Served from the store's copy of the view; the Automerge document is not loaded.
        """
        return self._loaded(self.group(group_id).id).view

    def ledger(self, group_id: str | None = None) -> Ledger:
        """A group's ledger with its Automerge document, up to date with the store."""
        group = self.group(group_id)
        loaded = self._loaded(group.id)
        if loaded.ledger is None:
            loaded.ledger = Ledger(
                load_doc(self.store, group, LIVE),
                author=self.identity.member_id,
                clock=self.clock,
                new_id=self.new_id,
                view=loaded.view,
                archives=_StoredArchives(self.store, group),
            )
        return loaded.ledger

    def warm_up(self, group_id: str | None = None) -> None:
        """Load what taking in others' changes needs — the group's Automerge document and
        the index of its change hashes — ahead of the first one (at 10,000 entries about a
        second, during which Python does nothing else). The app calls it while the member
        is idle, so that the first change to arrive is drawn as quickly as the next."""
        self.ledger(group_id).doc.knows(b"")  # builds the index

    @contextmanager
    def change(self, group_id: str | None = None) -> Iterator[Ledger]:
        """Edit a ledger; everything done inside is stored durably on leaving, or nothing."""
        group = self.group(group_id)
        with self.store.write(), self.writing(group.id) as ledger:
            mine = self.identity.device_key.public
            if membership_rules.cutoff_of(ledger.view.tables["members"], mine) is not None:
                raise NotAuthorized(
                    f"You are no longer in '{group.name}' (removed, or you left) on this "
                    "device; what you write there would not count."
                )
            if mine in self.feeds.equivocations(group.id):
                raise NotAuthorized(
                    "This device's copy of the group was found in two versions (was it "
                    "restored from a backup, or copied?); what it writes no longer counts. "
                    "Ask an admin to remove this device, then add it again with a fresh home."
                )
            yield ledger
        self.changes.notify(LocalChange(group.id))

    def unload(self, group_id: str) -> None:
        """Forget what is in memory of a group; it is loaded again from the store."""
        self._ledgers.pop(group_id, None)

    @contextmanager
    def writing(self, group_id: str) -> Iterator[Ledger]:
        """Inside a store write: edit, then store the changes, their bundle and the view."""
        ledger = self.ledger(group_id)
        try:
            yield ledger
            self._refuse_taken_places(group_id, ledger)
        except BaseException:
            # The store rolls back; what is in memory may be ahead of it, so forget it.
            self.unload(group_id)
            raise
        loaded = self._ledgers[group_id]
        self._save(group_id, loaded)
        self._maybe_archive(group_id, ledger)
        self._maybe_snapshot(group_id, loaded)

    def _refuse_taken_places(self, group_id: str, ledger: Ledger) -> None:
        """Refuse new local changes under an actor id whose next places belong to changes
        of this device's own that wait to be judged here (:class:`NotAuthorized`).

        Automerge gives each change the next number (seq) of its actor in its document.
        A bundle of this device's own that waits (a newcomer's claim judged again before
        the invite it claims is here, R12) has its changes out of the document, so a new
        change would take the number of the first of them: once the waiting one counts,
        neither could follow the other, on any node (R3). What the member writes is
        refused until what waits counts; then the numbers run on after it."""
        if not ledger.outbox:
            return
        waiting = self.feeds.own_waiting(group_id)
        if not waiting:
            return
        new = {(name, change_hash(c).actor) for name, edit in ledger.outbox for c in edit.changes}
        for inner in waiting:
            if inner.kind != "content":
                continue
            for name, change, _ in decode_changes(inner.payload):
                info = change_hash(change)
                if (name, info.actor) in new and not ledger.document(name).knows(info.hash):
                    raise NotAuthorized(_waiting_message(self.group(group_id).name, waiting))

    def _maybe_archive(self, group_id: str, ledger: Ledger) -> None:
        """Now and then, move old finished entries out of the live document."""
        key = f"archive_checked:{group_id}"
        checked = int(self.store.get_meta(key) or 0)
        if self.store.last_seq() - checked < _ARCHIVE_CHECK_EVERY:
            return
        if self.feeds.own_waiting(group_id):
            return  # what it would write could take the places of what waits (above)
        if ledger.archive_old(self.group(group_id).seed):
            self._save(group_id, self._ledgers[group_id])
        self.store.set_meta(key, str(self.store.last_seq()))

    def _save(self, group_id: str, loaded: _Loaded) -> None:
        """Store new local changes and the view entries that changed (inside a write)."""
        if loaded.ledger is not None:
            batches: list[tuple[str, bytes, list[EntryRef]]] = []
            for doc_name, edit in loaded.ledger.take_outbox():
                changes = [(_hash(c), c) for c in edit.changes]
                touched = touched_of([edit])
                self.store.append_changes(group_id, doc_name, changes, local=True, touched=touched)
                batches += [(doc_name, c, touched) for c in edit.changes]
            if batches and self.feeds.epochs(group_id):
                self.feeds.seal_local(group_id, batches, claim=loaded.claim)
                loaded.claim = b""
        rebuilt, entries = loaded.view.take_dirty()
        if rebuilt or entries:
            self.store.put_view_entries(group_id, entries, replace_all=rebuilt)
        name = loaded.view.tables["meta"].get("group", {}).get("name")
        if isinstance(name, str):
            self.store.rename_group(group_id, name)
        loaded.seen = self.store.last_seq()

    def group(self, group_id: str | None = None) -> GroupRow:
        """A group of this node by exact id (the current group for ``None``)."""
        if group_id is None:
            return self.current_group()
        for group in self.groups():
            if group.id == group_id:
                return group
        raise NotFound(f"This node is not in the group {group_id[:12]}.")

    def tags_entry_ids(self, group_id: str) -> bool:
        """Whether the group's entry ids carry their writer's tag (its founding record
        says so: :func:`tags_entry_ids`); read once per group, not per bundle taken in."""
        tagged = self._tagged.get(group_id)
        if tagged is None:
            tagged = self._tagged[group_id] = tags_entry_ids(self.group(group_id).genesis)
        return tagged

    def _loaded(self, group_id: str) -> _Loaded:
        """The group as held in memory, loaded or caught up with the store."""
        loaded = self._ledgers.get(group_id)
        if loaded is not None:
            self._catch_up(group_id, loaded)
            return loaded
        with self.store.read():
            ready = self.store.view_ready(group_id)
            if ready:
                view = LedgerView.from_entries(self.store.view_entries(group_id))
            seen = self.store.last_seq()
        if ready:
            loaded = _Loaded(view=view, ledger=None, seen=seen)
            self._ledgers[group_id] = loaded
            self._catch_up(group_id, loaded)
            return loaded
        # No stored view yet (a store from before views were kept): build and keep one.
        with self.store.write():
            group = self.group(group_id)
            archives = _StoredArchives(self.store, group)
            view = LedgerView.build([load_doc(self.store, group, LIVE), *archives.all()])
            loaded = _Loaded(view=view, ledger=None, seen=0)
            self._save(group_id, loaded)
        self._ledgers[group_id] = loaded
        return loaded

    def _catch_up(self, group_id: str, loaded: _Loaded) -> None:
        """Take in what other processes on this home stored since we last looked.

        They stored the view entries their changes touched in the same transaction, so
        the view is refreshed from the store; a document in memory applies the changes.
        """
        version = self.store.version()
        if version == loaded.checked:
            return  # nothing was written anywhere since
        with self.store.read():
            rows = self.store.changes_after(group_id, None, loaded.seen)
            if not rows:
                loaded.checked = version
                return
            if any(r.touched is None for r in rows) or len(rows) > _REBUILD_ABOVE:
                loaded.view = LedgerView.from_entries(self.store.view_entries(group_id))
            else:
                touched = [t for r in rows for t in r.touched or ()]
                loaded.view.refresh_with(
                    lambda table, entry: self.store.view_entry(group_id, table, entry), touched
                )
                loaded.view.take_dirty()  # what came from the store needs no saving
        if loaded.ledger is not None:
            loaded.ledger.doc.apply([r.bytes for r in rows if r.doc == LIVE])
            if any(r.doc != LIVE for r in rows) and loaded.ledger.archives is not None:
                loaded.ledger.archives.forget()
            loaded.ledger.view = loaded.view
        loaded.seen = rows[-1].seq

    def rebuild_without(self, group_id: str, dropped: set[bytes]) -> set[bytes]:
        """Make each of a group's documents again from its changes minus ``dropped`` (and
        whatever was built on them); returns the hashes that went (inside a write).

        For SECURITY.md R8: an Automerge document cannot forget a change, so a change that
        turned out invalid means starting from the genesis and replaying the valid ones.
        """
        group = self.group(group_id)
        ledger = self.ledger(group_id)
        lost: set[bytes] = set()
        for name, doc in {LIVE: ledger.doc, **ledger.archive_docs()}.items():
            known = doc.change_ids()
            if not known & dropped:
                continue
            seed = group.seed if name == LIVE else archive_seed(group.seed, name)
            fresh = LedgerDoc.genesis(seed, TABLES, group.actor)
            fresh.apply(_without(doc.changes_since([]), dropped))
            lost |= known - fresh.change_ids()
            waiting = [
                r.hash
                for r in self.store.changes_after(group_id, name, 0)
                if r.hash not in known and r.hash not in dropped
            ]
            self.store.put_snapshot(
                group_id, name, fresh.save(), self.store.last_seq(), keep=waiting, replace=True
            )
        self.unload(group_id)
        with self.writing(group_id) as rebuilt:
            rebuilt.view.rebuild(rebuilt.docs())
        return lost

    def own_changes(self, group_id: str) -> dict[bytes, list[EntryRef]]:
        """This device's changes to a group's live document still stored one by one (not
        yet folded into a snapshot), with the entries each touched."""
        return {
            r.hash: r.touched or []
            for r in self.store.changes_after(group_id, None, 0)
            if r.local and r.doc == LIVE
        }

    def write_again(self, group_id: str, again: set[EntryRef], before: LedgerDoc) -> int:
        """Write ``again`` entries as they stood in the live document ``before`` a rebuild
        took out this node's own changes to them; returns how many (inside a write).

        R8's re-issue: entries have stable ids, so writing one again is idempotent.
        """
        me = self.identity
        written = 0
        with self.writing(group_id) as rebuilt:
            members_now = rebuilt.view.tables["members"]
            if membership_rules.cutoff_of(members_now, me.device_key.public) is not None:
                return 0  # this device is out itself: nothing it writes would count
            if again:
                self._fresh_actor(group_id, rebuilt)
            if membership_rules.effective_role(members_now, me.member_id) != "admin":
                # What made this member an admin did not count either: changes to others'
                # membership would be refused everywhere (R5), so they are not written.
                again = {
                    (table, entry_id)
                    for table, entry_id in again
                    if table not in ("members", "invites") or entry_id == me.member_id
                }
            for table, entry_id in sorted(again):
                old = before.read_entry(table, entry_id)
                now = rebuilt.doc.read_entry(table, entry_id) or {}
                # In this member's name only (R2a): what others wrote is theirs to re-issue.
                fields = own_part(old or {}, now, me.member_id)
                if (table, entry_id) == ("members", me.member_id) and isinstance(
                    left := fields.get("left"), dict
                ):
                    # Leaving again: this device's last bundle is now the one that says so.
                    mine_hex = me.device_key.public.hex()
                    cutoffs = dict(left.get("cutoffs") or {})
                    cutoffs[mine_hex] = self.feeds.head(group_id, me.device_key.public)[0] + 1
                    fields["left"] = {**left, "cutoffs": cutoffs}
                if table == "members" and "admin_rank" in fields:
                    # A promotion written again ranks after the admins known now (R7).
                    members_now = rebuilt.view.tables["members"]
                    fields["admin_rank"] = membership_rules.next_admin_rank(members_now, entry_id)
                if fields:
                    rebuilt.write_again(table, entry_id, fields)
                    written += 1
        return written

    def _fresh_actor(self, group_id: str, ledger: Ledger) -> None:
        """Write from now on under a new Automerge actor id, listed on this device's card
        by the first change made under it (inside a write).

        For R8's writing again: the changes taken out hold their places in the old actor's
        sequence on nodes that still count them (a removal voided later, R7, brings them
        back), and Automerge takes one change per actor and place. Under a new actor id
        the writing again never clashes with them; written twice, an entry's fields are
        the same (entries are keyed by stable ids)."""
        actor = self.random_bytes(16)
        me = self.identity
        for doc in (ledger.doc, *ledger.archive_docs().values()):
            doc.actor = actor
        ledger.add_actor(me.member_id, me.device_id, actor.hex())
        self.store.set_group_actor(group_id, actor)

    def compact(self, group_id: str) -> None:
        """Fold a group's stored changes into a snapshot of its live document now.

        The document is saved before the write lock is taken (that is the slow part), so
        the process that keeps a loop responsive is not left waiting for the store.
        """
        doc = self.ledger(group_id).doc
        through = self._ledgers[group_id].seen  # every change stored so far is in `doc`
        known = doc.change_ids()
        saved = doc.save()
        with self.store.write():
            rows = self.store.changes_after(group_id, LIVE, 0)
            waiting = [r.hash for r in rows if r.seq <= through and r.hash not in known]
            self.store.put_snapshot(group_id, LIVE, saved, through, keep=waiting)

    def _maybe_snapshot(self, group_id: str, loaded: _Loaded) -> None:
        if loaded.ledger is None or self.store.count_changes(group_id, LIVE) < _SNAPSHOT_EVERY:
            return
        if self.compact_elsewhere:
            self.compactions_due.add(group_id)
            return
        rows = self.store.changes_after(group_id, LIVE, 0)
        doc = loaded.ledger.doc
        known = doc.change_ids()
        waiting = [r.hash for r in rows if r.hash not in known]
        self.store.put_snapshot(group_id, LIVE, doc.save(), rows[-1].seq, keep=waiting)


def _waiting_message(group_name: str, waiting: Sequence[Inner]) -> str:
    """What a member is told when what they write is refused because bundles of their
    own wait here (:meth:`Node._refuse_taken_places`)."""
    if any(inner.claim for inner in waiting):
        return (
            f"Your join to '{group_name}' does not count on this device yet: it waits for "
            "the invite you used, or its confirmation, to arrive here. Anything you write "
            "now would clash with your join and never count. Run `hearth sync`, then try "
            "again."
        )
    return (
        f"Changes this device made to '{group_name}' wait here for others they build on; "
        "anything you write now would clash with them and never count. Run `hearth sync`, "
        "then try again."
    )


def _without(changes: Sequence[bytes], dropped: set[bytes]) -> list[bytes]:
    """``changes`` (in causal order) minus ``dropped`` and every change built on one: none
    is left for Automerge to hold back, since a held change would block a later change of
    the same actor and sequence number."""
    gone = set(dropped)
    kept = []
    for change in changes:
        info = change_hash(change)
        if info.hash in gone or gone.intersection(info.deps):
            gone.add(info.hash)
        else:
            kept.append(change)
    return kept


def _hash(change: bytes) -> bytes:
    return change_hash(change).hash


def _group_id(genesis: bytes) -> str:
    return hashlib.sha256(genesis).hexdigest()


def tags_entry_ids(genesis: bytes) -> bool:
    """Whether a group's founding record (checked when the group was joined: its id is
    the record's hash) says its entry ids carry their writer's tag
    (:mod:`hearth.ledger.entry_ids`)."""
    try:
        body = json.loads(json.loads(genesis)["op"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LedgerError(f"A group's founding record is malformed ({exc}).") from exc
    return isinstance(body, dict) and body.get("entry_ids") == entry_ids.TAGGED


def verify_genesis(genesis: bytes) -> dict[str, object]:
    """Check a genesis op's signature and return its body."""
    try:
        outer = json.loads(genesis)
        body = outer["op"].encode()
        ok = verify(
            bytes.fromhex(json.loads(body)["device_key"]),
            bytes.fromhex(outer["sig"]),
            _GENESIS_CONTEXT + body,
        )
        parsed: dict[str, object] = json.loads(body)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LedgerError(f"A group's founding record is malformed ({exc}).") from exc
    if not ok:
        raise LedgerError("A group's founding record has a bad signature.")
    return parsed


def open_node(
    home: Path,
    *,
    clock: Clock | None = None,
    new_id: Callable[[], str] = random_id,
    random_bytes: RandomBytes = secrets.token_bytes,
    require_identity: bool = True,
    durable: bool = True,
) -> Node:
    """Open the node in ``home``; the only place a node is assembled."""
    if require_identity and not has_identity(home):
        raise IdentityError(f"No identity in {home} yet: run `hearth init --name YOUR-NAME` first.")
    make_private(home)
    identity = load_identity(home) if has_identity(home) else None
    store = Store.open(home / STORE_FILE, durable=durable)
    return Node(
        home,
        store,
        identity,
        clock=clock or SystemClock(),
        new_id=new_id,
        random_bytes=random_bytes,
    )
