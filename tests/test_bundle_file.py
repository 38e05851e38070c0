"""Bundle files read as a stream (hearth/protocol/bundle_file.py), and what junk in one costs
(issue 23, item 7): a count per source, not a row and a durable write per entry."""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path

import pytest

from hearth.errors import ProtocolError
from hearth.protocol import bundle_file, codec
from hearth.protocol.bundle import MAX_BUNDLE
from tests.conftest import Cli


class Watched(io.BytesIO):
    """A stream that remembers the largest read asked of it."""

    largest = 0

    def read(self, size: int | None = -1) -> bytes:
        self.largest = max(self.largest, size if size is not None and size >= 0 else 1 << 62)
        return super().read(size)


def test_entries_are_read_one_at_a_time_and_an_oversized_one_is_skipped_unread() -> None:
    huge = b"x" * (MAX_BUNDLE + 10_000)
    data = codec.encode([bundle_file.MAGIC, 1, [b"one", huge, b"two"]])
    stream = Watched(data)
    assert list(bundle_file.entries(stream)) == [b"one", None, b"two"]
    assert stream.largest <= 64 * 1024


def test_a_damaged_file_yields_what_came_before_the_damage() -> None:
    data = codec.encode([bundle_file.MAGIC, 1, [b"one", b"two", b"three"]])
    read: list[bytes | None] = []
    with pytest.raises(ProtocolError, match="ends in the middle"):
        read.extend(bundle_file.entries(io.BytesIO(data[:-3])))
    assert read == [b"one", b"two"]
    for other in (b"", b"not a bundle file", codec.encode(["something", 1, []])):
        with pytest.raises(ProtocolError, match="not a Hearth bundle file"):
            list(bundle_file.entries(io.BytesIO(other)))
    with pytest.raises(ProtocolError, match="not a bundle"):
        list(bundle_file.entries(io.BytesIO(codec.encode([bundle_file.MAGIC, 1, [3]]))))


@pytest.mark.process
def test_importing_junk_costs_a_count_not_a_row_each(cli: Cli, tmp_path: Path) -> None:
    cli("init", "--name", "Ada")
    cli("group", "create", "Allotment")
    junk = tmp_path / "junk.hb"
    junk.write_bytes(codec.encode([bundle_file.MAGIC, 1, [b""] * 50_000 + [b"\x01" * 100]]))
    started = time.monotonic()
    out = cli("bundle", "import", str(junk)).out
    took = time.monotonic() - started
    assert "rejected 50001" in out
    assert took < 10, took  # one durable write for all of it, not one each
    [store] = cli.home.glob("*.db")
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM rejections").fetchone() == (0,)
        assert db.execute("SELECT source, count FROM damaged_arrivals").fetchall() == [
            (f"file {junk}", 50_001)
        ]
    damaged = cli("bundle", "import", str(tmp_path / "nope.hb"), check=False)
    assert damaged.code != 0
    assert "Cannot read" in damaged.err
