"""Turning what a member types into checked values, and values back into words.

Every function raises :class:`~hearth.errors.UsageError` with a sentence naming the
problem, so the CLI and the TUI can show it as is.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from hearth.errors import UsageError

__all__ = [
    "MAX_NAME",
    "MAX_NOTE",
    "check_text",
    "counted",
    "format_date",
    "format_quantity",
    "format_time",
    "parse_date",
    "parse_quantity",
]

MAX_NAME = 100
MAX_NOTE = 2000
_MAX_QUANTITY = Decimal("1e12")
_RELATIVE = re.compile(r"^\+?(\d{1,4})\s*([dw])$")


def check_text(value: str, what: str, *, limit: int = MAX_NAME, empty_ok: bool = False) -> str:
    """Strip a name or note and refuse it if empty, too long or full of control characters."""
    text = value.strip()
    if not text and not empty_ok:
        raise UsageError(f"The {what} is empty; give it a few words.")
    if len(text) > limit:
        raise UsageError(f"The {what} is {len(text)} characters long; keep it under {limit}.")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text):
        raise UsageError(f"The {what} contains control characters.")
    return text


def parse_quantity(text: str | int | float | Decimal, *, allow_zero: bool = False) -> Decimal:
    """A quantity as an exact decimal: positive (or zero if allowed), finite, sensible."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise UsageError(f"{text!r} is not a number; give a quantity like 3 or 2.5.") from None
    if not value.is_finite():
        raise UsageError(f"{text!r} is not a usable quantity.")
    if value < 0:
        raise UsageError(f"The quantity {text} is negative; quantities are zero or more.")
    if value == 0 and not allow_zero:
        raise UsageError("The quantity is zero; give a quantity above zero.")
    if value >= _MAX_QUANTITY:
        raise UsageError(f"The quantity {text} is too large.")
    if value.as_tuple().exponent < -6:  # type: ignore[operator]
        raise UsageError(f"The quantity {text} has too many decimal places (6 at most).")
    return value.normalize() if value != 0 else Decimal(0)


def format_quantity(value: Decimal) -> str:
    """A quantity as a member would write it: ``3``, ``2.5``, never ``3E+1``."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_LONG_PAST_DAYS = 366


def _weekday(raw: str, today: date) -> date | None:
    """``friday`` (or ``fri``): the soonest Friday from today on; ``next friday``: the
    soonest after today."""
    after_today = raw.startswith("next ")
    name = raw.removeprefix("next ").strip()
    found = [n for n, day in enumerate(_WEEKDAYS) if len(name) >= 3 and day.startswith(name)]
    if len(found) != 1:
        return None
    ahead = (found[0] - today.weekday()) % 7
    if ahead == 0 and after_today:
        ahead = 7
    return today + timedelta(days=ahead)


def parse_date(text: str, *, now_ms: int) -> int:
    """A date or time, in the member's own time zone, as milliseconds since the epoch.

    Accepts ``2026-12-01``, ``2026-12-01T18:00``, ``today``, ``tomorrow``, ``friday``,
    ``next friday``, ``+3d`` and ``2w``. A bare date means the end of that day, which is
    what "by Friday" means. A date more than a year past is refused: it is a typing slip.
    """
    raw = text.strip().lower()
    today = _local(now_ms).date()  # the member's own today
    day: date | None = None
    if raw == "today":
        day = today
    elif raw == "tomorrow":
        day = today + timedelta(days=1)
    elif match := _RELATIVE.match(raw):
        count, unit = int(match.group(1)), match.group(2)
        day = today + timedelta(days=count * (7 if unit == "w" else 1))
    else:
        day = _weekday(raw, today)
    if day is None:
        try:
            if len(raw) == 10:
                day = date.fromisoformat(raw)
            else:
                moment = datetime.fromisoformat(raw)
                if moment.tzinfo is None:
                    moment = moment.astimezone()  # as the member's clock reads
                return _not_long_past(text, int(moment.timestamp() * 1000), now_ms)
        except ValueError:
            raise UsageError(
                f"{text!r} is not a date; use a date like 2026-12-01, 'friday', 'tomorrow' "
                "or '+3d'."
            ) from None
    end_of_day = datetime(day.year, day.month, day.day, 23, 59, 59).astimezone()
    return _not_long_past(text, int(end_of_day.timestamp() * 1000), now_ms)


def _local(ms: int) -> datetime:
    """A moment on the member's own clock (the machine's time zone)."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).astimezone()


def _not_long_past(text: str, at_ms: int, now_ms: int) -> int:
    if at_ms < now_ms - _LONG_PAST_DAYS * 86_400_000:
        raise UsageError(f"{text!r} is more than a year ago; give a date from today on.")
    return at_ms


def counted(n: int, noun: str, plural: str = "") -> str:
    """``n`` and the noun agreeing with it: ``1 bundle``, ``3 bundles``, ``2 bushes``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def format_time(ms: int) -> str:
    """A moment as ``2026-11-28 14:02``, in the member's own time zone."""
    return _local(ms).strftime("%Y-%m-%d %H:%M")


def format_date(ms: int) -> str:
    """A day as ``2026-11-28``, in the member's own time zone."""
    return _local(ms).strftime("%Y-%m-%d")
