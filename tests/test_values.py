"""Dates and quantities as members type them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from hearth.errors import UsageError
from hearth.values import format_date, format_time, parse_date

# Monday 2026-12-07 15:00 UTC = 10:00 in New York.
NOW = int(datetime(2026, 12, 7, 15, 0, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.fixture
def in_new_york() -> Iterator[None]:
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    os.environ["TZ"] = "UTC"
    time.tzset()


def test_dates_are_the_members_own_days(in_new_york: None) -> None:
    by = parse_date("2026-12-10", now_ms=NOW)
    # The end of 10 December in New York: 04:59:59 on the 11th in UTC.
    assert by == int(datetime(2026, 12, 11, 4, 59, 59, tzinfo=timezone.utc).timestamp() * 1000)
    assert format_date(by) == "2026-12-10"
    assert format_time(parse_date("2026-12-10T18:00", now_ms=NOW)) == "2026-12-10 18:00"
    late = int(datetime(2026, 12, 8, 2, 0, tzinfo=timezone.utc).timestamp() * 1000)
    assert format_date(parse_date("today", now_ms=late)) == "2026-12-07"  # 21:00 in New York


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("friday", "2026-12-11"),
        ("Fri", "2026-12-11"),
        ("monday", "2026-12-07"),  # today is a Monday
        ("next monday", "2026-12-14"),
        ("tomorrow", "2026-12-08"),
        ("+3d", "2026-12-10"),
    ],
)
def test_weekday_names_and_relative_days(text: str, day: str) -> None:
    assert format_date(parse_date(text, now_ms=NOW)) == day


def test_a_date_long_past_is_a_slip_and_refused() -> None:
    with pytest.raises(UsageError, match="more than a year ago"):
        parse_date("1999-12-01", now_ms=NOW)
    assert format_date(parse_date("2026-12-01", now_ms=NOW)) == "2026-12-01"  # last week: fine
    with pytest.raises(UsageError, match="not a date"):
        parse_date("someday", now_ms=NOW)
