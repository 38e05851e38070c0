"""Entry ids only their writer can make (docs/security.md §5, R2a).

Two devices writing at one key of one map without having seen each other's write make an
Automerge conflict, and the view shows only the winner: the write with the larger
operation id, which its writer can choose by making operations first. A member whose
client writes at the key of someone else's event, resource, need, commitment or record,
from a copy of the document taken before that entry was made, hides it from every view —
and the record rules, judged at what the change builds on, see a free key there.

So in a group whose founding record says ``"entry_ids": "tagged"`` (every group made since
this rule), the id of every entry and record a member makes ends with a tag of that
member's id: 16 hex digits of randomness, then the first 16 hex digits of the member id
(itself 128 bits of the SHA-256 of the member's public key, so another member's tag cannot
be had short of grinding keys for 2**64 tries). A change that makes a new key in one of
:data:`TAGGED_TABLES`, or in a record map inside an entry (a resource's ``edits``, a
commitment's ``changes``), whose tag is not its signer's, is refused: it can then only
ever collide with its own writer's entries.

Two kinds of entry are not tagged, on purpose: a neighbourhood handoff's commitment, which
is kept under the request's ref so that two members' devices recording it at once write one
entry (it is taken only where the same change puts that key in its ``handoff`` field, and
only under a key no member's entry can have: a request's ref is 32 hex digits, the shape
of a tagged id, so it is kept as :func:`handoff_id`; else a member could write at another's
commitment from an old copy, saying in ``handoff`` that its id is a request's); and
a relay, kept under a hash of its address so that two members adding one relay write one.
Groups founded before this rule keep untagged ids and are judged as before.
"""

from __future__ import annotations

from collections.abc import Callable

from hearth.errors import ProtocolError
from hearth.ledger.change_ops import DELETE_ACTION, Operation

__all__ = [
    "RECORD_MAPS",
    "TAGGED",
    "TAGGED_TABLES",
    "check_new_key",
    "handoff_id",
    "tagged_id",
    "writers",
]

TAGGED = "tagged"
"""The founding record's ``entry_ids`` value for a group whose entry ids carry their
writer's tag."""

TAGGED_TABLES = frozenset({"events", "resources", "needs", "commitments"})
"""The tables whose new entries must carry their writer's tag."""

RECORD_MAPS = {"resources": "edits", "commitments": "changes"}
"""The map inside an entry of these tables where members add records under tagged keys."""

_TAG = 16
_HANDOFFS = "commitments"
_HANDOFF_MARK = "h"


def tagged_id(randomness: str, member_id: str) -> str:
    """A new entry id for ``member_id``: the start of ``randomness`` (hex, at least 16
    digits: what tells entries apart, and what id prefixes typed by members match), then
    the member's tag."""
    return randomness[:_TAG] + member_id[:_TAG]


def handoff_id(ref: str) -> str:
    """The id, in a group whose entry ids are tagged, of the commitment recording the
    accepted neighbourhood request ``ref``: never the length of a tagged id, so that no
    write claiming to be a handoff can land on a member's entry."""
    return ref + _HANDOFF_MARK


def writers(key: str, member_id: str) -> bool:
    """Whether ``key`` is an entry id that ``member_id`` may make."""
    return len(key) == 2 * _TAG and key[_TAG:] == member_id[:_TAG]


def check_new_key(
    path: tuple[str, ...],
    op: Operation,
    author: str,
    handoff_in: Callable[[tuple[bytes, int]], object],
) -> None:
    """:class:`ProtocolError` if ``op``, writing a new key into the map at ``path`` (a
    table's own map, or a map inside an entry), makes an entry or record there under an
    id that is not ``author``'s. ``handoff_in``: what the change puts at ``handoff`` in a
    map it makes (asked only of a commitment under an untagged id). A write that says it
    replaces something is asked too: what it names as replaced is not checked to be at
    that key, and Automerge keeps a value whose preds are elsewhere beside the one there,
    a conflict like any other; only a deletion, which adds no value, is not asked."""
    if op.key is None or (op.preds and op.action == DELETE_ACTION):
        return
    table = path[0]
    if len(path) == 1:
        if table not in TAGGED_TABLES or writers(op.key, author):
            return
        if table == _HANDOFFS and len(op.key) != 2 * _TAG and handoff_in(op.id) == op.key:
            return
    elif len(path) != 3 or RECORD_MAPS.get(table) != path[2] or writers(op.key, author):
        return
    raise ProtocolError(
        f"a change that makes an entry in {table!r} under an id that is not its writer's "
        "(it could hide an entry someone else made there)"
    )
