"""The one resolver of what a member types (:mod:`hearth.lookup`): its rules, tried on
bare candidates, then as the ledger's view, the neighbourhoods and the commands use it."""

from __future__ import annotations

import pytest

from hearth.errors import NotFound
from hearth.lookup import Candidate, pick
from tests.test_ledger_rules import ADA, BEN, make_ledger

DRILL = Candidate("3fa2b1c0" + "0" * 24, "Cordless drill")
HAMMER = Candidate("77d0e9aa" + "0" * 24, "Hammer drill")
BED = Candidate("bed00001" + "0" * 24, "Bed frame")
OLD_SAW = Candidate("5a5a5a5a" + "0" * 24, "Saw", current=False)


def find(candidates: list[Candidate], text: str) -> Candidate:
    return pick(candidates, text, noun="thing", listing="hearth thing list")


def test_a_whole_id_comes_first_then_a_whole_name_or_the_start_of_an_id() -> None:
    assert find([DRILL, HAMMER], DRILL.id) == DRILL
    assert find([DRILL, HAMMER], DRILL.id.upper()) == DRILL
    assert find([DRILL, HAMMER], "77d0") == HAMMER
    assert find([DRILL, HAMMER], "  cordless DRILL ") == DRILL
    # A whole name is a name even where it starts a word of another name too.
    drill = Candidate("9" * 32, "Drill")
    assert find([DRILL, HAMMER, drill], "drill") == drill


def test_an_id_as_the_lists_show_it_is_read_as_an_id_before_a_name() -> None:
    """Another group can name its offer after ours' id as `hearth offer list` shows it;
    typing that id still finds ours. A short name that happens to start an id (ids are
    random) is still read as the name."""
    copied = Candidate("e" * 32, DRILL.id[:8])
    assert find([DRILL, copied], DRILL.id[:8]) == DRILL
    assert find([DRILL, copied], DRILL.id[:8].upper()) == DRILL
    bed = Candidate("4" * 32, "Bed")
    assert find([BED, bed], "bed") == bed
    assert find([BED, bed], "bed0") == BED  # no name: the start of the id
    assert find([BED, bed], "Bed frame") == BED


def test_a_former_id_is_read_after_ids_and_before_names() -> None:
    old = Candidate("c" * 32, "Compost", former_id="q-old")
    assert find([DRILL, old], "q-o") == old
    spelt = Candidate("d" * 32, "q-older")  # a name that starts like the former id
    assert find([old, spelt], "q-old") == old
    assert find([old, Candidate("e" * 32, "", former_id="c")], "c") == old  # ids first


def test_then_the_start_of_a_name_a_word_of_it_or_any_part() -> None:
    potatoes = Candidate("1" * 32, "Seed potatoes")
    assert find([DRILL, potatoes], "cord") == DRILL
    assert find([DRILL, potatoes], "pot") == potatoes
    assert find([DRILL, potatoes], "seed pot") == potatoes
    assert find([DRILL, potatoes], "tatoe") == potatoes


def test_things_no_longer_current_are_named_only_when_nothing_current_is() -> None:
    saw = Candidate("2" * 32, "Saw")
    assert find([OLD_SAW], "saw") == OLD_SAW
    assert find([OLD_SAW, saw], "saw") == saw
    assert find([OLD_SAW, saw], "5a5a") == OLD_SAW  # by id, always


def test_ambiguity_names_the_candidates_and_a_near_miss_gets_a_suggestion() -> None:
    with pytest.raises(NotFound) as ambiguous:
        find([DRILL, HAMMER, BED], "drill")
    assert str(ambiguous.value) == (
        "'drill' matches 2 things: Cordless drill (3fa2b1c0), Hammer drill (77d0e9aa); "
        "type more of the name or the id."
    )
    many = [Candidate(f"{i:032x}", f"Chair {i}") for i in range(9)]
    with pytest.raises(NotFound, match=r"matches 9 things: .* and 3 more"):
        find(many, "chair")
    with pytest.raises(NotFound, match="Did you mean 'Cordless drill'"):
        find([DRILL, BED], "cordelss")
    with pytest.raises(NotFound, match=r"No thing matches 'zzz'; `hearth thing list` shows"):
        find([DRILL, BED], "zzz")
    with pytest.raises(NotFound, match="No thing given"):
        find([DRILL], "  ")


def test_finding_by_prefix_name_and_ambiguity() -> None:
    ledger = make_ledger()
    saw = ledger.add_resource("Saw")
    ledger.add_resource("Sander")
    view = ledger.view
    assert view.find("resources", saw.id[:6]) == saw.id
    assert view.find("resources", "saw") == saw.id
    with pytest.raises(NotFound, match="matches 2"):
        view.find("resources", "sa")
    with pytest.raises(NotFound, match="No resource matches"):
        view.find("resources", "hammer")
    assert view.find("members", "ben") == BEN


def test_names_typed_in_part_find_resources_needs_and_commitments() -> None:
    ledger = make_ledger()
    drill = ledger.add_resource("Cordless drill")
    potatoes = ledger.add_resource("Seed potatoes")
    paint = ledger.add_need("Paint for the fence")
    compost = ledger.add_commitment("Compost for the beds", giver=ADA, receiver=BEN)
    view = ledger.view
    assert view.find("resources", "drill") == drill.id  # a word anywhere in the name
    assert view.find("resources", "potatoes") == potatoes.id
    assert view.find("resources", "seed pot") == potatoes.id
    assert view.find("needs", "paint") == paint.id
    assert view.find("needs", "fence") == paint.id
    assert view.find("commitments", "compost") == compost.id
    assert view.find("commitments", compost.id[:6]) == compost.id


def test_ambiguous_names_list_the_candidates_and_misspellings_get_a_suggestion() -> None:
    ledger = make_ledger()
    cordless = ledger.add_resource("Cordless drill")
    hammer = ledger.add_resource("Hammer drill")
    view = ledger.view
    with pytest.raises(NotFound) as ambiguous:
        view.find("resources", "drill")
    assert "Cordless drill (" + cordless.id[:8] + ")" in str(ambiguous.value)
    assert "Hammer drill (" + hammer.id[:8] + ")" in str(ambiguous.value)
    with pytest.raises(NotFound, match="Did you mean 'Cordless drill'"):
        view.find("resources", "cordelss")
    with pytest.raises(NotFound, match="Did you mean 'Ben'"):
        view.find("members", "Benn")
    # A closed need is still found when nothing open matches, but an open one comes first.
    old = ledger.add_need("Ladder")
    ledger.close_need(old.id)
    assert view.find("needs", "ladder") == old.id
    new = ledger.add_need("Ladder, taller")
    assert view.find("needs", "ladder") == new.id
