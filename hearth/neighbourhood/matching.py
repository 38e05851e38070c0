"""Pointing out what could meet a need: a neighbour group's offer, or something the group
already has. A match is a shared word (``ladder`` in "a ladder for the shed" and
"Long ladder"), not a promise: members decide."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hearth.ledger.model import Need, Resource
from hearth.neighbourhood.rules import Offer

__all__ = ["Match", "Matcher"]

_SMALL = frozenset(
    {
        "the",
        "a",
        "an",
        "and",
        "or",
        "of",
        "for",
        "to",
        "with",
        "some",
        "any",
        "our",
        "my",
        "your",
        "from",
        "in",
        "on",
        "at",
        "by",
        "more",
        "less",
    }
)


@dataclass(frozen=True, slots=True)
class Match:
    """Something that could meet a need: in the group itself, or offered by a neighbour."""

    what: str
    where: str  # "the group", or the neighbour group's name
    id: str  # the resource's or the offer's id


def _words(text: str) -> set[str]:
    found = set()
    for word in re.findall(r"[^\W\d_]+", text.casefold()):
        if len(word) < 3 or word in _SMALL:
            continue
        found.add(word[:-1] if word.endswith("s") and len(word) > 3 else word)  # bags ~ bag
    return found


class Matcher:
    """What could meet a need: the group's own resources with some left, then neighbour
    groups' offers. Their words are worked out once, for many needs."""

    def __init__(self, resources: Iterable[Resource], offers: Sequence[Offer]) -> None:
        self._candidates = [
            (_words(r.name), Match(what=r.name, where="the group", id=r.id))
            for r in resources
            if not r.removed and r.quantity > 0
        ]
        self._candidates += [
            (_words(f"{o.what} {o.note}"), Match(what=o.what, where=o.group_name, id=o.id))
            for o in offers
        ]

    def for_need(self, need: Need) -> list[Match]:
        """The matches of one need, in the order above."""
        wanted = _words(need.what)
        return [match for words, match in self._candidates if wanted & words]
