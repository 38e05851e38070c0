"""Snapshots prove what they carry (docs/security.md §6, R13).

A snapshot is a saved copy of a group's documents and the feed heads it claims to hold;
it is only a faster way of receiving the bundles it covers. So it is taken together with
those bundles, as signed by their authors, and checked against them the way the bundles
themselves would be: every covered bundle opens and its author's signature verifies;
each feed runs unbroken from what the node holds to the head the snapshot names; the
documents hold exactly the changes those bundles carry, no more and no fewer; and every
bundle may write what it carries (R2: a member's device, under its own actor ids; R2a:
in its member's name only; R5:
a change to membership or invites as its author saw the group, judged by
:mod:`hearth.ledger.membership_rules`; R14: a joining device only on a confirmed claim). The
documents are then merged instead of applying ten thousand changes one by one, which is
what makes a snapshot fast.

What this check does not judge — a removal or a departure (R6, R7), a new group key, a
device caught signing twice (R4) — makes it refuse the snapshot: the node then takes the
same bundles one by one, with every rule. Refusing is never wrong, only slower.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence

from hearth.crypto import key_id
from hearth.errors import ProtocolError
from hearth.ledger import LedgerDoc, attribution, membership_rules, records
from hearth.ledger.archive import archive_seed
from hearth.ledger.automerge_doc import ChangeInfo
from hearth.ledger.change_ops import KeyedValue, ObjectRef
from hearth.ledger.ledger import LIVE
from hearth.ledger.model import TABLES
from hearth.node.node import Node, verify_genesis
from hearth.protocol.bundle import Inner
from hearth.protocol.invite_token import decode_claim
from hearth.validity import joins, steps
from hearth.validity.snapshot_opening import Carried, Opener

__all__ = ["PAUSE_EVERY_S", "Carried", "Opener", "check_snapshot", "check_steps"]


PAUSE_EVERY_S = 0.05
"""How long :func:`check_steps` judges covered bundles before it pauses (a slow device
pauses as often as a fast one)."""


def check_snapshot(
    node: Node,
    group_id: str,
    docs: Mapping[str, LedgerDoc],
    heads: Sequence[tuple[bytes, int, bytes]],
    carried: Sequence[Carried],
) -> list[Carried]:
    """The bundles a snapshot covers beyond what the node holds, in feed order, once the
    snapshot is shown to hold exactly what they carry and nothing they may not write;
    else :class:`ProtocolError` naming what is wrong (R13)."""
    return steps.run(check_steps(node, group_id, docs, heads, carried))


def check_steps(
    node: Node,
    group_id: str,
    docs: Mapping[str, LedgerDoc],
    heads: Sequence[tuple[bytes, int, bytes]],
    carried: Sequence[Carried],
) -> steps.Steps[list[Carried]]:
    """:func:`check_snapshot` in steps (:mod:`hearth.validity.steps`), pausing every
    :data:`PAUSE_EVERY_S`. Between two steps the node must not change: whoever lets an
    event loop run between them checks that nothing was written meanwhile, or checks
    again (``intake.take_snapshot_steps``)."""
    covered = _covered(node, group_id, heads, carried)
    expected = _changes_of(covered, docs)
    ledger = node.ledger(group_id)
    group = node.group(group_id)
    for name, doc in docs.items():
        if name == LIVE or name in ledger.archive_docs():
            mine = ledger.document(name)
        else:  # an archive not here yet starts from a genesis every node makes alike
            mine = LedgerDoc.genesis(archive_seed(group.seed, name), TABLES, group.actor)
        wanted = set(expected.get(name, {}))
        extra = _beyond(doc, mine, expected.get(name, {}))
        if extra is None:  # some change no bundle carries: every one counted, to say so
            extra = {h for h in doc.change_ids() if not mine.knows(h)}
        if extra - wanted:
            raise ProtocolError(
                f"a snapshot holding {len(extra - wanted)} change(s) that no bundle it covers "
                "carries"
            )
        if wanted - extra:
            raise ProtocolError(
                f"a snapshot lacking {len(wanted - extra)} change(s) that its bundles carry"
            )
    yield from _check_authors(node, group_id, docs, covered, expected)
    return covered


def _beyond(
    doc: LedgerDoc, mine: LedgerDoc, carried: Mapping[bytes, tuple[Carried, ChangeInfo]]
) -> set[bytes] | None:
    """The changes ``doc`` holds that ``mine`` lacks, if each is one of the ``carried``;
    ``None`` once one is not. Found from the document's heads through the carried
    changes' own dependencies, rather than by listing all of its changes (the binding
    rebuilds each one for that): every change of a document is a head or a dependency of
    one, and its hash, which the carried change's matches, covers its dependencies. What
    ``mine`` holds, it holds with all that it depends on."""
    found: set[bytes] = set()
    todo = list(doc.heads())
    while todo:
        change = todo.pop()
        if change in found or mine.knows(change):
            continue
        if change not in carried:
            return None
        found.add(change)
        todo.extend(carried[change][1].deps)
    return found


def _covered(
    node: Node,
    group_id: str,
    heads: Sequence[tuple[bytes, int, bytes]],
    carried: Sequence[Carried],
) -> list[Carried]:
    """The carried bundles each feed needs to run from the node's head to the snapshot's
    (R3): every one there, each naming the one before, ending at the head it names."""
    feeds = node.feeds
    if feeds.equivocations(group_id):
        raise ProtocolError("a snapshot of a group with a device caught signing twice")
    at: dict[tuple[bytes, int], Carried] = {}
    for item in carried:
        key = (item.inner.author, item.inner.seq)
        if key in at and at[key].envelope.id != item.envelope.id:
            raise ProtocolError("a snapshot that came with two bundles for one place of a feed")
        at[key] = item
    covered: list[Carried] = []
    for author, seq, head_id in heads:
        held_seq, prev = feeds.head(group_id, author)
        if seq <= held_seq:
            continue
        held_ids = node.store.feed_ids_after(group_id, author, held_seq)
        for place in range(held_seq + 1, seq + 1):
            found = at.get((author, place))
            if found is None:
                raise ProtocolError(
                    "a snapshot claiming feed heads ahead of what it holds: bundle "
                    f"{place} of device {author.hex()[:12]} did not come with it"
                )
            item = found
            if held_ids.get(place, item.envelope.id) != item.envelope.id:
                raise ProtocolError("a snapshot covering a bundle other than the one held here")
            if item.inner.prev != prev:
                raise ProtocolError(
                    f"a snapshot covering a broken feed: bundle {place} of device "
                    f"{author.hex()[:12]} does not follow the one before"
                )
            if item.inner.kind != "content":
                raise ProtocolError(
                    "a snapshot covering a change of group key: its bundles are taken one by one"
                )
            prev = item.envelope.id
            covered.append(item)
        if prev != head_id:
            raise ProtocolError(
                f"a snapshot naming a feed head of device {author.hex()[:12]} that is not "
                "the bundle it holds"
            )
    return covered


def _changes_of(
    covered: Sequence[Carried], docs: Mapping[str, LedgerDoc]
) -> dict[str, dict[bytes, tuple[Carried, ChangeInfo]]]:
    """Document -> change hash -> the covered bundle that carries it."""
    found: defaultdict[str, dict[bytes, tuple[Carried, ChangeInfo]]] = defaultdict(dict)
    for item in covered:
        for doc, _, info in item.changes:
            if doc not in docs:
                raise ProtocolError(f"a snapshot lacking the document {doc!r} its bundles write")
            if info.hash in found[doc]:
                raise ProtocolError("a snapshot covering one change in two bundles")
            found[doc][info.hash] = (item, info)
    return found


def _check_authors(
    node: Node,
    group_id: str,
    docs: Mapping[str, LedgerDoc],
    covered: Sequence[Carried],
    expected: Mapping[str, Mapping[bytes, tuple[Carried, ChangeInfo]]],
) -> steps.Steps[None]:
    """R2, R5, R14 over every covered bundle: judged against the snapshot's own members
    table, which only changes checked here wrote; a pause every :data:`PAUSE_EVERY_S`."""
    live = docs.get(LIVE)
    final = live.read_table("members") if live is not None else {}
    invites = live.read_table("invites") if live is not None else {}
    held = node.view(group_id).tables["members"]
    if any(
        card.cutoff is not None
        for card in membership_rules.cards(final) + membership_rules.cards(held)
    ):
        raise ProtocolError(
            "a snapshot of a group someone was removed from or left: its bundles are taken "
            "one by one"
        )
    # No device listed for two members, no actor id for two devices: what taking each
    # bundle in checks of the table it leaves (membership.check_change).
    membership_rules.check_change(final, final, author="")
    cards = {card.key: card for card in membership_rules.cards(final)}
    founder = bytes.fromhex(str(verify_genesis(node.group(group_id).genesis).get("device_key")))
    tagged = node.tags_entry_ids(group_id)
    by_bundle: defaultdict[bytes, list[tuple[str, ChangeInfo]]] = defaultdict(list)
    for name, changes in expected.items():
        for item, info in changes.values():
            by_bundle[item.envelope.id].append((name, info))
    guarded = _guarded(node.ledger(group_id).doc, live, covered, LIVE)
    graph = {h: info.deps for h, (_, info) in expected.get(LIVE, {}).items()}
    used: dict[bytes, set[bytes]] = {}  # actor ids each device was seen to write under
    ledger = node.ledger(group_id)
    guarded_in: dict[str, set[bytes]] = {}  # an archive's, once one is written
    spared = live.objects_under("members") | live.objects_under("invites") if live else set()
    resume = time.monotonic() + PAUSE_EVERY_S
    for item in covered:
        if time.monotonic() >= resume:
            yield None
            resume = time.monotonic() + PAUSE_EVERY_S
        inner = item.inner
        card = cards.get(inner.author)
        if card is None:
            raise ProtocolError("a snapshot holding changes by a device that is not a member's")
        written = by_bundle.get(item.envelope.id, [])
        if any(info.actor not in card.actors for _, info in written):
            raise ProtocolError(
                "a snapshot holding a change under an actor id that is not its author's"
            )
        # Listed now, but was it when the device first wrote under it? (A later bundle
        # adding it to the card would not make this one count, R2.) A device's later
        # bundles build on its first, so its first under each actor id is asked.
        fresh = {info.actor for _, info in written} - used.setdefault(inner.author, set())
        if fresh:
            used[inner.author] |= fresh
            tops = [info.hash for name, info in written if name == LIVE]
            then = membership_rules.cards(live.read_table_at("members", tops)) if live else []
            listed = next((c.actors for c in then if c.key == inner.author), frozenset())
            if not fresh <= listed:
                raise ProtocolError(
                    "a snapshot holding a change under an actor id its author's card did "
                    "not list yet"
                )
        _check_names(docs, item, card.member_id, spared, tagged)
        for name in {n for n, _ in written if n != LIVE}:
            if name not in guarded_in:
                mine = ledger.archive_docs().get(name)
                guarded_in[name] = _guarded(mine, docs[name], covered, name)
            if any(info.hash in guarded_in[name] for d, _, info in item.changes if d == name):
                raise ProtocolError("a change to membership inside an archive")
        if live is not None and any(i.hash in guarded for n, i in written if n == LIVE):
            infos = [info for name, info in written if name == LIVE]
            _check_membership_change(live, inner, infos, invites, founder, graph)


def _check_names(
    docs: Mapping[str, LedgerDoc],
    item: Carried,
    member_id: str,
    spared: set[ObjectRef],
    tagged: bool,
) -> None:
    """R2a over a covered bundle, as taking it in checks it (``intake._check_names``),
    from what was read of it when it was opened. ``spared``: the maps of the live
    document's members and invites tables; ``tagged``: the group's entry ids carry their
    writer's tag."""
    by_doc: defaultdict[str, list[bytes]] = defaultdict(list)
    read: defaultdict[str, list[tuple[KeyedValue, ...] | str]] = defaultdict(list)
    for (name, change, _), names in zip(item.changes, item.names, strict=True):
        by_doc[name].append(change)
        read[name].append(names)
    live = [info for name, _, info in item.changes if name == LIVE]
    own = {info.hash for info in live}
    builds_on = sorted({d for info in live for d in info.deps} - own)
    moved: records.Moved = {}
    for name, changes in by_doc.items():
        if name == LIVE or LIVE not in docs:  # its names as read when it was opened
            attribution.check_read_names(read[name], member_id)
        else:
            attribution.check_archive_names(docs[name], docs[LIVE], changes, member_id, builds_on)
            for entry, paths in records.check_archive_copy(
                docs[name], docs[LIVE], changes, builds_on
            ).items():
                moved.setdefault(entry, set()).update(paths)
    if LIVE in docs and by_doc.get(LIVE):
        in_live = [
            (new, refs, made)
            for (name, _, _), new, refs, made in zip(
                item.changes, item.new, item.touched, item.made, strict=True
            )
            if name == LIVE
        ]
        named = [ref for _, refs, _ in in_live for ref in refs]
        new = [n for n, _, _ in in_live]
        made = [m for _, _, m in in_live]
        records.check_records(
            docs[LIVE],
            by_doc[LIVE],
            member_id,
            named,
            moved,
            spared,
            new,
            tagged=tagged,
            new_keys=made,
        )


def _guarded(
    held: LedgerDoc | None, doc: LedgerDoc | None, covered: Sequence[Carried], name: str
) -> set[bytes]:
    """The covered changes to a document that may write to its members or invites
    table: into a map the node's copy or the snapshot's holds there, or one a covered
    change made there — also when written again as a new map since: judging only writes
    to the maps the snapshot still holds would let an earlier write into a replaced one
    (a member promoting himself) go unjudged, where one by one it is refused."""
    if doc is None:
        return set()
    found: set[ObjectRef] = set()
    for copy in (held, doc):
        if copy is not None:
            found |= copy.objects_under("members") | copy.objects_under("invites")
    infos = [
        (c, info, writes)
        for item in covered
        for (d, c, info), writes in zip(item.changes, item.writes, strict=True)
        if d == name
    ]
    flags = doc.writes_under(
        ("members", "invites"), [c for c, _, _ in infos], found, [w for _, _, w in infos]
    )
    return {info.hash for (_, info, _), flag in zip(infos, flags, strict=True) if flag}


def _check_membership_change(
    live: LedgerDoc,
    inner: Inner,
    infos: Sequence[ChangeInfo],
    invites_now: membership_rules.Table,
    founder: bytes,
    graph: Mapping[bytes, Sequence[bytes]],
) -> None:
    """A covered bundle that writes to the members or invites table: judged as its author
    saw the group (R5) — the tables at what its changes build on, and as they left them.
    A joining device's first bundle, written from the little its invite gave it, is
    judged instead against everything else the snapshot holds but what builds on it, as
    a node taking it in when its claim was confirmed would (intake._apply)."""
    own = {i.hash for i in infos}
    deps = sorted({d for i in infos for d in i.deps} - own)
    built_on = {d for i in infos for d in i.deps}
    tops = sorted(own - built_on)
    then_members = live.read_table_at("members", deps)
    card = next((c for c in membership_rules.cards(then_members) if c.key == inner.author), None)
    if card is None and inner.claim:
        deps = _heads_without(graph, own) or deps
        tops = sorted(set(deps) | set(tops))
    then = {t: live.read_table_at(t, deps) for t in ("members", "invites")}
    made = {t: live.read_table_at(t, tops) for t in ("members", "invites")}
    member_id: str | None
    joining = invite_id = None
    if card is not None:
        member_id = card.member_id
    elif inner.claim:
        claim = decode_claim(inner.claim)
        if claim.device_key != inner.author:
            raise ProtocolError("a join claim for another device")
        # A joining device writes from the little its invite gave it: its claim is
        # checked against the invite as the group holds it (as intake.author_of does).
        invite = invites_now.get(claim.invite_id)
        if invite is None or not claim.verifies(bytes.fromhex(str(invite.get("key", "")))):
            raise ProtocolError("a join claim that no invite in the snapshot's group signed")
        member_id = joining = key_id(claim.member_key)
        invite_id = claim.invite_id
        if invite.get("kind") == "device" and invite.get("member") != member_id:
            raise ProtocolError("a claim to another member's device invite")
        if invite.get("kind") != "device" and member_id in then["members"]:
            raise ProtocolError(joins.CLAIM_AS_MEMBER)
        if joins.confirmed_device(invites_now.get(claim.invite_id, {})) != inner.author:
            raise ProtocolError("a join claim its invite's maker has not confirmed")
    elif inner.author == founder:
        member_id = None
    else:
        raise ProtocolError("a change to membership by a device that was not a member's")
    membership_rules.check_change(
        then["members"],
        made["members"],
        author=member_id,
        joining=joining,
        invite=then["invites"].get(invite_id) if invite_id else None,
    )
    membership_rules.check_invites(
        then["invites"],
        made["invites"],
        members=then["members"],
        author=member_id,
        claimed=invite_id,
        device=inner.author,
    )


def _heads_without(graph: Mapping[bytes, Sequence[bytes]], own: set[bytes]) -> list[bytes]:
    """The heads of the covered changes less ``own`` and every change built on them."""
    children: defaultdict[bytes, list[bytes]] = defaultdict(list)
    for change, deps in graph.items():
        for dep in deps:
            children[dep].append(change)
    gone, todo = set(own), list(own)
    while todo:
        for child in children[todo.pop()]:
            if child not in gone:
                gone.add(child)
                todo.append(child)
    rest = set(graph) - gone
    return sorted(rest - {d for change in rest for d in graph[change]})
