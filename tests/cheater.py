"""A member who cheats, for the membership simulation (docs/security.md §1, issue 19).

The cheater is one of the group's founders. Most of the time its node does what every
member's does (the simulation picks it like any other); at random moments it tries one
of the moves below, using only keys it held at some point: its own device key, the
group's epoch secrets it was given, and the invite secrets of tokens it saw.

- **snapshot**: a snapshot whose documents hold changes under another member's actor id,
  or list a device it made up (and maybe signed by that device), or that claims feed
  heads ahead of what was written, given with the bundles it holds as a relay would
  (R13);
- **token**: a token (or code) it saw used again by a new identity it controls, once the
  invite is confirmed for another device in its own view (R14; taking a token before its
  rightful holder is a residual risk, not reuse);
- **backdate**: a removal, promotion or demotion written on an old copy of its home, from
  before it was removed or demoted (R5–R7);
- **equivocate**: two different bundles for one seq of its feed (R4);
- **old epoch**: a write sealed under an epoch it was removed from, once out (R6, R9);
- **replay**: one of its bundles signed again into another epoch of the group, or into
  another group it is in (the envelope as it was, and signed again as its next bundle);
- **another's name**: while in, its next bundle says another member added, edited or
  lent a resource, or takes the name off one (R2a) — or, in its own name, it accepts or
  declines a promise it proposed itself, which no node may count, or it rewrites or
  deletes another member's event, naming nobody (R2a's records).

What each move leaves must never count on an honest node: :meth:`Cheater.check` says so
at the end of a seed. Every file it writes (old copies, new identities) is under the
seed's temporary directory.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from hearth.crypto import SigningKey
from hearth.errors import HearthError
from hearth.group import member_changes
from hearth.ledger import Kind, Ledger, LedgerDoc, membership_rules
from hearth.ledger.automerge_doc import change_hash
from hearth.ledger.ledger import LIVE
from hearth.ledger.model import Role
from hearth.node.feeds import StoredBundle
from hearth.node.node import STORE_FILE, Node, open_node
from hearth.protocol.bundle import (
    Envelope,
    EpochKeys,
    Inner,
    decode_changes,
    encode_changes,
    encode_snapshot,
    parse_envelope,
    seal_bundle,
)
from hearth.protocol.invite_token import Token
from hearth.testing import FakeClock, seeded_bytes, seeded_ids
from hearth.validity.intake import take_in, take_snapshot
from hearth.validity.retraction import opened
from tests.test_membership import new_node

__all__ = ["EQUIVOCATES", "SNAPSHOT_FORGERIES", "Cheater"]

# The share of runs in which it signs two bundles for one seq: every node then takes its
# feed out from there and builds its ledger again (R4, R8), which more than doubles the
# cost of a run; in a third of them the simulation stays within a fifth of its time
# without a cheater.
EQUIVOCATES = 0.35

# Forged snapshots (R13: refused whole, as a snapshot is taken only with the signed
# bundles it covers, checked against them).
SNAPSHOT_FORGERIES = True

Deliver = Callable[[Node, Node, str], object]


@dataclass
class Cheater:
    """The cheating member's node and what it did, in one seed."""

    node: Node
    gid: str
    other_gid: str  # a second group the founders are in, for replays across groups
    rng: random.Random  # its own: the honest members' draws stay as they were
    home: Path  # the seed's temporary directory
    clock: FakeClock
    copies: list[Path] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    puppets: list[Node] = field(default_factory=list)
    forged: set[bytes] = field(default_factory=set)  # change hashes that must never count
    forged_names: set[str] = field(default_factory=set)  # resources never to be seen
    written_out: set[str] = field(default_factory=set)  # never to be seen, if it is out
    strangers: set[bytes] = field(default_factory=set)  # device keys never to be listed
    fake_heads: set[bytes] = field(default_factory=set)  # bundle ids it made up
    replayed: set[bytes] = field(default_factory=set)  # its changes from the other group
    backdated: set[bytes] = field(default_factory=set)  # its changes written on old copies
    self_answered: set[str] = field(default_factory=set)  # its own promises it answered
    tried: Counter[str] = field(default_factory=Counter)
    equivocates: bool = field(init=False)

    def __post_init__(self) -> None:
        self.equivocates = self.rng.random() < EQUIVOCATES

    @property
    def key(self) -> bytes:
        return self.node.identity.device_key.public

    def _in(self, node: Node | None = None) -> bool:
        """Whether its node (or ``node``) lists it as in the group."""
        view = (node or self.node).view(self.gid)
        return membership_rules.cutoff_of(view.tables["members"], self.key) is None

    def _admin(self, node: Node) -> bool:
        """Whether ``node`` (its own or an old copy) lists it as an admin still in."""
        table = node.view(self.gid).tables["members"]
        return self._in(node) and membership_rules.effective_role(
            table, node.identity.member_id
        ) == ("admin")

    # --- what it picks up --------------------------------------------------------------

    def saw(self, token: Token, *, inviter: Node) -> None:
        """A token made by ``inviter``: the cheater keeps it if it made it, or, while in,
        sometimes (passed on through it) — never one that carries a key it lacks."""
        if inviter is not self.node and not (self._in() and self.rng.random() < 0.6):
            return
        held = {k.epoch_id for _, k in self.node.feeds.epochs(self.gid)}
        if {epoch_id for _, epoch_id, _ in token.epochs} <= held:
            self.tokens.append(token)

    # --- moves -------------------------------------------------------------------------

    def act(self, honest: list[Node], deliver: Deliver, trace: list[str]) -> None:
        """One move, picked at random among those it can try now."""
        inside, admin = self._in(), self._admin(self.node)
        moves: list[Callable[[list[Node], Deliver], str]] = [self.replay]
        if admin:
            moves.append(self.copy)  # to write from once no longer one
        elif self.copies:
            moves.append(self.backdate)
        if inside and self.equivocates and not self.tried["equivocated"]:  # once: then out
            moves.append(self.equivocate)
        else:
            moves.append(self.old_epoch)
        if self.tokens:
            moves.append(self.reuse_token)
        if SNAPSHOT_FORGERIES:
            moves.append(self.snapshot)
        if inside:
            moves.append(self.another_name)
        move = self.rng.choice(moves)
        try:
            said = move(honest, deliver)
        except HearthError as error:
            said = f"(refused: {error})"
        trace.append(f"cheater {self.node.identity.name}: {move.__name__} {said}".rstrip())

    def copy(self, honest: list[Node], deliver: Deliver) -> str:
        """Keep a copy of its home as it is now, to write from later."""
        target = self.home / "copies" / str(len(self.copies))
        shutil.copytree(self.node.home, target)
        self.copies.append(target)
        return str(len(self.copies))

    def backdate(self, honest: list[Node], deliver: Deliver) -> str:
        """From an old copy on which it is still an admin, once removed or demoted since:
        remove, promote or demote someone, and hand it out."""
        if not self.copies or (self._in() and self._admin(self.node)):
            return "(nothing to back-date)"
        path = self.rng.choice(self.copies)
        own = self.rng.randrange(2**32)
        old = open_node(
            path,
            clock=self.clock,
            random_bytes=seeded_bytes(own),
            new_id=seeded_ids(own),
            durable=False,
        )
        try:
            if not self._admin(old):
                return "(an admin on no copy)"
            view = old.view(self.gid)
            others = [m for m in view.members() if m.id != old.identity.member_id]
            if not others:
                return "(nobody else)"
            other = self.rng.choice(others)
            kind = self.rng.choice(["remove", "promote", "demote"])
            if kind == "remove":
                member_changes.remove_member(old, self.gid, other.id)
            else:
                change = member_changes.promote if kind == "promote" else member_changes.demote
                change(old, self.gid, other.id)
            self.tried["back-dated"] += 1
            self.backdated.update(old.ledger(self.gid).doc.heads())
            for target in self.rng.sample(honest, min(2, len(honest))):
                deliver(old, target, self.gid)
            return f"{kind} {other.name} from copy {path.name}"
        finally:
            old.close()

    def equivocate(self, honest: list[Node], deliver: Deliver) -> str:
        """Two different bundles for one seq of its feed, each to another node."""
        if not self._in() or len(honest) < 2:
            return "(out)"
        first, second = self.rng.sample(honest, 2)
        with self.node.change(self.gid) as ledger:
            ledger.add_resource("cheater's first", kind=Kind.OTHER)
        mine = self._last()
        deliver(self.node, first, self.gid)
        with self.node.store.write():
            self.node.store.run("DELETE FROM bundles WHERE id = ?", (mine.id,))
        with self.node.change(self.gid) as ledger:
            ledger.add_resource("cheater's second", kind=Kind.OTHER)
        deliver(self.node, second, self.gid)
        self.tried["equivocated"] += 1
        return f"seq {mine.seq} to {first.identity.name} and {second.identity.name}"

    def old_epoch(self, honest: list[Node], deliver: Deliver) -> str:
        """Out (on its own node), it writes on, sealed under an epoch it held."""
        if self._in():
            return "(still in)"
        name = f"written out {self.rng.randrange(10**6)}"
        changes = self._forge(self.node.group(self.gid).actor, self.node.identity.member_id, name)
        keys = self.rng.choice(self.node.feeds.epochs(self.gid))[1]
        with self.node.store.write():
            self.node.feeds._seal_next(self.gid, "content", changes, keys)
        self.written_out.add(name)
        self.tried["wrote after removal"] += 1
        deliver(self.node, self.rng.choice(honest), self.gid)
        return name

    def replay(self, honest: list[Node], deliver: Deliver) -> str:
        """One of its content bundles, into another epoch of the group or into the other
        group: as it was (under another topic), and signed again."""
        mine = [
            b
            for b in self.node.feeds.all(self.gid)
            if b.author == self.key and (i := opened(self.node, b)) and i.kind == "content"
        ]
        if not mine:
            return "(nothing written)"
        stored = self.rng.choice(mine)
        inner = opened(self.node, stored)
        assert inner is not None
        epochs = [k for _, k in self.node.feeds.epochs(self.gid) if k.epoch_id != inner.epoch_id]
        # Into another epoch, only its newest bundle: signed again at an older seq, it
        # takes out with it every join it confirmed since (R4 cuts its feed there, and
        # only the inviting device may confirm, R14) — the members it let in are out
        # for good. An open question for R4 (issue 19), not something to hide here.
        into_group = (
            not epochs
            or stored != self._last()
            or not self.equivocates
            or self.tried["equivocated"] > 0
            or self.rng.random() < 0.5
        )
        gid = self.other_gid if into_group else self.gid
        keys = self.node.feeds.current_keys(gid) if into_group else self.rng.choice(epochs)
        if into_group:  # as the next bundle of its feed there
            last, last_id = self.node.feeds._last_written(gid)
            seq, prev = last + 1, last_id
        else:  # in its place, under another key: a second bundle for that seq
            seq, prev = inner.seq, inner.prev
        again = _seal(
            self.node,
            keys,
            Inner(
                kind="content",
                group_id=keys.group_id,
                epoch_id=keys.epoch_id,
                author=self.key,
                seq=seq,
                prev=prev,
                auth_heads=inner.auth_heads,
                created_at=inner.created_at,
                payload=inner.payload,
            ),
        )
        old = parse_envelope(stored.envelope)
        relabelled = Envelope(
            topic=keys.topic,
            salt=old.salt,
            ciphertext=old.ciphertext,
            relay_sig=keys.relay_key.sign(
                b"hearth/v1/relay-admission\x00"
                + Envelope(
                    topic=keys.topic, salt=old.salt, ciphertext=old.ciphertext, relay_sig=b""
                ).id
            ),
        )
        if into_group:
            self.replayed |= {change_hash(c).hash for _, c, _ in decode_changes(inner.payload)}
            self.tried["replayed into another group"] += 1
        else:  # a second bundle for its newest seq, as equivocating is
            self.tried["replayed into another epoch"] += 1
            self.tried["equivocated"] += 1
        if into_group:
            honest = [n for n in honest if self._in_other(n)]
        for target in self.rng.sample(honest, min(2, len(honest))):
            take_in(target, relabelled.encode(), source="cheater")
            take_in(target, again.encode(), source="cheater")
        return f"seq {inner.seq} into {'the other group' if into_group else 'another epoch'}"

    def reuse_token(self, honest: list[Node], deliver: Deliver) -> str:
        """A new identity of its own joins with a token it saw, whose invite its node
        knows was confirmed for another device, and writes."""
        invites = self.node.view(self.gid).tables["invites"]
        used = [
            t for t in self.tokens if isinstance(invites.get(t.invite_id, {}).get("confirmed"), str)
        ]
        if not used:
            return "(no used token)"
        token = self.rng.choice(used)
        number = len(self.puppets)
        puppet = new_node(
            self.home / "puppets", f"Sock{number}", self.clock, seed=self.rng.randrange(2**32)
        )
        self.puppets.append(puppet)
        self.strangers.add(puppet.identity.device_key.public)
        puppet.join_with_token(token)
        name = f"sock {number}'s box"
        with puppet.change(self.gid) as ledger:
            ledger.add_resource(name, kind=Kind.OTHER)
        self.forged_names.add(name)
        self.tried["reused a token"] += 1
        for target in self.rng.sample(honest, min(2, len(honest))):
            deliver(puppet, target, self.gid)
        return f"invite {token.invite_id[:8]}"

    def snapshot(self, honest: list[Node], deliver: Deliver) -> str:
        """A snapshot with changes under another member's actor id, or listing a device
        it made up (and signed by it), claiming feed heads ahead of what was written."""
        node, gid = self.node, self.gid
        view = node.view(gid)
        doc = LedgerDoc.load(node.ledger(gid).doc.save(), node.group(gid).actor)
        author = node.feeds.device
        cards = [
            c
            for c in membership_rules.cards(view.tables["members"])
            if c.key != self.key and c.actors
        ]
        kind = self.rng.choice(["other actor", "made-up device"])
        if kind == "other actor" and cards:
            victim = self.rng.choice(cards)
            doc.actor = sorted(victim.actors)[0]
            forger = Ledger(
                doc,
                author=victim.member_id,
                clock=self.clock,
                new_id=seeded_ids(self.rng.randrange(2**32)),
            )
            name = f"forged as {victim.member_id[:6]}"
            forger.add_resource(name, kind=Kind.OTHER)
            forger.set_role(node.identity.member_id, Role.ADMIN)
        else:
            fake = SigningKey.generate(self.rng.randbytes)
            self.strangers.add(fake.public)
            forger = Ledger(
                doc,
                author=node.identity.member_id,
                clock=self.clock,
                new_id=seeded_ids(self.rng.randrange(2**32)),
            )
            name = f"made-up device {fake.public.hex()[:6]}"
            forger.add_member(
                member_id=fake.public.hex()[:32],
                name="Nobody",
                key=fake.public.hex(),
                role=Role.ADMIN,
                devices={
                    fake.public.hex()[:16]: {
                        "name": "x",
                        "key": fake.public.hex(),
                        "kem": fake.public.hex(),
                        "actors": {},
                    }
                },
            )
            forger.add_resource(name, kind=Kind.OTHER)
            if self.rng.random() < 0.5:
                author = fake
        self.forged |= {change_hash(c).hash for _, e in forger.take_outbox() for c in e.changes}
        self.forged_names.add(name)
        heads = node.feeds.heads(gid)
        if heads and self.rng.random() < 0.7:  # a feed head ahead of what was written
            ahead = self.rng.randrange(len(heads))
            who, seq, _ = heads[ahead]
            made_up = self.rng.randbytes(32)
            self.fake_heads.add(made_up)
            heads[ahead] = (who, seq + self.rng.randint(1, 3), made_up)
        keys = self.rng.choice([k for _, k in node.feeds.epochs(gid)])
        envelope = _seal(
            author,
            keys,
            Inner(
                kind="snapshot",
                group_id=keys.group_id,
                epoch_id=keys.epoch_id,
                author=author.public,
                seq=0,
                prev=b"",
                auth_heads=(),
                created_at=self.clock.now_ms(),
                payload=encode_snapshot([(LIVE, doc.save())], heads),
            ),
        )
        self.tried["forged a snapshot"] += 1
        # As a relay gives it to a device reading the topic from the start: with the
        # bundles it covers (R13; here those the target lacks), those it does not take
        # then going in one by one.
        for target in self.rng.sample(honest, min(2, len(honest))):
            held = {b.id for b in target.feeds.all(gid)}
            carried = [b.envelope for b in node.feeds.all(gid) if b.id not in held]
            _, taken = take_snapshot(target, envelope.encode(), carried, source="cheater")
            assert not taken, f"{target.identity.name} took a forged snapshot"
            # What it carried is passed on at once, as a real cheater could (and as a
            # relay would after a refused snapshot): one by one, with every rule.
            for bundle in carried:
                take_in(target, bundle, source="cheater")
        return kind

    def another_name(self, honest: list[Node], deliver: Deliver) -> str:
        """Its next bundle, signed by its own device under its own actor id, says another
        member did something or takes a name off (R2a): taken by up to two honest nodes
        holding all it builds on, then dropped from its own feed, so that the seq goes to
        its next honest bundle. Or it answers its own promise itself."""
        node, gid = self.node, self.gid
        me = node.identity.member_id
        others = [m for m in node.view(gid).members() if m.id != me]
        if not self._in() or not others:
            return "(out, or nobody else)"
        victim = self.rng.choice(others)
        targets = self.rng.sample(honest, min(2, len(honest)))
        kind = self.rng.choice(["added", "edited", "lent", "name off", "own answer", "rewrote"])
        if kind == "own answer":
            with node.change(gid) as ledger:
                promise = ledger.add_commitment(
                    f"cheater's promise {len(self.self_answered)}", giver=me, receiver=victim.id
                )
            answer = self.rng.choice(["accepted", "declined"])
            with node.change(gid) as ledger:  # as a modified client: no local check
                record = {"from": "proposed", "to": answer, "by": me, "at": self.clock.now_ms()}
                ledger.write_again("commitments", promise.id, {"changes": {"own": record}})
            self.self_answered.add(promise.id)
            self.tried["answered its own promise"] += 1
            for target in targets:
                deliver(node, target, gid)
            return f"{answer} its own promise to {victim.name}"
        for target in targets:  # what it wrote so far, so that they judge the forgery now
            deliver(node, target, gid)
        doc = LedgerDoc.load(node.ledger(gid).doc.save(), node.ledger(gid).doc.actor)
        forger = Ledger(
            doc, author=victim.id, clock=self.clock, new_id=seeded_ids(self.rng.randrange(2**32))
        )
        resources = [r for r in forger.view.resources() if not r.lent_to]
        name = f"in {victim.name}'s name {self.rng.randrange(10**6)}"
        if kind == "edited" and resources:
            forger.edit_resource(self.rng.choice(resources).id, name=name)
        elif kind == "lent" and (lendable := [r for r in resources if r.keeper != victim.id]):
            forger.lend(self.rng.choice(lendable).id, to=victim.id)  # not to its keeper
        elif kind == "name off" and resources:
            forger.author = me
            forger.write_again("resources", self.rng.choice(resources).id, {"created_by": None})
        elif kind == "rewrote" and (
            theirs := [
                e.id
                for e in forger.view.events()
                if e.by == victim.id and forger.doc.read_entry("events", e.id) is not None
            ]
        ):
            # In its own name (none at all): what the victim's event says, or the event.
            forger.author = me
            event = self.rng.choice(theirs)
            with forger._edit() as w:
                if self.rng.random() < 0.5:
                    w.put("events", event, {"qty": "999", "to": me})
                else:
                    w.delete("events", event)
        else:
            kind = "added"
            forger.add_resource(name, kind=Kind.OTHER)
        self.forged_names.add(name)
        edits = forger.take_outbox()
        changes = [(LIVE, c, sorted(e.touched)) for _, e in edits for c in e.changes]
        self.forged |= {change_hash(c).hash for _, c, _ in changes}
        deps = {d for _, c, _ in changes for d in change_hash(c).deps}
        with node.store.write():
            envelope = node.feeds.seal_local(gid, changes)
        seq = self._last().seq
        for target in targets:
            if (
                membership_rules.cutoff_of(target.view(gid).tables["members"], self.key) is None
                and target.feeds.head(gid, self.key)[0] == seq - 1
                and all(target.ledger(gid).doc.knows(d) for d in deps)
            ):
                take_in(target, envelope.encode(), source="cheater")
        with node.store.write():
            node.store.run("DELETE FROM bundles WHERE id = ?", (envelope.id,))
        self.tried["wrote in another's name"] += 1
        return f"{kind} as {victim.name}"

    # --- helpers -----------------------------------------------------------------------

    def _last(self) -> StoredBundle:
        rows = self.node.store.query(
            "SELECT MAX(seq) FROM bundles WHERE group_id = ? AND author = ?", (self.gid, self.key)
        )
        found = self.node.feeds.at(self.gid, self.key, int(rows[0][0] or 0))
        assert found is not None
        return found

    def _forge(self, actor: bytes, author: str, name: str) -> bytes:
        """Changes adding a resource, made on a copy of its document under ``actor``."""
        doc = LedgerDoc.load(self.node.ledger(self.gid).doc.save(), actor)
        forger = Ledger(
            doc, author=author, clock=self.clock, new_id=seeded_ids(self.rng.randrange(2**32))
        )
        forger.add_resource(name, kind=Kind.OTHER)
        return encode_changes([(LIVE, c, []) for _, e in forger.take_outbox() for c in e.changes])

    # --- the end of a seed -------------------------------------------------------------

    def check(self, honest: list[Node]) -> None:
        """What none of its moves may have achieved on the honest nodes (``honest``, all
        still in the group; their agreement with each other is the simulation's check)."""
        gid = self.gid
        table = honest[0].view(gid).tables["members"]
        out = membership_rules.cutoff_of(table, self.key) is not None
        unseen = self.forged_names | (self.written_out if out else set())
        for node in honest:
            who = node.identity.name
            doc = node.ledger(gid).doc
            assert not any(doc.knows(h) for h in self.forged), f"{who} counts a forged change"
            seen = {r.name for r in node.view(gid).resources()} & unseen
            assert not seen, f"{who} counts what the cheater wrote as no one may: {seen}"
            cards = membership_rules.cards(node.view(gid).tables["members"])
            assert not {c.key for c in cards} & self.strangers, f"{who} lists a cheater's device"
            for promise in self.self_answered & set(node.view(gid).tables["commitments"]):
                answered = [
                    c
                    for c in node.view(gid).commitment(promise).changes
                    if c.applied and c.by == self.node.identity.member_id
                ]
                assert not answered, f"{who} counts the cheater answering its own promise"
            covered = {bytes(i) for (i,) in node.store.query("SELECT id FROM covered")}
            assert not covered & self.fake_heads, f"{who} took a made-up feed head"
            if self._in_other(node):
                other = node.ledger(self.other_gid).doc
                assert not any(other.knows(h) for h in self.replayed), (
                    f"{who} counts a change replayed into another group"
                )
        # Some may count, as the docs say (a removed senior admin against a junior one,
        # R7; an admin demoted meanwhile, R5): counted for the report, not failed.
        known = honest[0].ledger(gid).doc
        self.tried["back-dated and counted"] += sum(known.knows(h) for h in self.backdated)
        if out:  # nothing sealed under a key made without it may reach it
            without = {e for e, x in honest[0].feeds.excluded(gid).items() if self.key in x}
            for path, held in self._held_epochs():
                assert not held & without, f"the cheater's {path} holds a key made without it"

    def _held_epochs(self) -> list[tuple[str, set[bytes]]]:
        """The epoch ids of the group held by its node, its old copies and its puppets."""
        found = [("node", {k.epoch_id for _, k in self.node.feeds.epochs(self.gid)})]
        found += [
            (p.identity.name, {k.epoch_id for _, k in p.feeds.epochs(self.gid)})
            for p in self.puppets
        ]
        for path in self.copies:
            with closing(sqlite3.connect(path / STORE_FILE)) as db:
                rows = db.execute("SELECT epoch_id FROM epochs WHERE group_id = ?", (self.gid,))
                found.append((f"copy {path.name}", {bytes(e) for (e,) in rows}))
        return found

    def _in_other(self, node: Node) -> bool:
        return any(g.id == self.other_gid for g in node.groups())

    def close(self) -> None:
        for puppet in self.puppets:
            puppet.close()


def _seal(device: Node | SigningKey, keys: EpochKeys, inner: Inner) -> Envelope:
    """A bundle signed by ``device`` (a node's device, or a key it made up)."""
    key = device.feeds.device if isinstance(device, Node) else device
    salt = key.sign(inner.payload + inner.epoch_id)[:32]  # distinct, and from the seed
    return seal_bundle(inner, keys=keys, device=key, salt=salt)
