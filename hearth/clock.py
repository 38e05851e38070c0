"""Where time comes from: passed in, never read from a global deep inside the code."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Something that tells the time in integer milliseconds since the Unix epoch (UTC)."""

    def now_ms(self) -> int:
        """The current time in milliseconds."""
        ...


class SystemClock:
    """The real wall clock."""

    def now_ms(self) -> int:
        """The current time in milliseconds."""
        return time.time_ns() // 1_000_000
