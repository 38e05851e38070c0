"""The relay's log stays small and holds no address, whatever clients send (relay/logs.py),
without processes: a fake clock, plain strings."""

from __future__ import annotations

import hashlib
import os

from relay.logs import ClientTags, LogLimit, redact, shown


def test_addresses_are_taken_out_of_any_line() -> None:
    line = (
        "Error handling request from 203.0.113.5, ::1, [2001:db8::7]:443, ::ffff:198.51.100.2 "
        "and ws://192.0.2.1:8765 at 13:14:00.461Z on Python 3.11.7"
    )
    assert redact(line) == (
        "Error handling request from [address], [address], [[address]]:443, [address] "
        "and ws://[address]:8765 at 13:14:00.461Z on Python 3.11.7"
    )


def test_text_a_client_chose_is_cut_short_and_printable() -> None:
    assert shown("short") == "short"
    assert shown("x\n" * 1000, limit=4) == "x?x?... (1996 more characters)"


def test_client_tags_are_keyed_by_a_secret_that_changes_every_day() -> None:
    now = [0.0]
    tags = ClientTags(os.urandom, lambda: now[0])
    other_relay = ClientTags(os.urandom, lambda: now[0])
    today = tags("203.0.113.5")
    assert tags("203.0.113.5") == today
    assert tags("203.0.113.6") != today
    assert other_relay("203.0.113.5") != today
    salted = hashlib.sha256(b"hearth-relay-log\0203.0.113.5").hexdigest()[:12]
    assert today != salted  # the old tag, a hash anyone could compute for every address
    now[0] = 86_400.0
    assert tags("203.0.113.5") != today


def test_repeated_lines_are_summarised_per_client_and_in_all() -> None:
    now = [0.0]
    limit = LogLimit(lambda: now[0], per_key=5, lines=20, window_s=60.0)
    one = [limit.allow("bad_frame", "a") for _ in range(300)]
    assert one.count(True) == 5
    many = [limit.allow("bad_frame", f"c{n}") for n in range(100)]
    assert many.count(True) == 15  # the rest of the 20 lines a minute
    assert limit.roll() == []  # not before the minute is over
    now[0] = 60.0
    assert limit.roll() == [("bad_frame", "", 85), ("bad_frame", "a", 295)]
    assert limit.allow("bad_frame", "a")  # a new minute
