"""Helpers for tests of Hearth and of code built on it: a settable clock, seeded ids."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from hearth.ledger.archive import archive_seed
from hearth.ledger.automerge_doc import LedgerDoc
from hearth.ledger.model import TABLES

__all__ = ["FakeClock", "MemoryArchives", "seeded_ids"]


@dataclass
class FakeClock:
    """A clock that moves only when told to (or by ``step`` ms on every reading)."""

    now: int = 1_800_000_000_000
    step: int = 0

    def now_ms(self) -> int:
        """The fake time, advanced by ``step`` first."""
        self.now += self.step
        return self.now

    def advance(self, ms: int) -> None:
        """Move time forward."""
        self.now += ms


def seeded_ids(seed: int) -> Callable[[], str]:
    """An id factory that gives the same ids for the same seed."""
    rng = random.Random(seed)  # noqa: S311 - reproducible ids for tests, not secrets
    return lambda: f"{rng.getrandbits(128):032x}"


def seeded_bytes(seed: int) -> Callable[[int], bytes]:
    """A source of "random" bytes that gives the same bytes for the same seed — keys, salts
    and actor ids included — so a simulation replays exactly."""
    rng = random.Random(seed)  # noqa: S311 - reproducible runs for tests, not secrets
    return rng.randbytes


class MemoryArchives:
    """Archive documents kept in memory, for ledgers used without a node."""

    def __init__(self, group_seed: bytes, actor: bytes) -> None:
        self._seed = group_seed
        self._actor = actor
        self.docs: dict[str, LedgerDoc] = {}

    def get(self, period: str) -> LedgerDoc:
        """The archive of a quarter, created on first use."""
        if period not in self.docs:
            self.docs[period] = LedgerDoc.genesis(
                archive_seed(self._seed, period), TABLES, self._actor
            )
        return self.docs[period]

    def all(self) -> list[LedgerDoc]:
        """Every archive, oldest quarter first."""
        return [self.docs[p] for p in sorted(self.docs)]

    def named(self) -> dict[str, LedgerDoc]:
        """Every archive by quarter."""
        return dict(self.docs)

    def forget(self) -> None:
        """Nothing to forget: memory is the only copy."""
