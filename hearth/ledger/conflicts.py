"""Problems a merge cannot see, found by looking at the merged ledger.

Automerge merges concurrent edits without complaint, so two members offline at the same
time can each lend out the one ladder, or promise more seed potatoes than there are.
These checks find such situations; members settle them with ordinary edits (a return,
a cancellation), after which the conflict disappears by itself.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from decimal import Decimal

from hearth.ledger import clashes
from hearth.ledger.model import Conflict
from hearth.ledger.view import LedgerView
from hearth.values import format_quantity

__all__ = ["describe_clash", "find_conflicts"]


def _conflict_id(kind: str, *entries: str) -> str:
    return hashlib.sha256("|".join((kind, *entries)).encode()).hexdigest()[:16]


def describe_clash(view: LedgerView, clash: clashes.FieldClash) -> str:
    """``location was set at the same time to 'Ada's garden' by Ada and 'Church hall' by
    Ben; it shows 'Church hall'``."""

    def shown(value: str) -> str:
        return f"'{view.member_name(value) if clash.field == 'keeper' else value}'"

    rivals = " and ".join(f"{shown(r.value)} by {view.member_name(r.by)}" for r in clash.rivals)
    return f"{clash.field} was set at the same time to {rivals}; it shows {shown(clash.current)}."


def find_conflicts(view: LedgerView) -> list[Conflict]:
    """Every current conflict in the ledger, in a stable order."""
    found: list[Conflict] = []
    name = view.member_name
    promised: defaultdict[str, Decimal] = defaultdict(Decimal)
    promising: defaultdict[str, list[str]] = defaultdict(list)
    for commitment in view.commitments():
        lost = [c for c in commitment.changes if not c.applied]
        if lost:
            who = ", ".join(f"{name(c.by)} ({c.to_status.value})" for c in lost)
            found.append(
                Conflict(
                    id=_conflict_id("status", commitment.id),
                    kind="status",
                    summary=(
                        f"'{commitment.what}' was changed by two people at once: it is "
                        f"{commitment.status.value}, but {who} did not take effect."
                    ),
                    advice="Agree on what should happen and change its status again if needed.",
                    entries=(commitment.id,),
                )
            )
        if commitment.resource and commitment.status.is_open and commitment.quantity:
            promised[commitment.resource] += commitment.quantity
            promising[commitment.resource].append(commitment.id)

    for resource in view.resources():
        for clash in clashes.field_clashes(view.tables["resources"][resource.id]):
            found.append(
                Conflict(
                    id=_conflict_id("field-clash", resource.id, clash.field),
                    kind="field-clash",
                    summary=f"'{resource.name}': {describe_clash(view, clash)}",
                    advice=f"Agree on the {clash.field} and set it again "
                    f"(`hearth resource edit {resource.id[:8]} --{clash.field} ...`).",
                    entries=(resource.id, *(r.edit for r in clash.rivals)),
                )
            )
        if len(resource.lent_to) > 1:
            borrowers = " and ".join(name(m) for m in resource.lent_to)
            found.append(
                Conflict(
                    id=_conflict_id("double-lend", resource.id),
                    kind="double-lend",
                    summary=f"'{resource.name}' is lent to {borrowers} at the same time.",
                    advice="Record a return for whoever does not actually have it.",
                    entries=(resource.id,),
                )
            )
        if resource.quantity < 0:
            found.append(
                Conflict(
                    id=_conflict_id("overdrawn", resource.id),
                    kind="overdrawn",
                    summary=(
                        f"More '{resource.name}' was used or given than there was: the "
                        f"ledger shows {format_quantity(resource.quantity)} {resource.unit}."
                    ).replace("  ", " "),
                    advice="Count what is really there and record a correction.",
                    entries=(resource.id,),
                )
            )
        total = promised.get(resource.id)
        if total is not None and total > resource.quantity and not resource.removed:
            found.append(
                Conflict(
                    id=_conflict_id("over-committed", resource.id),
                    kind="over-committed",
                    summary=(
                        f"Open commitments promise {format_quantity(total)} of "
                        f"'{resource.name}' but only {format_quantity(resource.quantity)} "
                        "are available."
                    ),
                    advice="Cancel or decline a commitment, or record more of the resource.",
                    entries=(resource.id, *sorted(promising[resource.id])),
                )
            )
    return found
