"""Attacks on the second process that opens a snapshot's covered bundles
(``hearth/validity/snapshot_opening.py``, docs/security.md §6 check 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.node.node import Node
from hearth.validity.intake import Verdict, take_snapshot
from hearth.validity.snapshot_opening import Opener
from tests.test_snapshots import bundles, group, snapshot  # noqa: F401 - group: a fixture

_PLANTED = """
import pathlib
pathlib.Path(__file__).with_name("planted-ran").write_text("ran as the member")
raise SystemExit(3)
"""


def test_a_module_planted_where_the_member_runs_hearth_is_not_run(
    group: tuple[Node, Node, Node, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R15's other user of the same computer: the member runs `hearth sync` from a
    directory others can write to (/tmp, a shared folder) where someone left a
    ``queue.py``. The second process was started with ``python -m``, which puts the
    working directory first on its import path: it imported the planted module (code run
    as the member, who holds the group's keys), then died, and the bundles were opened
    here as if nothing happened. It must import only Hearth and what it is installed
    with."""
    _, ben, fay, gid = group
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "queue.py").write_text(_PLANTED)
    monkeypatch.chdir(shared)
    carried = bundles(ben, gid)
    opener = Opener(fay, process_from=1, chunk=1)
    for envelope in carried:
        opener.add(envelope)
    assert opener.sent_away == len(carried)
    outcome, taken = take_snapshot(fay, snapshot(ben, gid), opener, source="test")
    assert outcome.verdict is Verdict.APPLIED, outcome.reason
    assert len(taken) == len(carried)
    assert not (shared / "planted-ran").exists()
