"""Finding the one thing a member means from what they typed: an id, part of an id, or a
name typed in part.

Every command that takes a resource, member, need, commitment, group, device,
neighbourhood, offer or request goes through :func:`pick`, so they all understand the
same things, tried in this order:

1. the whole id;
2. the start of an id, when what was typed reads as one as the lists show ids (eight or
   more hex digits): so a name cannot pass for an id (another group can copy a name, not
   an id);
3. the whole name (any case);
4. the start of an id, then the start of a former id (what an offer or request was called
   by its writer before records were known by their id);
5. the start of the name, then each typed word starting a word of the name
   (``drill`` finds "Cordless drill", ``seed pot`` finds "Seed potatoes"), then the typed
   text anywhere in the name.

Names of things no longer current (a removed resource, a closed need, a member who left)
count only when no current name does. More than one candidate at the first rule that finds
any is an error listing them; none is an error that says "did you mean" when a name is
close to what was typed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from string import hexdigits

from hearth.errors import NotFound

__all__ = ["Candidate", "pick"]

_SHOWN = 6  # candidates listed in an "ambiguous" message
_ID_SHOWN = 8  # hex digits of an id that the lists show


@dataclass(frozen=True)
class Candidate:
    """Something a member can name: its id, its name, whether it is current, and the id
    its writer gave it before records had ids of their own (offers and requests)."""

    id: str
    name: str
    current: bool = True
    former_id: str = ""


def pick(
    candidates: Sequence[Candidate],
    text: str,
    *,
    noun: str,
    listing: str,
    plural: str = "",
) -> Candidate:
    """The one candidate ``text`` names, or :class:`NotFound` saying what to type instead.

    ``noun`` names the kind of thing ("resource"); ``listing`` is the command that shows
    them all ("hearth resource list").
    """
    key = text.strip()
    if not key:
        raise NotFound(f"No {noun} given; `{listing}` shows them.")
    found = _first_that_finds(candidates, key)
    if len(found) == 1:
        return found[0]
    if not found:
        close = _did_you_mean(candidates, key)
        if close:
            raise NotFound(f"No {noun} matches {text!r}. Did you mean {close}?")
        raise NotFound(f"No {noun} matches {text!r}; `{listing}` shows them.")
    names = ", ".join(_label(c) for c in found[:_SHOWN])
    more = f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    raise NotFound(
        f"{text!r} matches {len(found)} {plural or noun + 's'}: {names}{more}; "
        "type more of the name or the id."
    )


def _first_that_finds(candidates: Sequence[Candidate], key: str) -> list[Candidate]:
    """The candidates of the first rule (of the module's five) that finds any."""
    lowered = key.lower()
    whole_id = [c for c in candidates if c.id in (key, lowered)]
    if whole_id:
        return whole_id
    by_id = [c for c in candidates if c.id.startswith(lowered)]
    if by_id and _reads_as_id(lowered):
        return by_id
    whole_name = _by_name([c for c in candidates if c.current], key, _NAME_RULES[:1])
    found = whole_name or by_id
    found = found or [c for c in candidates if c.former_id and c.former_id.startswith(lowered)]
    return found or _by_name(candidates, key, _NAME_RULES)


def _reads_as_id(key: str) -> bool:
    """Whether typed text is an id as the lists show one (its first eight hex digits)."""
    return len(key) >= _ID_SHOWN and all(c in hexdigits for c in key)


def _by_name(
    candidates: Sequence[Candidate], key: str, rules: Sequence[Callable[[str, str], bool]]
) -> list[Candidate]:
    named = [c for c in candidates if c.name]
    for pool in ([c for c in named if c.current], [c for c in named if not c.current]):
        for rule in rules:
            found = [c for c in pool if rule(c.name.casefold(), key.casefold())]
            if found:
                return found
    return []


def _words_start(name: str, key: str) -> bool:
    words = name.split()
    return all(any(w.startswith(typed) for w in words) for typed in key.split())


_NAME_RULES: tuple[Callable[[str, str], bool], ...] = (
    lambda name, key: name == key,
    lambda name, key: name.startswith(key),
    _words_start,
    lambda name, key: key in name,
)


def _did_you_mean(candidates: Sequence[Candidate], key: str) -> str:
    """``'Cordless drill'`` when a name (or a word of one) is close to ``key``, else ""."""
    by_word: dict[str, str] = {}
    for c in candidates:
        if not c.name:
            continue
        by_word.setdefault(c.name.casefold(), c.name)
        for word in c.name.casefold().split():
            by_word.setdefault(word, c.name)
    close = difflib.get_close_matches(key.casefold(), list(by_word), n=3, cutoff=0.7)
    names = list(dict.fromkeys(by_word[w] for w in close))
    return " or ".join(repr(n) for n in names)


def _label(c: Candidate) -> str:
    return f"{c.name} ({c.id[:8]})" if c.name else c.id[:8]
