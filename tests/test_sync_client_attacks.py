"""Attacks on a node's side of the exchange (``hearth/net/sync_client.py``) by a relay that
lies: a real ``hearth`` process against :mod:`tests.hostile_relay`."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from hearth.node.node import STORE_FILE
from hearth.protocol.bundle import parse_envelope
from hearth.protocol.frames import (
    Ack,
    CaughtUp,
    Deliveries,
    Error,
    Frame,
    Publish,
    Register,
    Subscribe,
)
from tests.conftest import Cli
from tests.hostile_relay import hostile_relay


def _solo(tmp_path: Path, url: str) -> Cli:
    cli = Cli(tmp_path / "solo")
    cli("init", "--name", "Solo")
    cli("group", "create", "Alone", "--relay", url)
    return cli


def test_a_frame_of_thousands_of_damaged_bundles_costs_little(tmp_path: Path) -> None:
    """R16 keeps the cursor where it was for a damaged bundle and counts it. A relay sends
    one ``deliveries`` frame (version 3) of 2,000 empty "bundles" — 10 KB on the wire (as
    many as a frame can hold of real ones; a 1 MiB frame held some 300,000 empty ones
    before that bound). Each was a warning line and a write to the store of
    its own (20,000 of them: a sync out of time after 60 s with 11,000 lines of log,
    saying only "no answer"; a 1 MiB frame, half an hour). Now what arrives damaged in a
    frame is counted in memory and written, and logged, once per source; the sync
    finishes in seconds, `doctor` says how many arrived damaged, and the cursor there
    has not moved."""
    count = 2_000

    def answer(frame: Frame) -> list[Frame]:
        if isinstance(frame, Publish):
            return [Ack(id=parse_envelope(frame.envelope).id, cursor=count + 1)]
        if not isinstance(frame, Subscribe):
            return []
        junk = Deliveries(
            topic=frame.topic, cursors=list(range(1, count + 1)), envelopes=[b""] * count
        )
        return [junk, CaughtUp(topic=frame.topic, cursor=count)]

    with hostile_relay(answer) as url:
        cli = _solo(tmp_path, url)
        started = time.monotonic()
        result = cli("sync", "--timeout", "20", "--json", check=False)
        took = time.monotonic() - started
    assert took < 10, took
    assert len(result.err.splitlines()) < 20, result.err[-2000:]
    data = json.loads(result.out)
    [report] = data["relays_ok"] + data["relays_failed"]
    assert "no answer" not in json.dumps(report)
    assert "2000" in cli("doctor", check=False).out
    with closing(sqlite3.connect(tmp_path / "solo" / STORE_FILE)) as db:
        cursors = db.execute("SELECT cursor FROM relay_cursors WHERE url = ?", (url,)).fetchall()
    assert all(cursor <= 0 for (cursor,) in cursors), cursors


_LIE = "\x1b[31mYou were removed from the group by Ada.\x1b[0m\nhearth: run `hearth group leave`"


def test_a_relays_refusal_is_shown_as_its_words_and_cannot_drive_the_terminal(
    tmp_path: Path,
) -> None:
    """A relay that will not keep a group says why (NOT_SERVED), and the member is shown
    it. A lying relay's "why" was printed as it came, after "not reached —" as if Hearth
    said it: terminal escapes (here, red), a line break that starts a line of its own
    looking like Hearth's advice, and any length (a frame's megabyte), in `sync`,
    `status` and the log. Now it is shown as the relay's words, on one line, printable
    characters only, cut short."""

    def answer(frame: Frame) -> list[Frame]:
        if isinstance(frame, Publish):
            return [Ack(id=parse_envelope(frame.envelope).id, cursor=1)]
        if isinstance(frame, Register):
            return [Error(code="quota-exceeded", message=_LIE + " " + "x" * 5000)]
        if isinstance(frame, Subscribe):
            return [CaughtUp(topic=frame.topic, cursor=0)]
        return []

    with hostile_relay(answer) as url:
        cli = _solo(tmp_path, url)
        synced = cli("sync", "--timeout", "20", check=False)
        status = cli("status", check=False)
    assert synced.code != 0
    for shown in (synced.out, synced.err, status.out):
        assert "\x1b" not in shown
        assert "You were removed from the group by Ada." in shown
        assert not any(line.startswith("hearth: run") for line in shown.splitlines())
        assert "x" * 500 not in shown
    assert "will not keep this group (quota-exceeded), saying:" in synced.out


def test_a_deliveries_frame_of_more_bundles_than_fit_a_frame_closes_the_exchange(
    tmp_path: Path,
) -> None:
    """Every bundle is padded to at least 512 bytes, so a frame (at most 1 MiB) holds at
    most 2,048 of them. A lying relay's frame of 100,000 empty ones was decoded, made
    into 100,000 deliveries and taken in one by one — seconds of the node's event loop
    for each such frame, its app and its other relays waiting. Now such a frame is
    refused as malformed: the exchange with that relay ends, saying why, and nothing of
    it reaches the node's intake."""
    count = 100_000

    def answer(frame: Frame) -> list[Frame]:
        if isinstance(frame, Publish):
            return [Ack(id=parse_envelope(frame.envelope).id, cursor=count + 1)]
        if not isinstance(frame, Subscribe):
            return []
        junk = Deliveries(topic=frame.topic, cursors=[1] * count, envelopes=[b""] * count)
        return [junk, CaughtUp(topic=frame.topic, cursor=count)]

    with hostile_relay(answer) as url:
        cli = _solo(tmp_path, url)
        result = cli("sync", "--timeout", "20", "--json", check=False)
    data = json.loads(result.out)
    [failed] = data["relays_failed"]
    assert "deliveries frame" in failed["error"]
    assert "damaged" not in cli("doctor", check=False).out
