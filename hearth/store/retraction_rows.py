"""The store's part for what did not count: changes known never to be part of a ledger,
and the notes kept for members and admins about what was taken back or refused.

``hearth/validity/retraction.py`` and ``hearth/validity/alerts.py`` decide what these
mean; this module only keeps and finds them.
"""

from __future__ import annotations

from collections.abc import Set

from hearth.store.statements import Statements

__all__ = ["RetractionRows"]


class RetractionRows(Statements):
    """Orphaned changes and the notes about what did not count, as stored."""

    def orphan_changes(self, group_id: str, changes: Set[bytes]) -> None:
        """Note changes that will never be part of a group's ledger (inside a write)."""
        for change in changes:
            self.run(
                "INSERT OR IGNORE INTO orphaned_changes(group_id, hash) VALUES (?, ?)",
                (group_id, change),
            )

    def unorphan_changes(self, group_id: str, changes: Set[bytes]) -> None:
        """Changes that may be part of a group's ledger after all (inside a write)."""
        for change in changes:
            self.run(
                "DELETE FROM orphaned_changes WHERE group_id = ? AND hash = ?", (group_id, change)
            )

    def is_orphaned(self, group_id: str, change: bytes) -> bool:
        """Whether a change is known never to be part of a group's ledger."""
        return bool(
            self.query(
                "SELECT 1 FROM orphaned_changes WHERE group_id = ? AND hash = ?", (group_id, change)
            )
        )

    def orphaned_changes(self, group_id: str) -> set[bytes]:
        """The hashes of a group's changes known never to be part of its ledger."""
        rows = self.query("SELECT hash FROM orphaned_changes WHERE group_id = ?", (group_id,))
        return {bytes(h) for (h,) in rows}

    def keep_notice(self, at_ms: int, kind: str, text: str) -> None:
        """Keep a note of something that did not count, of a kind (``removal``,
        ``equivocation``, ``second-claim`` …), made at ``at_ms`` (inside a write)."""
        self.run("INSERT INTO rejections(at, source, reason) VALUES (?, ?, ?)", (at_ms, kind, text))

    def retraction_notices(self, since_ms: int) -> list[tuple[int, str]]:
        """(when, what) of the notes of a removal or an equivocation since ``since_ms``,
        newest first."""
        rows = self.query(
            "SELECT at, reason FROM rejections WHERE source IN ('removal', 'equivocation') "
            "AND at >= ? ORDER BY at DESC",
            (since_ms,),
        )
        return [(int(at), str(reason)) for at, reason in rows]

    def second_claim_notices(self, since_ms: int) -> list[str]:
        """What the notes of an invite claimed a second time since ``since_ms`` say,
        oldest first."""
        rows = self.query(
            "SELECT reason FROM rejections WHERE source = 'second-claim' AND at >= ? ORDER BY at",
            (since_ms,),
        )
        return [str(reason) for (reason,) in rows]
