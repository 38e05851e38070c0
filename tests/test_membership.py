"""Membership between real nodes (in one process): removal with a new key, roles, leaving,
who may change membership, late removals (R6, R8), rival rotations, and order-independence."""

from __future__ import annotations

import json
import random
import re
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth.errors import NotAuthorized, UsageError
from hearth.group import member_changes
from hearth.group.rotation import departed_devices, keep_keys, rotate, rotation_due
from hearth.ledger import Kind, Ledger, LedgerDoc, membership_rules
from hearth.ledger.model import Role
from hearth.node.identity import create_identity
from hearth.node.node import Node, open_node
from hearth.testing import FakeClock, seeded_bytes, seeded_ids
from hearth.validity.alerts import admin_alerts
from hearth.validity.intake import Verdict, take_in
from hearth.validity.joins import claim_standing
from hearth.validity.retraction import removal_notices
from tests.conftest import Cli


def make_group(tmp_path: Path, names: list[str], *, seed: int | None = None) -> list[Node]:
    """The first name founds a group; the others join by token; everyone has everything.
    ``seed``: keys and ids drawn from it, for a run that replays exactly."""
    clock = FakeClock(step=1000)
    nodes = [new_node(tmp_path, name, clock, seed=seed) for name in names]
    nodes[0].create_group("Co-op")
    for node in nodes[1:]:
        node.join_with_token(nodes[0].create_invite())
        with node.change() as ledger:  # a first bundle: the claim goes out with it
            ledger.add_resource(f"{node.identity.name}'s box", kind=Kind.OTHER)
    exchange(nodes)
    return nodes


def new_node(tmp_path: Path, name: str, clock: FakeClock, *, seed: int | None = None) -> Node:
    """A new member's node, its randomness from ``seed`` and its name if one is given."""
    if seed is None:
        create_identity(tmp_path / name, name=name)
        return open_node(tmp_path / name, clock=clock)
    own = seed * 2**32 + zlib.crc32(name.encode())
    draw = seeded_bytes(own)
    create_identity(tmp_path / name, name=name, random_bytes=draw)
    return open_node(
        tmp_path / name, clock=clock, random_bytes=draw, new_id=seeded_ids(own), durable=False
    )


def deliver(source: Node, target: Node, group_id: str) -> list[Verdict]:
    """What sync would carry: every bundle the source holds that the target does not
    (those that do not count too), and its proofs of equivocation."""
    proofs = [
        e for _, keys in source.feeds.epochs(group_id) for _, e in source.feeds.proofs(keys.topic)
    ]
    held = {b.id for b in target.feeds.all(group_id)}
    return [
        take_in(target, envelope, source="test").verdict
        for envelope in [b.envelope for b in source.feeds.all(group_id) if b.id not in held]
        + proofs
    ]


def exchange(nodes: list[Node]) -> None:
    """Everyone gives everyone what they hold, until nothing new moves (bounded)."""
    group_id = nodes[0].current_group().id
    for _ in range(5):
        moved = 0
        for source in nodes:
            for target in nodes:
                if source is not target:
                    moved += deliver(source, target, group_id).count(Verdict.APPLIED)
        if not moved:
            return
    raise AssertionError("bundles kept moving")


def resource_names(node: Node) -> set[str]:
    return {r.name for r in node.view().resources()}


def can_read_new(node: Node, writer: Node) -> bool:
    """Whether ``node`` holds the key ``writer`` now seals under."""
    topic = writer.feeds.current_keys(writer.current_group().id).topic
    return node.feeds.keys_for_topic(topic) is not None


@pytest.fixture
def group(tmp_path: Path) -> Iterator[list[Node]]:
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Dan"])
    yield nodes
    for node in nodes:
        node.close()


def test_removal_gives_everyone_else_a_key_the_removed_member_lacks(group: list[Node]) -> None:
    ada, ben, cat, dan = group
    gid = ada.current_group().id
    member_changes.remove_member(ada, gid, "Dan")
    exchange(group)
    assert [m.name for m in ben.view().members()] == ["Ada", "Ben", "Cat"]
    assert can_read_new(ben, ada)
    assert can_read_new(cat, ada)
    assert not can_read_new(dan, ada)
    with ada.change() as ledger:
        ledger.add_resource("Secret stash", kind=Kind.FOOD)
    exchange(group)
    assert "Secret stash" in resource_names(cat)
    assert "Secret stash" not in resource_names(dan)
    mine = ada.identity.device_key.public
    newest = max((b for b in ada.feeds.all(gid) if b.author == mine), key=lambda b: b.seq)
    assert take_in(dan, newest.envelope, source="test").reason == (
        "a bundle for a group this node is not in"
    )
    # Dan's node knows he is out and says so instead of writing what would not count.
    with pytest.raises(NotAuthorized, match="no longer in"), dan.change() as ledger:
        ledger.add_resource("After", kind=Kind.TOOL)


def test_a_removed_members_later_writes_count_nowhere(group: list[Node]) -> None:
    ada, ben, cat, dan = group
    gid = ada.current_group().id
    with dan.change() as ledger:  # before the removal: counts
        ledger.add_resource("Early ladder", kind=Kind.TOOL)
    deliver(dan, ada, gid)
    member_changes.remove_member(ada, gid, "Dan")
    with dan.change() as ledger:  # Dan has not heard yet: past his cutoff
        ledger.add_resource("Late ladder", kind=Kind.TOOL)
    deliver(ada, ben, gid)  # Ben has the removal first ...
    verdicts = deliver(dan, ben, gid)  # ... so Dan's late bundle is refused outright
    assert Verdict.REJECTED in verdicts
    assert "Early ladder" in resource_names(ben)
    assert "Late ladder" not in resource_names(ben)
    # Cat gets Dan's late bundle before the removal: applied, then taken back out (R8).
    deliver(dan, cat, gid)
    assert "Late ladder" in resource_names(cat)
    deliver(ada, cat, gid)
    assert "Late ladder" not in resource_names(cat)
    assert "Early ladder" in resource_names(cat)
    assert sorted(cat.ledger().doc.heads()) == sorted(ben.ledger().doc.heads())
    notes = removal_notices(cat)  # what `hearth status` and the app tell Cat
    assert len(notes) == 1
    assert "taken back out" in notes[0][1]
    # And a node reopened from its store agrees (the rebuild was saved).
    home = cat.home
    cat.close()
    reopened = open_node(home, clock=FakeClock())
    try:
        assert "Late ladder" not in resource_names(reopened)
        assert sorted(reopened.ledger().doc.heads()) == sorted(ben.ledger().doc.heads())
    finally:
        reopened.close()


def test_only_admins_change_membership_on_any_node(group: list[Node]) -> None:
    ada, ben, _cat, _ = group
    gid = ada.current_group().id
    with pytest.raises(NotAuthorized, match="admins"):
        member_changes.remove_member(ben, gid, "Cat")
    with pytest.raises(NotAuthorized):
        member_changes.promote(ben, gid, "Ben")
    # Ben edits his own node's ledger directly: every other node refuses the bundle.
    with ben.change() as ledger:
        ledger.set_role(ben.identity.member_id, Role.ADMIN)
    verdicts = deliver(ben, ada, gid)
    assert Verdict.REJECTED in verdicts
    assert ada.view().member(ben.identity.member_id).role is Role.MEMBER
    reasons = [str(r[0]) for r in ada.store.query("SELECT reason FROM rejected_arrivals")]
    assert any("own role" in r for r in reasons)


def test_admins_are_ranked_by_when_they_were_made_and_nobody_can_jump_the_queue(
    group: list[Node],
) -> None:
    """R7's seniority: the founder first, then each admin in the order they were made,
    checked by every node — an admin cannot promote someone ahead of the admins before."""
    ada, ben, cat, dan = group
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(group)
    member_changes.promote(ben, gid, "Cat")
    exchange(group)
    table = dan.view().tables["members"]
    order = sorted(
        (n.identity.member_id for n in (ada, ben, cat)),
        key=lambda m: membership_rules.seniority(table, m),
    )
    assert order == [n.identity.member_id for n in (ada, ben, cat)]
    # Cat, now an admin, writes Dan in as an admin ranked with the founder.
    with cat.change() as ledger, ledger._edit() as w:
        w.put("members", dan.identity.member_id, {"role": "admin", "admin_rank": 0})
    verdicts = deliver(cat, ada, gid)
    assert Verdict.REJECTED in verdicts
    assert ada.view().member(dan.identity.member_id).role is Role.MEMBER
    reasons = [str(r[0]) for r in ada.store.query("SELECT reason FROM rejected_arrivals")]
    assert any("ranks the new admin before admins made earlier" in r for r in reasons)


def test_a_join_token_lets_in_one_device_on_every_node(tmp_path: Path) -> None:
    """R14: two devices join with one token. Whichever claim reaches the device that made
    the invite first is confirmed there; every node counts that one and refuses the other
    — whatever order it hears of them in — nothing waits for good, the admins are told,
    and the refused joiner is told plainly."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Obs"])
    ada, ben, obs = nodes
    gid = ada.current_group().id
    token = ada.create_invite()
    joiners = []
    for name in ("Eve", "Mal"):
        joiner = new_node(tmp_path, name, ada.clock)
        joiner.join_with_token(token)
        with joiner.change(gid) as ledger:
            ledger.add_resource(f"{name}'s box", kind=Kind.OTHER)
        joiners.append(joiner)
    eve, mal = joiners
    deliver(mal, ben, gid)  # Ben hears of Mal first: it waits for Ada's confirmation
    assert "Mal" not in [m.name for m in ben.view(gid).members()]
    deliver(eve, ada, gid)  # Ada's node hears of Eve first and confirms her
    deliver(mal, ada, gid)
    everyone = [ada, ben, obs, eve, mal]
    exchange(everyone)
    for node in (ada, ben, obs, eve):
        names = [m.name for m in node.view(gid).members()]
        assert "Eve" in names
        assert "Mal" not in names
        assert node.feeds.waiting(gid) == [], node.identity.name
        assert "Mal's box" not in resource_names(node)
    assert "Eve's box" in resource_names(ben)
    outcomes = observed_in_orders(tmp_path, [ada, eve, mal], obs, gid)
    assert len(outcomes) == 1
    people, _, _, _, _ = outcomes.pop()
    assert [n for n, status, _ in people if status == "active"] == ["Ada", "Ben", "Eve", "Obs"]
    alerts = [a for a in admin_alerts(ada, gid) if a.kind == "second-claim"]
    assert len(alerts) == 1
    assert "'Mal'" in alerts[0].what
    assert "used by another device" in claim_standing(mal, gid)
    assert claim_standing(eve, gid) == ""
    for node in [ada, ben, eve, mal]:
        node.close()


def test_a_removed_members_token_lets_nobody_in(group: list[Node]) -> None:
    """R14: Dan joined with a token and was removed; a new identity using Dan's old token
    (it holds the group's old keys) is refused everywhere."""
    ada, ben, cat, dan = group
    gid = ada.current_group().id
    token = ada.create_invite()
    eve = new_node(dan.home.parent, "Eve", ada.clock)
    eve.join_with_token(token)
    with eve.change(gid) as ledger:
        ledger.add_resource("Eve's box", kind=Kind.OTHER)
    exchange([ada, ben, cat, dan, eve])
    member_changes.remove_member(ada, gid, "Eve")
    exchange([ada, ben, cat, dan, eve])
    mal = new_node(dan.home.parent, "Mal", ada.clock)
    mal.join_with_token(token)  # the same token, used again after Eve's removal
    with mal.change(gid) as ledger:
        ledger.add_resource("Mal's box", kind=Kind.OTHER)
    exchange([ada, ben, cat, dan, mal])
    for node in (ada, ben, cat):
        assert "Mal" not in [m.name for m in node.view(gid).members(include_gone=True)]
        assert "Mal's box" not in resource_names(node)
    for node in (eve, mal):
        node.close()


def test_only_the_inviting_device_confirms_and_only_once(group: list[Node]) -> None:
    """R14: Ben (another admin) cannot confirm Ada's invite for a device of his choosing,
    nor can Ada confirm it twice."""
    ada, ben, cat, _ = group
    gid = ada.current_group().id
    printed = ada.create_invite()  # a token: Ada's node confirms the first claim it sees
    code = ada.create_invite(for_device=b"\x01" * 32)  # as an invite code does
    exchange(group)
    with ben.change() as ledger:  # each on their own node, so it is not stopped there
        ledger.confirm_invite(printed.invite_id, (b"\x02" * 32).hex())
    with ada.change() as ledger:
        ledger.confirm_invite(code.invite_id, (b"\x03" * 32).hex())
    assert Verdict.REJECTED in deliver(ben, cat, gid)
    assert Verdict.REJECTED in deliver(ada, cat, gid)
    invites = cat.view(gid).tables["invites"]
    assert "confirmed" not in invites[printed.invite_id]
    assert invites[code.invite_id]["confirmed"] == (b"\x01" * 32).hex()
    reasons = [str(r[0]) for r in cat.store.query("SELECT reason FROM rejected_arrivals")]
    assert any("second confirmation" in r for r in reasons), reasons
    assert any("other than the one that invited" in r for r in reasons), reasons


def test_a_member_who_is_not_an_admin_cannot_record_an_invite(group: list[Node]) -> None:
    """Otherwise Ben could let in anyone he likes by writing an invite into the ledger."""
    ada, ben, _, _ = group
    gid = ada.current_group().id
    with ben.change() as ledger:
        ledger.add_invite(
            "sneaky-invite",
            key="00" * 32,
            expires_at=2**40,
            by_device=ben.identity.device_key.public.hex(),
        )
    verdicts = deliver(ben, ada, gid)
    assert Verdict.REJECTED in verdicts
    assert "sneaky-invite" not in ada.view().tables["invites"]
    reasons = [str(r[0]) for r in ada.store.query("SELECT reason FROM rejected_arrivals")]
    assert any("invite recorded or changed by a member who is not an admin" in r for r in reasons)


def test_a_bundle_that_hides_its_membership_change_is_still_caught(group: list[Node]) -> None:
    """Ben's bundle removes Cat but claims to have touched nothing: the node reads the
    change's own operations, not the author's word."""
    ada, ben, cat, _ = group
    gid = ada.current_group().id
    forged_doc = LedgerDoc.load(ben.ledger().doc.save(), ben.group(gid).actor)
    forger = Ledger(
        forged_doc, author=ben.identity.member_id, clock=FakeClock(), new_id=seeded_ids(1)
    )
    forger.remove_member(cat.identity.member_id, {})
    changes = [c for _, e in forger.take_outbox() for c in e.changes]
    with ben.store.write():
        envelope = ben.feeds.seal_local(gid, [("live", c, []) for c in changes])
    outcome = take_in(ada, envelope.encode(), source="ben")
    assert outcome.verdict is Verdict.REJECTED
    assert "not an admin" in outcome.reason
    assert "Cat" in [m.name for m in ada.view().members()]


def test_roles_and_leaving(group: list[Node]) -> None:
    ada, ben, _cat, dan = group
    gid = ada.current_group().id
    with pytest.raises(UsageError, match="only admin"):
        member_changes.leave(ada, gid)
    with pytest.raises(UsageError, match="only admin"):
        member_changes.demote(ada, gid, "Ada")
    member_changes.promote(ada, gid, "Ben")
    exchange(group)
    assert ben.view().member(ben.identity.member_id).role is Role.ADMIN
    member_changes.remove_member(ben, gid, "Cat")  # Ben may now do what admins do
    exchange(group)
    assert "Cat" not in [m.name for m in ada.view().members()]
    member_changes.demote(ada, gid, "Ben")
    exchange(group)
    member_changes.leave(dan, gid)
    exchange(group)
    assert [m.status for m in ada.view().members(include_gone=True) if m.name == "Dan"] == ["left"]
    # Ada's node sees the group key is still shared with Dan's device and replaces it.
    assert rotation_due(ada, gid)
    assert not rotation_due(ben, gid)
    rotate(ada, gid)
    exchange(group)
    assert can_read_new(ben, ada)
    assert not can_read_new(dan, ada)
    assert not rotation_due(ada, gid)


def test_a_member_cannot_back_date_their_joining_to_act_as_admin(group: list[Node]) -> None:
    """R7's fallback: when every admin is gone, the earliest-joined member left acts as
    one. Dan, who joined last, sets his own ``joined_at`` to 0 and both admins leave at
    once (each seeing the other stay): Cat, who joined before him, acts as admin on every
    node, and Dan's change counts nowhere (before, any member could change when they
    joined, and Dan came first)."""
    ada, ben, cat, dan = group
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(group)
    with dan.change(gid) as ledger, ledger._edit() as writer:
        writer.put("members", dan.identity.member_id, {"joined_at": 0})
    exchange(group)
    member_changes.leave(ada, gid)
    member_changes.leave(ben, gid)
    exchange(group)
    for node in (ada, ben, cat):
        roles = {m.name: m.role for m in node.view(gid).members()}
        assert roles == {"Cat": Role.ADMIN, "Dan": Role.MEMBER}, node.identity.name
    for node in (ada, ben, cat):  # refused where it arrived, with the reason
        entry = node.view(gid).tables["members"][dan.identity.member_id]
        assert entry.get("joined_at") != 0, node.identity.name
    assert Verdict.REJECTED in deliver(dan, cat, gid)


def test_a_lost_device_is_removed_and_the_key_changes(tmp_path: Path, group: list[Node]) -> None:
    ada, ben, _, _ = group
    gid = ada.current_group().id
    cards = {c.device_id: c for c in _cards(ada)}
    bens = [d for d, c in cards.items() if c.member_id == ben.identity.member_id]
    with pytest.raises(UsageError, match="using"):
        member_changes.remove_device(ben, gid, bens[0])
    member_changes.remove_device(ada, gid, bens[0])
    exchange(group)
    assert ben.identity.device_key.public in departed_devices(ada.view())
    assert not can_read_new(ben, ada)


def _cards(node: Node) -> list[object]:
    from hearth.ledger import membership_rules

    return list(membership_rules.cards(node.view().tables["members"]))


def test_rival_removals_settle_on_one_key_without_either(tmp_path: Path) -> None:
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Dan", "Eve"])
    ada, ben, cat, dan, eve = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(nodes)
    member_changes.remove_member(ada, gid, "Cat")  # at the same time, neither knowing
    member_changes.remove_member(ben, gid, "Dan")
    exchange(nodes)
    for admin in (ada, ben):  # what `hearth sync` / `serve` does on an admin's node
        if rotation_due(admin, gid):
            rotate(admin, gid)
    exchange(nodes)
    keys = {n.identity.name: n.feeds.current_keys(gid).epoch_id for n in (ada, ben, eve)}
    assert len(set(keys.values())) == 1, keys
    _, _, excluded = eve.feeds.current(gid)
    assert {cat.identity.device_key.public, dan.identity.device_key.public} <= excluded
    assert not can_read_new(cat, ada)
    assert not can_read_new(dan, ben)
    for node in nodes:
        node.close()


SEEDS = 40


def test_the_outcome_does_not_depend_on_arrival_order(tmp_path: Path) -> None:
    """R12: copies of one member's node, given the same bundles in different orders —
    rival removals, writes past a cutoff, a write built on one — all end identical."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Dan", "Obs"])
    ada, ben, cat, dan, obs = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(nodes)
    with dan.change() as ledger:
        ledger.add_resource("Dan's early saw", kind=Kind.TOOL)
    deliver(dan, ada, gid)
    member_changes.remove_member(ada, gid, "Dan")  # neither admin knows what the other does
    member_changes.remove_member(ben, gid, "Cat")
    with dan.change() as ledger:
        ledger.add_resource("Dan's late saw", kind=Kind.TOOL)
    with cat.change() as ledger:
        ledger.add_resource("Cat's late jar", kind=Kind.FOOD)
    deliver(dan, ben, gid)  # Ben has Dan's late write before hearing of the removal ...
    with ben.change() as ledger:  # ... and builds on it: his change cannot count either
        ledger.edit_resource(ledger.view.find("resources", "Dan's late saw"), note="mine now")
    with ben.change() as ledger:
        ledger.add_resource("Ben's rake", kind=Kind.TOOL)
    for _ in range(2):
        deliver(ada, ben, gid)
        deliver(ben, ada, gid)
        for admin in (ada, ben):
            if rotation_due(admin, gid):
                rotate(admin, gid)
    with ada.change() as ledger:
        ledger.add_resource("Ada's hoe", kind=Kind.TOOL)
    outcomes = observed_in_orders(tmp_path, [ada, ben, cat, dan], obs, gid)
    assert len(outcomes) == 1
    (people, things, _, _, _) = outcomes.pop()
    assert {name: status for name, status, _ in people} == {
        "Ada": "active",
        "Ben": "active",
        "Obs": "active",
        "Cat": "removed",
        "Dan": "removed",
    }
    assert "Dan's late saw" not in things
    assert "Cat's late jar" not in things
    assert {"Dan's early saw", "Ben's rake", "Ada's hoe"} <= set(things)
    for node in nodes:
        node.close()


def observed_in_orders(
    tmp_path: Path, writers: list[Node], obs: Node, gid: str
) -> set[tuple[object, ...]]:
    """What copies of the observer's node end up with, given everything the writers hold
    in SEEDS different orders (offered again until nothing more applies)."""
    bundles = sorted({b.envelope for n in writers for b in n.feeds.all(gid)})
    obs.close()
    outcomes: set[tuple[object, ...]] = set()
    for seed in range(SEEDS):
        home = tmp_path / f"obs-{seed}"
        shutil.copytree(obs.home, home)
        observer = open_node(home, clock=FakeClock())
        order = list(bundles)
        random.Random(seed).shuffle(order)
        for _ in range(len(order)):  # bounded: each round applies something or stops
            verdicts = [take_in(observer, e, source="test").verdict for e in order]
            if Verdict.APPLIED not in verdicts:
                break
        view = observer.view()
        outcomes.add(
            (
                tuple(
                    sorted(
                        (m.name, m.status, m.role.value) for m in view.members(include_gone=True)
                    )
                ),
                tuple(sorted(resource_names(observer))),
                tuple(sorted(observer.ledger().doc.heads())),
                observer.feeds.current_keys(gid).epoch_id,
                frozenset(b.id for b in observer.feeds.all(gid) if b.state == "applied"),
            )
        )
        observer.close()
    return outcomes


def test_a_promotion_by_an_admin_demoted_meanwhile_counts_everywhere(tmp_path: Path) -> None:
    """R5: a change to membership is judged by what its author knew. Ada promotes Cat while
    Ben, not knowing, demotes Ada: the promotion counts on every node, in any order (it
    used to count only where it arrived before the demotion)."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Obs"])
    ada, ben, cat, obs = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(nodes)
    member_changes.demote(ben, gid, "Ada")
    member_changes.promote(ada, gid, "Cat")
    outcomes = observed_in_orders(tmp_path, [ada, ben, cat], obs, gid)
    assert len(outcomes) == 1
    people = outcomes.pop()[0]
    assert people == (
        ("Ada", "active", "member"),
        ("Ben", "active", "admin"),
        ("Cat", "active", "admin"),
        ("Obs", "active", "member"),
    )


def test_admins_are_alerted_to_a_device_caught_signing_twice(group: list[Node]) -> None:
    """R4: admins (and only they) are told to remove a device caught equivocating, on
    screen and in `hearth status`, until one of them has."""
    ada, ben, _, dan = group
    gid = ada.current_group().id
    with dan.change() as ledger:
        ledger.add_resource("One", kind=Kind.TOOL)
    mine = dan.identity.device_key.public
    first = max((b for b in dan.feeds.all(gid) if b.author == mine), key=lambda b: b.seq)
    deliver(dan, ada, gid)
    with dan.store.write():  # Dan's device writes another bundle at that seq
        dan.store.run("DELETE FROM bundles WHERE id = ?", (first.id,))
        other = dan.feeds.seal_local(
            gid, [("live", c, []) for c in dan.ledger(gid).doc.changes_since([])[-1:]]
        )
    assert "equivocation" in take_in(ada, other.encode(), source="test").reason
    # Passed on again at every sync, the proof is judged once.
    assert take_in(ada, other.encode(), source="test").verdict is Verdict.DUPLICATE
    deliver(ada, ben, gid)  # the proof goes on
    assert admin_alerts(ben, gid) == []  # Ben is no admin
    (alert,) = admin_alerts(ada, gid)
    assert alert.member == "Dan"
    assert alert.kind == "equivocation"
    ada.close()
    cli = Cli(ada.home)
    status = json.loads(cli("status", "--json").out)
    assert [(a["kind"], a["device"], a["member"]) for a in status["admin_alerts"]] == [
        ("equivocation", alert.device, "Dan")
    ]
    remove = f"hearth device remove {alert.device}"
    log = cli("status").out
    assert remove in log
    # Everywhere an admin looks (#13): conflicts, doctor, the member list; with what was
    # cut (#24), and the sync log says what happened in plain words.
    assert "1 change it wrote from then on was cut" in alert.what
    conflicts, listed = cli("conflicts").out, cli("member", "list").out
    assert remove in conflicts
    assert "was cut" in conflicts
    assert [c["kind"] for c in json.loads(cli("conflicts", "--json").out)] == ["equivocation"]
    doctor = json.loads(cli("doctor", "--json", check=False).out)
    assert any(
        f["check"].endswith("equivocation") and not f["ok"] and "was cut" in f["detail"]
        for f in doctor
    )
    assert "Dan (!)" in listed
    assert "was cut" in listed
    devices = cli("device", "list", "--all").out
    assert re.search(rf"{alert.device[:8]} .* Dan .*signed twice: cut off", devices), devices
    assert "1 change by a device of Dan that signed two versions of one change" in log
    assert "removed device" not in log
    with open_node(ada.home, clock=FakeClock()) as again:
        member_changes.remove_device(again, gid, alert.device)
        assert admin_alerts(again, gid) == []


def test_what_builds_on_either_of_two_bundles_for_one_seq_waits_for_neither(
    group: list[Node],
) -> None:
    """R4, R8: Dan signs two different bundles for one seq, the first to Cat, the second
    to Ben, and Cat writes on top of the first. Every node holding both counts neither
    — the one it heard of second too: its changes never count, so what Cat built on them
    waits for nothing — and all agree, with Cat's entry written again (membership
    simulation, seed 0 with a cheating member)."""
    ada, ben, cat, dan = group
    gid = ada.current_group().id
    with dan.change() as ledger:
        ledger.add_resource("Dan's first", kind=Kind.TOOL)
    mine = dan.identity.device_key.public
    first = max((b for b in dan.feeds.all(gid) if b.author == mine), key=lambda b: b.seq)
    deliver(dan, cat, gid)
    with dan.store.write():
        dan.store.run("DELETE FROM bundles WHERE id = ?", (first.id,))
    with dan.change() as ledger:  # builds on the first: waits for it where it is missing
        ledger.add_resource("Dan's second", kind=Kind.TOOL)
    deliver(dan, ben, gid)
    with cat.change() as ledger:  # on top of Dan's first
        ledger.add_resource("Cat's crate", kind=Kind.TOOL)
    exchange(group)
    for node in (ada, ben, cat):
        assert node.feeds.waiting(gid) == [], node.identity.name
        names = resource_names(node)
        assert "Cat's crate" in names, node.identity.name
        assert not {"Dan's first", "Dan's second"} & names, node.identity.name
    assert sorted(ada.ledger(gid).doc.heads()) == sorted(ben.ledger(gid).doc.heads())
    assert sorted(ada.ledger(gid).doc.heads()) == sorted(cat.ledger(gid).doc.heads())


def test_a_fresh_actor_listed_on_a_change_that_does_not_count_stops_nothing(
    group: list[Node],
) -> None:
    """R8: Cat writes under a fresh actor id (as writing again does), listing it on her
    card by a change built on Dan's late write, which then does not count. Where that is
    known first, the listing and all written under the new id are orphans — left out, the
    bundle still counting as a place in her feed — so what Cat writes next counts
    everywhere (before, the bundle was refused for its unlisted actor and her feed
    stopped there for good: membership simulation, seed 7 with a cheating member)."""
    ada, ben, cat, dan = group
    gid = ada.current_group().id
    member_changes.remove_member(ada, gid, "Dan")
    with dan.change() as ledger:  # Dan has not heard yet: past his cutoff
        ledger.add_resource("Late ladder", kind=Kind.TOOL)
    deliver(dan, cat, gid)  # Cat counts it for now ...
    with cat.change(gid) as ledger:  # ... and writes on top of it, under a fresh actor
        cat._fresh_actor(gid, ledger)  # what writing again does first
        ledger.add_resource("Cat's crate", kind=Kind.TOOL)
    deliver(ada, ben, gid)  # Ben has the removal first
    deliver(dan, ben, gid)
    assert Verdict.REJECTED not in deliver(cat, ben, gid)
    exchange(group)
    with cat.change(gid) as ledger:
        ledger.add_resource("Cat's next", kind=Kind.TOOL)
    exchange(group)
    for node in (ada, ben, cat):
        assert node.feeds.waiting(gid) == [], node.identity.name
        assert node.feeds.refused(gid) == [], node.identity.name
        assert "Cat's next" in resource_names(node), node.identity.name
        assert "Late ladder" not in resource_names(node), node.identity.name
    assert sorted(ada.ledger(gid).doc.heads()) == sorted(ben.ledger(gid).doc.heads())
    assert sorted(ada.ledger(gid).doc.heads()) == sorted(cat.ledger(gid).doc.heads())


def test_admins_who_remove_each_other_settle_by_seniority_in_any_order(tmp_path: Path) -> None:
    """R7, R12: two admins remove each other at once. Ada has been an admin longer, so her
    removal of Ben stands and his of her is void — on every node, whichever it hears of
    first — and what she wrote meanwhile (before and after her removal of Ben) counts,
    while nothing Ben wrote after her removal does (his new key, an edit). Ada then
    starts the key everyone goes on with."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Obs"])
    ada, ben, cat, obs = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(nodes)
    with ada.change() as ledger:  # Ada goes on, not knowing of Ben's removal of her
        ledger.add_resource("Ada's spade", kind=Kind.TOOL)
    member_changes.remove_member(ben, gid, "Ada")  # each also starts a new key without the other
    member_changes.remove_member(ada, gid, "Ben")
    with ada.change() as ledger:
        ledger.add_resource("Ada's rake", kind=Kind.TOOL)
    with ben.change() as ledger:
        ledger.add_resource("Ben's parting shot", kind=Kind.TOOL)
    outcomes = observed_in_orders(tmp_path, [ada, ben, cat], obs, gid)
    assert len(outcomes) == 1
    people, things, _, _, _ = outcomes.pop()
    statuses = {name: status for name, status, _ in people}
    assert statuses == {"Ada": "active", "Ben": "removed", "Cat": "active", "Obs": "active"}
    assert {"Ada's spade", "Ada's rake"} <= set(things)
    assert "Ben's parting shot" not in things

    deliver(ada, cat, gid)
    deliver(ben, cat, gid)
    obs = open_node(tmp_path / "Obs", clock=FakeClock())
    for envelope in [b.envelope for n in (ben, ada) for b in n.feeds.all(gid)]:
        take_in(obs, envelope, source="test")
    assert obs.feeds.current_keys(gid).epoch_id == ada.feeds.current_keys(gid).epoch_id
    _, _, excluded = obs.feeds.current(gid)
    assert ben.identity.device_key.public in excluded
    assert ada.identity.device_key.public not in excluded
    for node in (ada, ben, cat, obs):
        node.close()


def test_a_removed_admin_cannot_remove_a_senior_from_an_old_copy(tmp_path: Path) -> None:
    """R7: Ada removes Ben; Ben, from a copy of his node made before, writes a removal of
    Ada. Ada is senior: it does not count, on any node, and Ada's writes go on counting."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat"])
    ada, _, cat = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(nodes)
    shutil.copytree(tmp_path / "Ben", tmp_path / "Ben-copy")
    member_changes.remove_member(ada, gid, "Ben")
    exchange(nodes)
    with ada.change() as ledger:
        ledger.add_resource("Ada's wheelbarrow", kind=Kind.TOOL)
    old_ben = open_node(tmp_path / "Ben-copy", clock=FakeClock())
    member_changes.remove_member(old_ben, gid, "Ada")
    for target in (ada, cat):
        deliver(old_ben, target, gid)
        deliver(ada, target, gid)
    for node in (ada, cat):
        statuses = {m.name: m.status for m in node.view(gid).members(include_gone=True)}
        assert statuses["Ada"] == "active"
        assert statuses["Ben"] == "removed"
        assert "Ada's wheelbarrow" in resource_names(node)
    # Every admin is told of the late counter-removal; nobody else is.
    (alert,) = admin_alerts(ada, gid)
    assert alert.kind == "counter-removal"
    assert "Ada's removal of Ben stands" in alert.what
    assert admin_alerts(cat, gid) == []
    old_ben.close()


def test_a_removal_by_an_admin_removed_before_it_is_undone_everywhere(tmp_path: Path) -> None:
    """R7, R12: Ada removes Dan while Cat, not knowing, removes Ada. Ada's removal came
    after her own, so it does not count — and what Dan wrote meanwhile counts, on every
    node, whichever of the two removals it heard of first."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Dan", "Obs"])
    ada, ben, cat, dan, obs = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Cat")
    exchange(nodes)
    member_changes.remove_member(ada, gid, "Dan")
    member_changes.remove_member(cat, gid, "Ada")
    with dan.change() as ledger:
        ledger.add_resource("Dan's wheelbarrow", kind=Kind.TOOL)
    outcomes = observed_in_orders(tmp_path, [ada, ben, cat, dan], obs, gid)
    assert len(outcomes) == 1
    people, things, _, _, _ = outcomes.pop()
    statuses = {name: status for name, status, _ in people}
    assert statuses["Ada"] == "removed"
    assert statuses["Dan"] == "active"
    assert "Dan's wheelbarrow" in things


def test_what_builds_on_a_late_write_does_not_wait_for_it_forever(group: list[Node]) -> None:
    """R8: Ben built on Dan's write from after Dan's removal before he heard of it. Cat
    never met Dan; what Ben passes on must let her see that Ben's edit can never be
    complete (so the rest of his bundle counts) rather than wait for it forever."""
    ada, ben, cat, dan = group
    gid = ada.current_group().id
    member_changes.remove_member(ada, gid, "Dan")
    with dan.change() as ledger:
        ledger.add_resource("Dan's late saw", kind=Kind.TOOL)
    deliver(dan, ben, gid)
    with ben.change() as ledger:
        saw = ledger.view.find("resources", "Dan's late saw")
        ledger.edit_resource(saw, note="borrowed")
        ledger.add_resource("Ben's rake", kind=Kind.TOOL)
    deliver(ada, ben, gid)  # the removal: Dan's saw and Ben's edit of it are taken out
    deliver(ada, cat, gid)
    for _, keys in ben.feeds.epochs(gid):  # what Ben's sync offers Cat
        for _, envelope in ben.feeds.lacking(keys.topic, {}):
            take_in(cat, envelope, source="ben")
    assert cat.feeds.waiting(gid) == []
    assert "Ben's rake" in resource_names(cat)
    assert "Dan's late saw" not in resource_names(cat)


def test_a_member_who_joins_while_the_key_changes_gets_the_new_one(tmp_path: Path) -> None:
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat"])
    ada, ben, cat = nodes
    gid = ada.current_group().id
    assert not rotation_due(ada, gid)  # members who joined the usual way hold the key
    token = ada.create_invite()  # Eve is invited, then Cat removed before Eve's claim is
    member_changes.remove_member(ada, gid, "Cat")  # read: the new key is sealed to Ada and Ben
    create_identity(tmp_path / "Eve", name="Eve")
    eve = open_node(tmp_path / "Eve", clock=ada.clock)
    eve.join_with_token(token)
    with eve.change(gid) as ledger:
        ledger.add_resource("Eve's ladder", kind=Kind.TOOL)
    everyone = [ada, ben, eve]
    exchange(everyone)
    assert "Eve" in [m.name for m in ben.view(gid).members()]
    assert not can_read_new(eve, ada)
    assert rotation_due(ada, gid)  # Eve is in the group without the key in use
    rotate(ada, gid)
    exchange(everyone)
    assert not rotation_due(ada, gid)
    assert eve.feeds.current_keys(gid) == ada.feeds.current_keys(gid) == ben.feeds.current_keys(gid)
    with ben.change(gid) as ledger:
        ledger.add_resource("Ben's saw", kind=Kind.TOOL)
    exchange(everyone)
    assert "Ben's saw" in resource_names(eve)
    assert not can_read_new(cat, ada)
    for node in [*nodes, eve]:
        node.close()


def test_a_member_let_in_by_a_removed_admins_late_invite_is_out_everywhere(
    tmp_path: Path,
) -> None:
    """R8, R12: Ben removes Ada; Ada, not knowing, invites Eve, who joins and writes. The
    invite came after Ada's removal, so it never counted: a node that let Eve in holds her
    bundles back again when the removal arrives, as one that heard of the removal first
    never lets them in (they wait for an invite that no admin writes again). Eve's mark
    on the invite and Ada's entry conflict, and which one shows depends on the keys, so
    several key sets are tried."""
    for seed in range(4):
        nodes = make_group(tmp_path / str(seed), ["Ada", "Ben", "Cat", "Obs"], seed=seed)
        ada, ben, cat, obs = nodes
        gid = ada.current_group().id
        member_changes.promote(ada, gid, "Ben")
        exchange(nodes)
        member_changes.remove_member(ben, gid, "Ada")
        token = ada.create_invite()
        eve = new_node(tmp_path / str(seed), "Eve", ada.clock, seed=seed)
        eve.join_with_token(token)
        with eve.change(gid) as ledger:
            ledger.add_resource("Eve's ladder", kind=Kind.TOOL)
        deliver(eve, ada, gid)  # Ada's node confirms Eve's claim (R14) ...
        deliver(ada, cat, gid)  # ... Cat lets Eve in, then hears of the removal
        deliver(eve, cat, gid)
        assert "Eve" in [m.name for m in cat.view(gid).members()]
        deliver(ben, cat, gid)
        assert "Eve" not in [m.name for m in cat.view(gid).members()], seed
        assert "Eve's ladder" not in resource_names(cat)
        if seed == 3:
            outcomes = observed_in_orders(tmp_path / str(seed), [ada, ben, cat, eve], obs, gid)
            assert len(outcomes) == 1
            people, things, _, _, _ = outcomes.pop()
            assert "Eve" not in [name for name, status, _ in people if status == "active"]
            assert "Eve's ladder" not in things
        for node in [*nodes, eve]:
            node.close()


def test_a_member_left_out_by_a_removal_that_did_not_count_is_handed_the_key(
    tmp_path: Path,
) -> None:
    """R4, R7, R8: Ada removes Ben, the other admin, after her device was caught signing
    twice, so the removal does not count — but the key it made left Ben out, and Ben, now
    the only admin, cannot rotate with it. Cat built on Ada's late change sealed under it:
    unless Cat's node hands the key on, Ben waits forever for what only it opens."""
    from hearth.group.rotation import keep_keys

    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat"], seed=1)
    ada, ben, cat = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(nodes)
    with ada.change() as ledger:
        ledger.add_resource("One", kind=Kind.TOOL)
    mine = ada.identity.device_key.public
    first = max((b for b in ada.feeds.all(gid) if b.author == mine), key=lambda b: b.seq)
    deliver(ada, ben, gid)  # Ben holds one version ...
    with ada.store.write():  # ... and Ada's device signs another for that seq
        ada.store.run("DELETE FROM bundles WHERE id = ?", (first.id,))
        ada.feeds.seal_local(
            gid, [("live", c, []) for c in ada.ledger(gid).doc.changes_since([])[-1:]]
        )
    member_changes.remove_member(ada, gid, "Ben")
    with ada.change() as ledger:
        ledger.add_resource("Ada's late ladder", kind=Kind.TOOL)
    deliver(ada, cat, gid)
    with cat.change() as ledger:
        ledger.edit_resource(ledger.view.find("resources", "Ada's late ladder"), note="mine")
    with cat.change() as ledger:
        ledger.add_resource("Cat's rake", kind=Kind.TOOL)
    deliver(ben, cat, gid)  # the other version: Ada is out, and so is Ben's removal
    assert "Ben" in [m.name for m in cat.view(gid).members()]
    for _ in range(2):
        for source in (ada, cat):
            deliver(source, ben, gid)
        keep_keys(ben, gid)  # Ben rotates if due; he holds no key that left anyone out
        deliver(ben, cat, gid)
    assert ben.feeds.waiting(gid), "without the key Ben waits for Cat's edit"
    assert keep_keys(cat, gid)  # Cat holds the key that left Ben out: hands it on
    assert not keep_keys(cat, gid)  # once
    for _ in range(2):  # as `hearth sync` passes again when it learns of a new key
        for source in (ada, cat):
            deliver(source, ben, gid)
    assert ben.feeds.waiting(gid) == []
    assert "Cat's rake" in resource_names(ben)
    assert "Ada's late ladder" not in resource_names(ben)
    for node in nodes:
        node.close()


def test_a_newcomer_is_handed_a_key_that_did_not_count_but_was_written_under(
    tmp_path: Path,
) -> None:
    """R6, R8: Ada, removed by Ben, removes Dan and starts a key, not knowing; Cat hears
    only Ada and writes under that key. Ada's key does not count — Cat's jar does. New,
    who joins later, was never given Ada's key: a member who holds it hands it on, or New
    never reads Cat's jar nor anything Cat writes after it."""
    from hearth.group.rotation import keep_keys

    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Dan"], seed=2)
    ada, ben, cat, _dan = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(nodes)
    member_changes.remove_member(ben, gid, "Ada")
    member_changes.remove_member(ada, gid, "Dan")
    deliver(ada, cat, gid)
    with cat.change() as ledger:
        ledger.add_resource("Cat's jar", kind=Kind.FOOD)
    ada_key = ada.feeds.current_keys(gid).epoch_id
    assert cat.feeds.current_keys(gid).epoch_id == ada_key
    new = new_node(tmp_path, "New", FakeClock(step=1000), seed=2)
    new.join_with_token(ben.create_invite())
    with new.change() as ledger:
        ledger.add_resource("New's box", kind=Kind.OTHER)
    everyone = [*nodes, new]
    for _ in range(4):  # meetings, and what `hearth sync` does for the keys before each
        for node in everyone:
            keep_keys(node, gid)
        for source in everyone:
            for target in everyone:
                if source is not target:
                    deliver(source, target, gid)
    assert ada_key not in new.feeds.excluded(gid)  # it does not count ...
    assert new.feeds.waiting(gid) == []
    assert "Cat's jar" in resource_names(new)  # ... but what was written under it does
    assert resource_names(new) == resource_names(ben)
    for node in everyone:
        node.close()


@pytest.mark.parametrize("folded", [False, True], ids=["as-taken-out", "folded-before"])
def test_a_removal_waiting_to_be_written_again_hands_its_key_to_nobody(
    tmp_path: Path, folded: bool
) -> None:
    """R4, R8 with the keys: Ben removes Dan on top of Cat's change, and Cat's device
    signed another bundle for that seq. Where that is known first (Eve, a member; Ada, an
    admin), Ben's removal does not count until Ben's node writes it again, and the key
    Ben made without Dan left out a member still listed. Neither hands it on to Dan
    meanwhile, nor starts a key for him, so what Eve seals under it then stays closed
    to him (before, Eve's node handed Dan the key: membership simulation, seed 138,
    with the cheater's snapshot bundles passed on at once). Once Ben's node writes the
    removal again Dan is out everywhere — also when Ben's node had folded the removal
    into a snapshot before it was taken out, so that taking it out wrote nothing again:
    its next pass does (before, Dan stayed listed for good, without the keys; seed 123)."""
    from hearth.group.rotation import keep_keys

    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Dan", "Eve"], seed=3)
    ada, ben, cat, dan, eve = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    exchange(nodes)
    with cat.change() as ledger:
        ledger.add_resource("Cat's first", kind=Kind.TOOL)
    mine = cat.identity.device_key.public
    first = max((b for b in cat.feeds.all(gid) if b.author == mine), key=lambda b: b.seq)
    deliver(cat, ben, gid)  # Ben holds one version ...
    with cat.store.write():  # ... and Cat's device signs another for that seq
        cat.store.run("DELETE FROM bundles WHERE id = ?", (first.id,))
        cat.feeds.seal_local(
            gid, [("live", c, []) for c in cat.ledger(gid).doc.changes_since([])[-1:]]
        )
    member_changes.remove_member(ben, gid, "Dan")  # built on Cat's first: a new key without Dan
    without_dan = ben.feeds.current_keys(gid).epoch_id
    for witness in (eve, ada):
        deliver(ben, witness, gid)
        deliver(cat, witness, gid)  # the other version: Ben's removal does not count here
        assert "Dan" in [m.name for m in witness.view(gid).members()], witness.identity.name
        assert witness.feeds.current_keys(gid).epoch_id == without_dan, witness.identity.name
    keep_keys(eve, gid)  # hands on nothing to Dan
    keep_keys(ada, gid)  # the admin starts a key without Cat: without Dan too
    dan_key = dan.identity.device_key.public
    assert dan_key in ada.feeds.current(gid)[2]
    with eve.change() as ledger:
        ledger.add_resource("Eve's secret stash", kind=Kind.FOOD)
    for source in (eve, ada):
        deliver(source, dan, gid)
    assert without_dan not in {k.epoch_id for _, k in dan.feeds.epochs(gid)}
    assert "Eve's secret stash" not in resource_names(dan)
    if folded:
        ben.compact(gid)  # its own changes no longer stored one by one
    deliver(cat, ben, gid)  # Ben's node hears of it last, and writes the removal again
    everyone = nodes
    for _ in range(3):  # meetings, and what `hearth sync` does for the keys before each
        for node in everyone:
            keep_keys(node, gid)
        for source in everyone:
            for target in everyone:
                if source is not target:
                    deliver(source, target, gid)
    for node in (ada, ben, eve):
        assert "Dan" not in [m.name for m in node.view(gid).members()], node.identity.name
        assert node.feeds.waiting(gid) == [], node.identity.name
        assert "Eve's secret stash" in resource_names(node), node.identity.name
    assert sorted(ada.ledger(gid).doc.heads()) == sorted(eve.ledger(gid).doc.heads())
    assert sorted(ada.ledger(gid).doc.heads()) == sorted(ben.ledger(gid).doc.heads())
    made_without = {
        e for e, x in ada.feeds.excluded(gid).items() if dan.identity.device_key.public in x
    }
    assert made_without
    assert not made_without & {k.epoch_id for _, k in dan.feeds.epochs(gid)}
    assert "Eve's secret stash" not in resource_names(dan)
    for node in nodes:
        node.close()


@pytest.mark.parametrize("code", [False, True])
def test_a_newcomer_judging_its_own_claim_again_writes_after_it_in_order(
    tmp_path: Path, code: bool
) -> None:
    """R12: Ben and Ada remove each other; Cat, holding Ben's key without Ada, invites
    Newt, who joins and writes before her node holds Cat's invite. Hearing of the rival
    removals, Newt's node judges every bundle again, its own too — and her claim now
    waits for Cat's invite. The key she then hands on to Ada (Ben's, which does not
    count) must wait behind it: sealed as counted, it became her feed's head, so her
    claim never counted on her own node, nor what builds on it — in the membership
    simulation (seed 74) she lacked herself and Cat's next key."""
    nodes = make_group(tmp_path, ["Ada", "Ben", "Cat", "Obs"], seed=5)
    ada, ben, cat, _ = nodes
    gid = ada.current_group().id
    member_changes.promote(ada, gid, "Ben")
    member_changes.promote(ada, gid, "Cat")
    exchange(nodes)
    member_changes.remove_member(ben, gid, "Ada")  # Ada is senior: her removal of Ben stands
    member_changes.remove_member(ada, gid, "Ben")
    deliver(ben, cat, gid)  # Cat holds Ben's key without Ada, and passes it on to Newt
    newt = new_node(tmp_path, "Newt", ada.clock, seed=5)
    for_device = newt.identity.device_key.public if code else None
    newt.join_with_token(cat.create_invite(for_device=for_device))
    with newt.change(gid) as ledger:
        ledger.add_resource("Newt's trowel", kind=Kind.TOOL)
    deliver(ben, newt, gid)
    deliver(ada, newt, gid)  # a rival removal: Newt's node judges everything again
    mine = newt.identity.device_key.public
    assert [b.seq for b in newt.feeds.waiting(gid) if b.author == mine], "nothing waits"
    assert keep_keys(newt, gid)  # Ben's key, which does not count, handed on to Ada
    everyone = [*nodes, newt]
    for _ in range(3):
        for node in everyone:
            keep_keys(node, gid)
        for source in everyone:
            for target in everyone:
                if source is not target:
                    deliver(source, target, gid)
    assert newt.feeds.waiting(gid) == []
    assert "Newt" in [m.name for m in newt.view(gid).members()]
    for node in (ada, cat):
        assert sorted(node.ledger(gid).doc.heads()) == sorted(newt.ledger(gid).doc.heads())
        assert node.feeds.current_keys(gid) == newt.feeds.current_keys(gid)
    assert "Newt's trowel" in resource_names(newt)
    for node in everyone:
        node.close()


def test_one_devices_card_is_the_first_valid_one_listing_it() -> None:
    """card_of, which the intake asks for every bundle, finds what cards() lists first for
    that key: a malformed card with the same key grants nothing and is passed over."""
    key, other = "ab" * 32, "cd" * 32
    table: membership_rules.Table = {
        "m1": {"devices": {"d1": {"key": other, "kem": "00", "actors": {}}}},
        "m2": {"devices": {"bad": {"key": key, "kem": "not hex", "actors": {}}}},
        "m3": {
            "removed": {"cutoffs": {key: 7}},
            "devices": {"d3": {"key": key, "kem": "11", "actors": {"22": True}}},
        },
    }
    for device in (bytes.fromhex(key), bytes.fromhex(other), b"\x01" * 32):
        first = next((c for c in membership_rules.cards(table) if c.key == device), None)
        assert membership_rules.card_of(table, device) == first
    found = membership_rules.card_of(table, bytes.fromhex(key))
    assert found is not None
    assert (found.member_id, found.cutoff) == ("m3", 7)
    assert membership_rules.cutoff_of(table, bytes.fromhex(key)) == 7
    assert membership_rules.cutoff_of(table, b"\x01" * 32) is None
