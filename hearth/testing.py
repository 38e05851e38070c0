"""Helpers for tests of Hearth and of code built on it: a settable clock, seeded ids."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FakeClock", "seeded_ids"]


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
