"""The app, driven from the keyboard with Textual's pilot against a real node in a
temporary home: each flow checked on the ledger and on what the screen shows."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, Select, Static, TabbedContent

import tui.app
import tui.screens.detail
import tui.screens.invite
from hearth.ledger.history import history
from hearth.ledger.model import CommitmentStatus, Kind, NeedStatus
from hearth.node.identity import create_identity
from hearth.node.node import Node, open_node
from hearth.testing import FakeClock, seeded_ids
from hearth.validity.intake import take_in
from tests.conftest import Cli, hearth_command
from tests.test_sync_processes import start_relay
from tui.app import HearthApp
from tui.panes import fill, selected_key
from tui.screens.confirm import ConfirmScreen
from tui.screens.form import FormScreen
from tui.welcome import WelcomeApp

NOW = 1_800_000_000_000  # 2027-01-15, fixed so screens are the same every run
SIZE = (110, 34)


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    """Ada's group with a few things in it, and Ben, who joined."""
    ada_home, ben_home = tmp_path / "ada", tmp_path / "ben"
    create_identity(ada_home, name="Ada", device_name="laptop")
    create_identity(ben_home, name="Ben", device_name="phone")
    clock = FakeClock(now=NOW, step=1000)
    with open_node(ada_home, clock=clock, new_id=seeded_ids(1)) as ada:
        ada.create_group("Elm Street")
        with ada.change() as ledger:
            ledger.add_resource("Ladder", location="Ada's shed")
            ledger.add_resource("Compost", quantity=Decimal(10), unit="bags")
        token = ada.create_invite()
        with open_node(ben_home, clock=clock, new_id=seeded_ids(2)) as ben:
            ben.join_with_token(token)
            for bundle in ben.feeds.all():  # Ben's joining reaches Ada
                take_in(ada, bundle.envelope, source="test")
    return ada_home, ben_home


@pytest.fixture
def ada(homes: tuple[Path, Path]) -> Iterator[Node]:
    with open_node(
        homes[0], clock=FakeClock(now=NOW + 60_000, step=1000), new_id=seeded_ids(3)
    ) as node:
        yield node


def ben_id(node: Node) -> str:
    return node.view().find("members", "Ben")


def app_for(node: Node) -> HearthApp:
    return HearthApp(node, share=False, poll_s=0.1)


def cells(app: HearthApp, table_id: str, column: int = 1) -> list[str]:
    table = app.query_one(f"#{table_id}", DataTable)
    return [str(table.get_row_at(i)[column]) for i in range(table.row_count)]


def select_row(app: HearthApp, table_id: str, text: str) -> DataTable[Any]:
    """Focus a table and put its cursor on the row showing ``text``."""
    table = app.query_one(f"#{table_id}", DataTable)
    table.focus()
    table.move_cursor(row=cells(app, table_id).index(text))
    return table


def names(node: Node) -> set[str]:
    return {r.name for r in node.view().resources()}


async def fill_form(pilot: Pilot[None], **values: str) -> None:
    """Type into the open form's fields by key (a pick by its value), then save."""
    screen = pilot.app.screen
    assert isinstance(screen, FormScreen)
    for key, value in values.items():
        field = screen.query_one(f"#field-{key}")
        if isinstance(field, Select):
            field.value = value
        else:
            assert isinstance(field, Input)
            field.value = value
    # Enter in a text field saves as the OK button does (a second click on the button
    # within its 0.2 s press effect would be ignored, as a double click is).
    inputs = screen.query(Input)
    if inputs:
        inputs.last().focus()
        await pilot.press("enter")
    else:
        await pilot.click("#ok")
    await pilot.pause()
    for _ in range(200):  # a Save done in a worker thread (a file read or written)
        if not screen.saving:
            break
        await pilot.pause(0.02)
    await pilot.pause()


async def test_an_empty_groups_overview_says_how_to_start(tmp_path: Path) -> None:
    create_identity(tmp_path / "maya", name="Maya")
    with open_node(tmp_path / "maya") as maya:
        maya.create_group("Oak Court")
        app = app_for(maya)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            start = str(app.query_one("#start", Static).content)
            assert "Getting started" in start
            assert "press 2, then a" in start
            await pilot.press("2", "a")
            await pilot.pause()
            await fill_form(pilot, name="Step ladder", kind="tool")
            await pilot.press("1")
            await pilot.pause(0.3)
            assert str(app.query_one("#start", Static).content) == ""


async def test_the_overview_shows_recent_activity_and_that_nothing_is_shared_yet(
    ada: Node,
) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        sync_line = str(app.query_one("#sync-line", Static).content)
        assert "Only on this device" in sync_line
        assert "Only on this device" in app.sub_title  # in the header, on every tab
        recent = str(app.query_one("#recent", Static).content)
        assert "Ada added Ladder" in recent
        assert "Ben joined the group" in recent
        assert app.sub_title.startswith("Elm Street · ")


async def test_adding_a_resource_from_the_keyboard(ada: Node) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2", "a")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)
        await pilot.press(*"Wheelbarrow")
        await pilot.press("enter")
        await pilot.pause()
        # No kind is chosen for the member: the form asks, keeping what was typed.
        assert isinstance(app.screen, FormScreen)
        assert str(app.screen.query_one("#form-error", Static).content) == "Choose kind."
        assert "Wheelbarrow" not in names(ada)
        await fill_form(pilot, kind="tool")
        assert "Wheelbarrow" in names(ada)
        assert ada.view().resource(ada.view().find("resources", "Wheelbarrow")).kind is Kind.TOOL
        assert "Wheelbarrow" in cells(app, "resource-table")


async def test_lend_and_return_with_a_bad_date_refused_plainly(ada: Node) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        select_row(app, "resource-table", "Ladder")
        ladder_row = cells(app, "resource-table").index("Ladder")
        await pilot.press("l")
        await pilot.pause()
        form = app.screen
        await fill_form(pilot, until="someday")  # nobody chosen: not lent to anyone
        assert str(form.query_one("#form-error", Static).content) == "Choose to whom."
        await fill_form(pilot, to=ada.view().find("members", "Ben"))
        # The refusal shows in the form, which keeps what was typed.
        assert app.screen is form
        assert "not a date" in str(form.query_one("#form-error", Static).content)
        assert form.query_one("#field-until", Input).value == "someday"
        assert not ada.view().resource(ada.view().find("resources", "Ladder")).lent_to
        await fill_form(pilot, until="+3d")
        assert app.screen is not form
        ladder = ada.view().resource(ada.view().find("resources", "Ladder"))
        assert [ada.view().member_name(m) for m in ladder.lent_to] == ["Ben"]
        assert "Ben (borrowed until" in cells(app, "resource-table", column=4)[ladder_row]
        await pilot.press("r")
        await pilot.pause()
        assert not ada.view().resource(ladder.id).lent_to


async def test_the_lend_form_offers_whom_the_ledger_takes(ada: Node) -> None:
    """As `hearth lend`: never the keeper (who has it whenever it is not lent); the member
    herself, taking a thing someone else keeps, told as taking (issue 21)."""
    ben = ada.view().find("members", "Ben")
    with ada.change() as ledger:
        ledger.edit_resource(ledger.view.find("resources", "Compost"), keeper=ben)
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        select_row(app, "resource-table", "Ladder")  # Ada keeps it
        await pilot.press("l")
        await pilot.pause()
        offered = app.screen.query_one("#field-to", Select)._options[1:]  # after the blank
        assert [str(label) for label, _ in offered] == ["Ben"]
        await pilot.press("escape")
        await pilot.pause()
        select_row(app, "resource-table", "Compost")  # Ben keeps it
        await pilot.press("l")
        await pilot.pause()
        offered = app.screen.query_one("#field-to", Select)._options[1:]
        assert [str(label) for label, _ in offered] == ["Ada (me: I take it)"]
        await fill_form(pilot, to=ada.identity.member_id)
        compost = ada.view().resource(ada.view().find("resources", "Compost"))
        assert compost.lent_to == (ada.identity.member_id,)
        assert "You took Compost (Ben keeps it)." in [n.message for n in app._notifications]
        assert "took Compost" in [h.what for h in history(ada.view())]


async def test_search_kind_filter_and_details(ada: Node) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2", "slash")
        await pilot.press(*"comp")
        await pilot.pause()
        assert cells(app, "resource-table") == ["Compost"]
        app.query_one("#resource-table", DataTable).focus()
        await pilot.press("enter")
        await pilot.pause()
        detail = str(app.screen.query_one("#detail", Static).content)
        assert "10 bags" in detail
        assert "History:" in detail
        await pilot.press("escape")
        app.query_one("#resource-search", Input).value = ""
        await pilot.pause()
        await pilot.press("k")  # kinds: all → tool
        await pilot.pause()
        assert cells(app, "resource-table") == []  # both are 'other'


async def test_removing_asks_first(ada: Node) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        app.query_one("#resource-table", DataTable).focus()
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")  # no
        await pilot.pause()
        assert names(ada) == {"Ladder", "Compost"}
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert len(names(ada)) == 1


async def test_needs_added_and_closed(ada: Node) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "a")
        await pilot.pause()
        await fill_form(pilot, what="Seed trays", quantity="12", by="+7d")
        (need,) = ada.view().needs()
        assert need.what == "Seed trays"
        assert cells(app, "need-table") == ["Seed trays"]
        app.query_one("#need-table", DataTable).focus()
        await pilot.press("d")
        await pilot.pause()
        assert ada.view().need(need.id).status is NeedStatus.CLOSED
        assert cells(app, "need-table") == []  # only open ones are shown
        await pilot.press("f")  # mine
        await pilot.pause()
        assert cells(app, "need-table") == ["Seed trays"]


async def test_a_promise_from_proposed_to_done_and_overdue_marked(
    ada: Node, homes: tuple[Path, Path]
) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4", "a")
        await pilot.pause()
        await fill_form(pilot, what="Bring the compost", due="2027-01-01")
        assert ada.view().commitments() == []  # nobody chosen: nothing promised
        await fill_form(pilot, giver=ada.identity.member_id, receiver=ben_id(ada))
        (promise,) = ada.view().commitments()
        assert ada.view().member_name(promise.receiver) == "Ben"
        assert "OVERDUE" in cells(app, "promise-table", column=5)[0]
        await pilot.press("1")
        await pilot.pause()
        assert "OVERDUE" in str(app.query_one("#due", Static).content)
        await pilot.press("4")
        await pilot.pause()
        app.query_one("#promise-table", DataTable).focus()
        await pilot.press("y")  # Ada proposed it: Ben is the one to accept
        await pilot.pause()
        assert ada.view().commitment(promise.id).status is CommitmentStatus.PROPOSED
        assert any("Ben accepts or declines it" in n.message for n in app._notifications)
        with open_node(homes[1], clock=FakeClock(now=NOW + 90_000, step=1000)) as ben:
            for bundle in ada.feeds.all():
                take_in(ben, bundle.envelope, source="test")
            with ben.change() as ledger:
                ledger.change_commitment(promise.id, CommitmentStatus.ACCEPTED)
            for bundle in ben.feeds.all():
                take_in(ada, bundle.envelope, source="test")
        assert ada.view().commitment(promise.id).status is CommitmentStatus.ACCEPTED
        await pilot.press("d")
        await pilot.pause()
        assert ada.view().commitment(promise.id).status is CommitmentStatus.FULFILLED


async def test_a_change_from_elsewhere_appears_without_moving_the_cursor(
    ada: Node, homes: tuple[Path, Path]
) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = select_row(app, "resource-table", "Ladder")
        search = app.query_one("#resource-search", Input)
        # Another `hearth` command on this home adds something that sorts above Ladder.
        with open_node(homes[0]) as other_process, other_process.change() as ledger:
            ledger.add_resource("Axe")
        for _ in range(50):
            await pilot.pause(0.05)
            if "Axe" in cells(app, "resource-table"):
                break
        assert "Axe" in cells(app, "resource-table")
        assert selected_key(table) == ada.view().find("resources", "Ladder")
        assert search.value == ""


async def test_an_invite_with_no_relay_asks_for_one_else_shows_a_join_token(ada: Node) -> None:
    app = app_for(ada)
    before = len(ada.view().tables["invites"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5", "i")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FormScreen)  # a relay first, so that the invite can be a code
        said = form.query(Label)[1]  # the field's label says why, wrapped, not cut off
        assert "Leave it empty for a one-use token" in str(said.content)
        assert said.size.height >= 2
        await fill_form(pilot, url="")  # none: a token instead
        shown = str(app.screen.query_one("#detail", Static).content)
        assert "hearth-token-1." in shown
        assert "paste it where Hearth's first screen asks" in shown
        assert len(ada.view().tables["invites"]) == before + 1
        await pilot.press("escape", "i")
        await pilot.pause()
        form = app.screen
        await fill_form(pilot, url="relay.example.org")
        assert app.screen is form
        assert "not a relay address" in str(form.query_one("#form-error", Static).content)
        await fill_form(pilot, url="ws://127.0.0.1:9")
        assert app.screen.query_one("#invite-code", Static)  # the invite by code, at once
        await pilot.press("escape")
    assert ada.view().relays() == ["ws://127.0.0.1:9"]


async def test_first_run_creates_the_identity_and_a_group(tmp_path: Path) -> None:
    home = tmp_path / "new"
    app = WelcomeApp(home)
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#name", Input).value = "Cleo"
        app.query_one("#group", Input).value = "Allotment"
        app.query_one("#relay", Input).value = "relay.example.org:8765"
        await pilot.click("#create")
        await pilot.pause()
        assert "not a relay address" in str(app.query_one("#problem", Static).content)
        with open_node(home) as node:
            assert node.groups() == []  # nothing started with an address it cannot use
        app.query_one("#relay", Input).value = "ws://relay.example.org:8765"
        # A second click within the button's 0.2 s press effect is ignored, as a double
        # click is: wait it out, then for the group to be started (slow under load).
        await pilot.pause(0.3)
        await pilot.click("#create")
        for _ in range(100):
            if app.return_value is not None:
                break
            await pilot.pause(0.05)
    assert app.return_value is True
    with open_node(home) as node:
        assert node.identity.name == "Cleo"
        assert [g.name for g in node.groups()] == ["Allotment"]
        assert node.view().relays() == ["ws://relay.example.org:8765"]  # invites are codes


async def test_first_run_by_typing_and_enter_alone_starts_the_group(tmp_path: Path) -> None:
    home = tmp_path / "new"
    app = WelcomeApp(home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"Dora", "enter")  # on to the group's name
        assert app.focused is app.query_one("#group", Input)
        await pilot.press(*"Maple Row", "enter")
        await pilot.pause()
    assert app.return_value is True
    with open_node(home) as node:
        assert [g.name for g in node.groups()] == ["Maple Row"]


async def test_first_run_enter_after_a_code_asks_for_its_relay(tmp_path: Path) -> None:
    app = WelcomeApp(tmp_path / "new")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"Dora", "enter", "enter")  # no group name: on to the code
        assert app.focused is app.query_one("#token", Input)
        await pilot.press(*"7-acorn-almond-amber", "enter")
        assert app.focused is app.query_one("#relay", Input)
        await pilot.press(*"relay.example.org", "enter")  # joining: the scheme is missing
        await pilot.pause()
        assert "ws://" in str(app.query_one("#problem", Static).content)
        assert app.return_value is None


async def test_first_run_with_a_damaged_token_says_so(tmp_path: Path) -> None:
    app = WelcomeApp(tmp_path / "new")
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#name", Input).value = "Cleo"
        app.query_one("#token", Input).value = "hearth-token-1.garbage"
        await pilot.click("#join")
        await pilot.pause()
        assert str(app.query_one("#problem", Static).content)
        assert app.return_value is None  # still open, nothing half-done


async def test_first_run_with_a_relay_address_missing_its_scheme_says_so(tmp_path: Path) -> None:
    app = WelcomeApp(tmp_path / "new")
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#name", Input).value = "Cleo"
        app.query_one("#token", Input).value = "7-acorn-almond-amber"
        app.query_one("#relay", Input).value = "127.0.0.1:40547"
        await pilot.click("#join")
        await pilot.pause()
        assert "not a relay address" in str(app.query_one("#problem", Static).content)
        assert app.return_value is None


# --- snapshots at a fixed size (update with `pytest --snapshot-update` after a deliberate change)


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param([], id="overview"),
        pytest.param(["2"], id="resources"),
        pytest.param(["2", "a"], id="add-resource-form"),
        pytest.param(["3"], id="needs"),
        pytest.param(["5"], id="members"),
        pytest.param(["8"], id="neighbours-none-yet"),
        pytest.param(["question_mark"], id="help"),
    ],
)
def test_screens_look_as_they_did(ada: Node, snap_compare: Any, keys: list[str]) -> None:
    async def settled(pilot: Pilot[None]) -> None:
        """Press the keys, then wait for what they open (under load a form takes a while
        to mount and focus its first field)."""
        await pilot.press(*keys)
        for _ in range(100):
            await pilot.pause()
            screen = pilot.app.screen
            if not isinstance(screen, FormScreen):
                break
            name = screen.query_one("#field-name", Input)
            if name.has_focus:
                # Its cursor shown, not blinking: on a busy machine the picture was taken
                # more than the half second after focus when the blink hides it.
                name.cursor_blink = False
                break

    assert snap_compare(app_for(ada), run_before=settled, terminal_size=SIZE)


@pytest.mark.process
async def test_inviting_from_the_members_tab_with_a_code(ada: Node, tmp_path: Path) -> None:
    relay = start_relay(tmp_path / "relay")
    try:
        with ada.change() as ledger:
            ledger.add_relay(relay.url)
        app = app_for(ada)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("5", "i")
            code_shown = app.screen.query_one("#invite-code", Static)
            for _ in range(600):
                await pilot.pause(0.05)
                if "Opening" not in str(code_shown.content):
                    break
            code = "-".join(str(code_shown.content).lower().split())
            cleo = Cli(tmp_path / "cleo")
            joining = asyncio.create_task(
                asyncio.to_thread(cleo, "join", code, "--relay", relay.url, "--name", "Cleo")
            )
            question = app.screen.query_one("#invite-question")
            for _ in range(600):
                await pilot.pause(0.05)
                if question.display:
                    break
            status = str(app.screen.query_one("#invite-status", Static).content)
            assert "Cleo wants to join" in status
            assert "same words" in status
            assert "Let them in? (y or n)" in status
            await pilot.press("y")  # from the keyboard: Tab and Enter could land on No
            joined = await joining
            assert "You joined 'Elm Street'" in joined.out
            for _ in range(600):
                await pilot.pause(0.05)
                if "is in" in str(app.screen.query_one("#invite-status", Static).content):
                    break
            assert "Cleo is in" in str(app.screen.query_one("#invite-status", Static).content)
    finally:
        relay.kill()


def an_inviter_waiting(tmp_path: Path, relay_url: str) -> tuple[subprocess.Popen[str], str]:
    """Ada's group, and `hearth invite --yes` running for it; the code it shows."""
    ada = Cli(tmp_path / "ada")
    ada("init", "--name", "Ada")
    ada("group", "create", "Allotment", "--relay", relay_url)
    ada("sync")
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
    inviting = subprocess.Popen(
        [*hearth_command(), "--home", str(ada.home), "invite", "--yes", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert inviting.stdout is not None
    return inviting, json.loads(inviting.stdout.readline())["code"]


@pytest.mark.process
async def test_first_run_joins_with_a_code_read_out(tmp_path: Path) -> None:
    relay = start_relay(tmp_path / "relay")
    try:
        inviting, code = an_inviter_waiting(tmp_path, relay.url)
        app = WelcomeApp(tmp_path / "dee")
        async with app.run_test(size=SIZE) as pilot:
            app.query_one("#name", Input).value = "Dee"
            app.query_one("#token", Input).value = code
            app.query_one("#relay", Input).value = relay.url
            await pilot.click("#join")
            for _ in range(600):
                await pilot.pause(0.05)
                if app.return_value is not None:
                    break
        assert app.return_value is True
        inviting.wait(timeout=30)
        assert inviting.stdout is not None
        inviting.stdout.close()
        with open_node(tmp_path / "dee") as node:
            assert [g.name for g in node.groups()] == ["Allotment"]
    finally:
        relay.kill()


async def test_a_problem_is_sorted_out_from_the_problems_tab(
    ada: Node, homes: tuple[Path, Path]
) -> None:
    compost = ada.view().find("resources", "Compost")
    with open_node(homes[1], clock=FakeClock(now=NOW + 5000, step=1000)) as ben:
        for bundle in ada.feeds.all():  # Ben has Ada's ledger, then both use compost apart
            take_in(ben, bundle.envelope, source="test")
        with ben.change() as ledger:
            ledger.consume(compost, Decimal(8))
        with ada.change() as ledger:
            ledger.consume(compost, Decimal(5))
        for bundle in ben.feeds.all():
            take_in(ada, bundle.envelope, source="test")
    assert ada.view().resource(compost).quantity == Decimal(-3)
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()  # the overview counts the problems just after its first paint
        await pilot.pause()
        attention = str(app.query_one("#attention", Static).content)
        assert "1 problem to sort out" in attention
        await pilot.press("6")
        await pilot.pause()
        assert any("More 'Compost'" in c for c in cells(app, "problem-table", column=0))
        app.query_one("#problem-table", DataTable).focus()
        await pilot.press("o")
        await pilot.pause()
        await fill_form(pilot, quantity="2")
        assert ada.view().resource(compost).quantity == Decimal(2)
        assert cells(app, "problem-table", column=0) == []


async def test_a_field_set_twice_while_apart_is_settled_by_picking_a_value(
    ada: Node, homes: tuple[Path, Path]
) -> None:
    from hearth.ledger.conflicts import find_conflicts

    ladder = ada.view().find("resources", "Ladder")
    with open_node(homes[1], clock=FakeClock(now=NOW + 5000, step=1000)) as ben:
        for bundle in ada.feeds.all():
            take_in(ben, bundle.envelope, source="test")
        with ben.change() as ledger:
            ledger.edit_resource(ladder, location="Church hall")
        with ada.change() as ledger:
            ledger.edit_resource(ladder, location="Ada's garden")
        for bundle in ben.feeds.all():
            take_in(ada, bundle.envelope, source="test")
    assert [c.kind for c in find_conflicts(ada.view())] == ["field-clash"]
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await pilot.pause()
        app.query_one("#problem-table", DataTable).focus()
        await pilot.press("o")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FormScreen)  # not sent to the Promises tab with a command
        picks = form.query_one("#field-value", Select)
        assert {str(label) for label, _ in picks._options[1:]} == {
            "Church hall (set by Ben)",
            "Ada's garden (set by Ada)",
        }
        await fill_form(pilot, value="Church hall")
    assert ada.view().resource(ladder).location == "Church hall"
    assert find_conflicts(ada.view()) == []


async def test_members_tab_promotes_shows_devices_and_removes_after_asking(ada: Node) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        table = app.query_one("#member-table", DataTable)
        table.focus()
        ben = next(m.id for m in ada.view().members() if m.name == "Ben")
        table.move_cursor(row=table.get_row_index(ben))
        await pilot.press("enter")  # who Ben is, and his devices
        await pilot.pause()
        assert "phone" in str(app.screen.query_one("#detail", Static).render())
        await pilot.press("escape")
        await pilot.press("m")  # make him an admin
        await pilot.pause()
        assert ada.view().member(ben).role.value == "admin"
        assert "admin" in cells(app, "member-table")
        await pilot.press("m")  # and not again
        await pilot.pause()
        assert ada.view().member(ben).role.value == "member"
        await pilot.press("x")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ConfirmScreen)
        assert "nothing they write counts" in screen.explanation
        await pilot.press("escape")  # no
        await pilot.pause()
        assert ada.view().member(ben).status == "active"
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert ada.view().member(ben).status == "removed"
        assert "Ben" not in cells(app, "member-table", 0)
        assert len(ada.feeds.epochs(ada.current_group().id)) == 2  # a new key without him
        table.move_cursor(row=table.get_row_index(ada.identity.member_id))
        await pilot.press("x")  # herself: the refusal names the app's way, not a command
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        said = [n.message for n in app._notifications]
        assert "To take yourself out of the group, use “Leave the group” (ctrl+p)." in said


async def test_a_removed_member_is_told_so(homes: tuple[Path, Path], ada: Node) -> None:
    from hearth.group import member_changes

    member_changes.remove_member(ada, ada.current_group().id, "Ben")
    with open_node(homes[1], clock=FakeClock(now=NOW + 120_000)) as ben:
        for bundle in ada.feeds.all():
            take_in(ben, bundle.envelope, source="test")
        app = app_for(ben)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            shown = str(app.query_one("#attention", Static).render())
            assert "no longer in this group" in shown


async def test_an_admin_is_told_to_remove_a_device_caught_signing_twice(
    homes: tuple[Path, Path], ada: Node
) -> None:
    gid = ada.current_group().id
    with open_node(homes[1], clock=FakeClock(now=NOW + 120_000)) as ben:
        with ben.change() as ledger:
            ledger.add_resource("Rake")
        mine = ben.identity.device_key.public
        first = max((b for b in ben.feeds.all(gid) if b.author == mine), key=lambda b: b.seq)
        take_in(ada, first.envelope, source="test")
        with ben.store.write():  # a copied device writes another bundle at that seq
            ben.store.run("DELETE FROM bundles WHERE id = ?", (first.id,))
            other = ben.feeds.seal_local(
                gid, [("live", c, []) for c in ben.ledger(gid).doc.changes_since([])[-1:]]
            )
        take_in(ada, other.encode(), source="test")
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        shown = str(app.query_one("#attention", Static).render())
        assert "For you as an admin: a device of Ben signed two versions of one change" in shown
        await pilot.press("6")  # the Problems tab says what to do
        await pilot.pause()
        problems = app.query_one("#problem-table", DataTable)
        rows = [[str(c) for c in problems.get_row_at(i)] for i in range(problems.row_count)]
        assert any(
            what.startswith("A device of Ben signed two versions")
            and what.endswith("1 change it wrote from then on was cut")  # what was cut (#24)
            and do == "remove it: “Remove a device” (ctrl+p)"  # the app's way, not the CLI's
            for what, do in rows
        ), rows


async def test_the_palette_finds_the_row_actions_of_the_tab(ada: Node) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pilot.pause()
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Lend", "Return", "Give", "Remove/Cancel", "Details"} <= titles
        assert "Admin or not" not in titles  # a Members key, not this tab's
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"lend")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert isinstance(app.screen, FormScreen)
        assert "Lend" in app.screen.title_text


def _pass_records(source: Node, target: Node) -> None:
    """Neighbourhood records from one node to another, as relays would carry them."""
    for (envelope,) in source.store.query("SELECT envelope FROM neighbourhood_records"):
        take_in(target, bytes(envelope), source="test")


async def test_a_neighbour_groups_name_is_shown_as_written_never_read_as_markup(
    ada: Node,
) -> None:
    """Another group names the groups it lets in, and a record carries any text: one named
    with square brackets (markup to the app's widgets) is shown as written, and one with an
    unclosed tag does not stop the neighbours tab."""
    from hearth.crypto import SigningKey
    from hearth.neighbourhood import participation

    hood = participation.create(ada, ada.current_group().id, "Eastside")
    for name in ("Oaks [/]", "Kids [after school]", "[bold red]Police[/]"):
        participation.admit(ada, hood, SigningKey.generate().public, name)
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8")
        await pilot.pause()
        summary = app.query_one("#neighbour-summary", Static).render()
        assert "Kids [after school], Oaks [/], [bold red]Police[/]" in str(summary)


async def test_the_neighbours_tab_asks_for_offers_and_answers_requests(
    ada: Node, tmp_path: Path
) -> None:
    from hearth.crypto import SigningKey
    from hearth.neighbourhood import participation

    gid = ada.current_group().id
    with ada.change() as ledger:
        ledger.edit_resource(ledger.view.find("resources", "Compost"), shareable=True)
    hood = participation.create(ada, gid, "Eastside")
    participation.add_offer(ada, gid, "Compost", Decimal(5))
    create_identity(tmp_path / "cy", name="Cy", device_name="tablet")
    with open_node(tmp_path / "cy", clock=FakeClock(now=NOW, step=1000)) as cy:
        cy.create_group("Riverside")
        with cy.change() as ledger:
            ledger.add_resource("Leeks", quantity=Decimal(9), shareable=True)
        key = SigningKey.generate()
        participation.admit(ada, hood, key.public, "Riverside")
        participation.join(cy, cy.current_group().id, participation.encode_token(hood), key)
        participation.add_offer(cy, cy.current_group().id, "Leeks", Decimal(3), note="muddy")
        _pass_records(ada, cy)
        _pass_records(cy, ada)

        app = app_for(ada)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("8")
            await pilot.pause()
            summary = str(app.query_one("#neighbour-summary", Static).content)
            assert "Eastside: Elm Street, Riverside" in summary
            assert cells(app, "offer-table", 0) == ["Elm Street (us)", "Riverside"]
            assert cells(app, "offer-table", 4) == ["", "muddy"]
            # Ask Riverside for two of its leeks.
            table = app.query_one("#offer-table", DataTable)
            table.focus()
            table.move_cursor(row=1)
            await pilot.press("t")
            await pilot.pause()
            await fill_form(pilot, quantity="2")
            [(_, _, mine, way)] = participation.requests(ada, gid)
            assert (mine.quantity, way, mine.status) == (Decimal(2), "outgoing", "pending")
            # Riverside asks for compost: it shows up while the app is open; Ada agrees.
            offer = next(iter(participation.state(ada, hood).open_offers(NOW)))
            participation.request(cy, cy.current_group().id, offer.id, Decimal(4))
            _pass_records(cy, ada)
            for _ in range(50):
                await pilot.pause(0.05)
                if "they ask" in cells(app, "request-table", 0):
                    break
            await pilot.press("1")
            await pilot.pause()
            attention = str(app.query_one("#attention", Static).content)
            assert "1 request from neighbour groups waits for an answer" in attention
            await pilot.press("8")
            await pilot.pause()
            ways = cells(app, "request-table", 0)
            requests = app.query_one("#request-table", DataTable)
            requests.focus()
            requests.move_cursor(row=ways.index("they ask"))
            await pilot.press("y")
            await pilot.pause()
            assert "agreed, to hand over" in cells(app, "request-table", 4)
            [promise] = ada.view().commitments()
            assert (promise.what, promise.status) == (
                "Compost to Riverside",
                CommitmentStatus.ACCEPTED,
            )
            # Our own offer can be taken back, after saying yes.
            table.focus()
            table.move_cursor(row=0)
            await pilot.press("x")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await pilot.pause()
            assert cells(app, "offer-table", 0) == ["Riverside"]


async def test_a_change_sharing_brings_in_is_drawn_without_waiting_for_a_poll(
    ada: Node, homes: tuple[Path, Path]
) -> None:
    app = HearthApp(ada, share=False, poll_s=3600)  # no poll comes round during the test
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pilot.pause()
        with open_node(homes[1]) as ben, ben.change() as ledger:
            ledger.add_resource("Brought by sharing")
        with open_node(homes[1]) as ben:
            mine = ben.identity.device_key.public
            envelope = [b for b in ben.feeds.all() if b.author == mine][-1].envelope
        assert take_in(ada, envelope, source="test").verdict.value == "applied"
        for _ in range(40):
            await pilot.pause(0.05)
            if "Brought by sharing" in cells(app, "resource-table"):
                break
        assert "Brought by sharing" in cells(app, "resource-table")


async def test_a_few_rows_coming_and_going_change_the_table_in_place() -> None:
    class TableApp(App[None]):
        def compose(self) -> ComposeResult:
            yield DataTable()

    def rows(numbers: list[int], renamed: dict[int, str]) -> list[tuple[str, list[str]]]:
        return [(f"k{n:03d}", [f"k{n:03d}", renamed.get(n, f"Thing {n}")]) for n in numbers]

    app = TableApp()
    async with app.run_test():
        table: DataTable[Any] = app.query_one(DataTable)
        table.add_columns("id", "name")
        fill(table, rows(list(range(0, 100, 2)), {}))
        table.move_cursor(row=10)
        assert selected_key(table) == "k020"
        untouched = table.get_row("k040")[1]
        # From someone else: one entry added in the middle, one gone, one renamed.
        after = sorted([*range(0, 100, 2), 41])
        after.remove(10)
        fill(table, rows(after, {60: "Renamed"}))
        assert [row.key.value for row in table.ordered_rows] == [f"k{n:03d}" for n in after]
        assert [str(table.get_row_at(i)[0]) for i in range(3)] == ["k000", "k002", "k004"]
        assert str(table.get_row_at(20)[0]) == "k041"  # where it sorts, not at the end
        assert str(table.get_row("k060")[1]) == "Renamed"
        assert table.get_row("k040")[1] is untouched  # not laid out again
        assert selected_key(table) == "k020"  # the cursor stays on its entry
        # Many changes at once: drawn afresh, same result.
        fill(table, rows(list(range(1, 100, 2)), {}))
        assert [row.key.value for row in table.ordered_rows] == [
            f"k{n:03d}" for n in range(1, 100, 2)
        ]


async def test_the_ledger_is_loaded_in_the_first_idle_second_not_while_keys_come(
    ada: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The idle time is stretched so that nothing here depends on how busy the machine is:
    # the warm-up is called by hand, as its timer would, with the last key long or just ago.
    monkeypatch.setattr(tui.app, "IDLE_BEFORE_WARM_UP_S", 60.0)
    group = ada.current_group().id
    app = app_for(ada)

    def loaded() -> bool:
        held = ada._ledgers.get(group)  # what the node holds in memory
        return held is not None and held.ledger is not None

    async with app.run_test(size=SIZE) as pilot:
        before = time.monotonic()
        await pilot.press("2")
        assert app._last_input >= before  # a key counts as not idle
        app._warm_up_when_idle()
        assert not loaded()  # keys came within the idle time: later
        app._last_input = time.monotonic() - 61
        app._warm_up_when_idle()
        assert loaded()


async def test_edit_add_to_use_up_and_give_then_see_it_in_the_history(ada: Node) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        select_row(app, "resource-table", "Compost")
        await pilot.press("e")
        await pilot.pause()
        # Each pick shows what it holds now, not "Select" as if nothing were chosen.
        shown = {
            key: str(app.screen.query_one(f"#field-{key} SelectCurrent Static").render())
            for key in ("kind", "keeper", "shareable")
        }
        assert shown == {
            "kind": "other",
            "keeper": "Ada",
            "shareable": "no: only this group sees it",
        }
        await fill_form(pilot, name="Garden compost", location="By the gate")
        compost = ada.view().resource(ada.view().find("resources", "Garden compost"))
        assert compost.location == "By the gate"
        assert not compost.shareable  # what the form showed and nobody changed, unchanged
        await pilot.press("e")  # as `resource edit --shareable --kind food --keeper Ben`
        await pilot.pause()
        await fill_form(pilot, shareable="yes", kind="food", keeper=ben_id(ada))
        compost = ada.view().resource(compost.id)
        assert (compost.shareable, compost.kind, compost.keeper) == (True, Kind.FOOD, ben_id(ada))
        await pilot.press("e")
        await pilot.pause()
        await fill_form(pilot, keeper=ada.identity.member_id)
        for key, quantity in (("p", "5"), ("c", "3")):  # "More", then "Use up"
            await pilot.press(key)
            await pilot.pause()
            await fill_form(pilot, quantity=quantity)
        assert ada.view().resource(compost.id).quantity == Decimal(12)
        await pilot.press("g")
        await pilot.pause()
        await fill_form(pilot, quantity="2", to=ben_id(ada))
        await pilot.press("7")
        await pilot.pause()
        history = app.query_one("#history-table", DataTable)
        newest = [" ".join(str(c) for c in history.get_row_at(i)[1:]) for i in range(6)]
    assert newest[:4] == [
        "Ada gave 2 bags of Garden compost to Ben",
        "Ada used 3 bags of Garden compost",
        "Ada added 5 bags of Garden compost",
        "Ada edited Garden compost (keeper → 'Ada')",  # only what changed
    ]
    assert newest[5] == (
        "Ada edited Garden compost (location → 'By the gate', name → 'Garden compost')"
    )


async def test_promises_declined_cancelled_after_asking_and_shown_by_filter(
    ada: Node, homes: tuple[Path, Path]
) -> None:
    from hearth.values import parse_date

    with open_node(homes[1], clock=FakeClock(now=NOW + 5000, step=1000)) as ben:
        for bundle in ada.feeds.all():  # Ben proposes one to Ada, for her to answer
            take_in(ben, bundle.envelope, source="test")
        with ben.change() as ledger:
            ledger.add_commitment(
                "Bring the compost",
                giver=ben.identity.member_id,
                receiver=ada.identity.member_id,
                due=parse_date("2027-01-01", now_ms=NOW),
            )
        for bundle in ben.feeds.all():
            take_in(ada, bundle.envelope, source="test")
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4", "a")
        await pilot.pause()
        await fill_form(
            pilot,
            what="Mend the fence",
            due="+7d",
            giver=ada.identity.member_id,
            receiver=ben_id(ada),
        )
        table = app.query_one("#promise-table", DataTable)
        table.focus()
        both = ["Bring the compost", "Mend the fence"]
        for shown in (both, ["Bring the compost"], both):  # mine, overdue, all
            await pilot.press("f")
            await pilot.pause()
            assert sorted(cells(app, "promise-table")) == shown
        by_what = {c.what: c.id for c in ada.view().commitments()}
        select_row(app, "promise-table", "Bring the compost")
        await pilot.press("n")
        await pilot.pause()
        assert ada.view().commitment(by_what["Bring the compost"]).status is (
            CommitmentStatus.DECLINED
        )
        select_row(app, "promise-table", "Mend the fence")
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)  # it asks first
        await pilot.press("y")
        await pilot.pause()
        assert ada.view().commitment(by_what["Mend the fence"]).status is (
            CommitmentStatus.CANCELLED
        )


async def test_no_screen_speaks_of_epochs_bundles_or_crdts(ada: Node) -> None:
    app = app_for(ada)
    jargon = ("epoch", "bundle", "crdt", "automerge", "relay key", "topic")
    async with app.run_test(size=SIZE) as pilot:
        seen = {}
        for key in ("1", "2", "3", "4", "5", "6", "7", "8", "question_mark"):
            await pilot.press(key)
            await pilot.pause()
            seen[type(app.screen).__name__ + key] = app.export_screenshot().casefold()
        assert "HelpScreenquestion_mark" in seen  # the help was among them
        for name, screen in seen.items():
            assert not [word for word in jargon if word in screen], name


async def test_resources_sort_by_kind_and_holder(ada: Node) -> None:
    with ada.change() as ledger:
        ledger.add_resource("Apple press")
        ledger.add_resource("Bike repair", kind=Kind.SKILL)
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pilot.pause()
        assert cells(app, "resource-table") == ["Apple press", "Bike repair", "Compost", "Ladder"]
        app.query_one("#resource-table", DataTable).focus()
        await pilot.press("s")
        await pilot.pause()
        kinds = cells(app, "resource-table", column=2)
        assert kinds == sorted(kinds)
        assert cells(app, "resource-table")[-1] == "Bike repair"  # skill after the tools
        assert "sorted by: kind" in str(app.query_one("#resource-filters", Static).content)


async def test_enter_or_escape_leaves_the_search_with_the_rows_it_found(ada: Node) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        for leave in ("escape", "enter"):
            await pilot.press("2", "slash", "L", "a", "d", leave)
            await pilot.pause()
            assert cells(app, "resource-table") == ["Ladder"]
            assert app.focused is app.query_one("#resource-table", DataTable)
            assert app.query_one("#resource-search", Input).value == "Lad"
            await pilot.press("3")  # a key for the app again, not more search text
            await pilot.pause()
            assert app.query_one("#tabs", TabbedContent).active == "needs"
            app.query_one("#resource-search", Input).value = ""


async def test_a_relay_is_added_from_the_app_and_a_bad_address_is_shown_in_the_form(
    ada: Node,
) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.action_add_relay()
        await pilot.pause()
        form = app.screen
        await fill_form(pilot, url="127.0.0.1:8765")
        assert app.screen is form
        assert "not a relay address" in str(form.query_one("#form-error", Static).content)
        await fill_form(pilot, url="ws://127.0.0.1:8765")
        assert app.screen is not form, str(form.query_one("#form-error", Static).content)
    assert ada.view().relays() == ["ws://127.0.0.1:8765"]


async def test_the_overviews_due_lists_loans_and_needs_too(ada: Node) -> None:
    day = 86_400_000
    with ada.change() as ledger:
        ladder = ledger.view.find("resources", "Ladder")
        ledger.lend(ladder, to="Ben", until=NOW + 3 * day)
        ledger.add_need("Seed trays", by=NOW + 2 * day)
        ledger.add_need("Twine", by=NOW - day)
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        due = str(app.query_one("#due", Static).content)
    assert "OVERDUE  Twine needed by Ada" in due
    assert "Seed trays needed by Ada" in due
    assert "Ladder back from Ben" in due
    assert due.index("Seed trays") < due.index("Ladder")  # soonest first


def test_a_relay_that_failed_since_it_last_answered_is_not_up_to_date(ada: Node) -> None:
    from tui.state import sync_state

    now = NOW + 120_000
    with ada.change() as ledger:
        ledger.add_relay("ws://127.0.0.1:9")
    ada.store.run(
        "INSERT INTO sync_log(url, last_ok, last_attempt, last_error) VALUES (?, ?, ?, ?)",
        ("ws://127.0.0.1:9", now - 60_000, now - 60_000, None),
    )
    from hearth.values import format_time

    shown = format_time(now - 60_000)
    assert sync_state(ada, ada.current_group().id, now).words == (
        f"Up to date as of {shown[11:]}"  # today: the time alone, not today's date too
    )
    ada.store.run(
        "UPDATE sync_log SET last_attempt = ?, last_error = ? WHERE url = ?",
        (now - 5_000, "nothing answers at that address", "ws://127.0.0.1:9"),
    )
    state = sync_state(ada, ada.current_group().id, now)
    assert state.words.startswith("Offline (last shared")
    assert not state.online


async def test_closing_an_invite_leaves_the_app_sharing(ada: Node) -> None:
    with ada.change() as ledger:
        ledger.add_relay("ws://127.0.0.1:9")  # nothing there: the invite ends at once
    app = HearthApp(ada, share=True, poll_s=0.1)
    async with app.run_test(size=SIZE) as pilot:

        def sharing() -> list[str]:
            return [w.state.name for w in app.workers if w.group == "sharing"]

        assert sharing() == ["RUNNING"]
        await pilot.press("5", "i")
        await pilot.pause()
        assert "Read this code to the new member, with the relay's address" in str(
            app.screen.query_one("#invite-how", Static).content
        )
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ModalScreen)
        assert sharing() == ["RUNNING"]  # others' changes still come in
        await app.action_quit()


async def test_a_promise_to_me_of_a_resource_is_recorded_from_the_app(ada: Node) -> None:
    app = app_for(ada)
    compost = ada.view().find("resources", "Compost")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4", "a")
        await pilot.pause()
        me = ada.identity.member_id
        await fill_form(pilot, what="Compost", giver=me, receiver=me, quantity="4")
        assert "two different members" in str(app.screen.query_one("#form-error", Static).content)
        await fill_form(pilot, giver=ben_id(ada), resource=compost)
    (promise,) = ada.view().commitments()
    assert (promise.giver, promise.receiver) == (ben_id(ada), ada.identity.member_id)
    assert promise.resource == compost
    assert promise.quantity == Decimal(4)


async def test_relays_removed_and_a_neighbourhood_started_from_the_app(ada: Node) -> None:
    with ada.change() as ledger:
        ledger.add_relay("ws://127.0.0.1:9")
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.action_remove_relay()
        await pilot.pause()
        await fill_form(pilot, url="ws://127.0.0.1:9")
        assert isinstance(app.screen, ConfirmScreen)  # the only one: asked first
        await pilot.press("escape")
        await pilot.pause()
        assert ada.view().relays() == ["ws://127.0.0.1:9"]
        app.action_remove_relay()
        await pilot.pause()
        await fill_form(pilot, url="ws://127.0.0.1:9")
        await pilot.press("y")
        await pilot.pause()
        assert ada.view().relays() == []
        app.action_start_neighbourhood()
        await pilot.pause()
        await fill_form(pilot, name="Eastside")
        await pilot.press("8")
        await pilot.pause()
        assert "Eastside" in str(app.query_one("#neighbour-summary", Static).content)


def a_neighbourhood_inviting(tmp_path: Path, relay_url: str) -> tuple[subprocess.Popen[str], str]:
    """Cleo's group Riverside starts Eastside and runs `neighbourhood invite --yes` for it;
    the code it shows."""
    from tests.test_readme_tour import InProcess

    cleo = InProcess(tmp_path / "cleo")
    cleo("init", "--name", "Cleo")
    cleo("group", "create", "Riverside", "--relay", relay_url)
    cleo("neighbourhood", "create", "Eastside")
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
    inviting = subprocess.Popen(
        [*hearth_command(), "--home", str(cleo.home), "neighbourhood", "invite", "--yes", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert inviting.stdout is not None
    return inviting, json.loads(inviting.stdout.readline())["code"]


@pytest.mark.process
async def test_a_neighbourhood_joined_and_another_group_invited_from_the_app(
    ada: Node, tmp_path: Path
) -> None:
    from tests.test_readme_tour import InProcess
    from tui.screens.invite import InviteScreen
    from tui.screens.neighbourhood_join import NeighbourhoodJoinScreen

    relay = start_relay(tmp_path / "relay")
    try:
        with ada.change() as ledger:
            ledger.add_relay(relay.url)
        inviting, code = a_neighbourhood_inviting(tmp_path, relay.url)
        dora = InProcess(tmp_path / "dora")
        dora("init", "--name", "Dora")
        dora("group", "create", "Maple Row", "--relay", relay.url)
        app = app_for(ada)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            app.action_join_neighbourhood()
            await pilot.pause()
            form = app.screen
            await fill_form(pilot, code="7-not-a-code")
            assert app.screen is form  # a misheard code is said in the form
            await fill_form(pilot, code=code)  # the relay: the group's own
            assert isinstance(app.screen, NeighbourhoodJoinScreen)
            status = app.screen.query_one("#join-status", Static)
            for _ in range(600):
                await pilot.pause(0.05)
                if "joined" in str(status.content) or "Not" in str(status.content):
                    break
            assert "'Elm Street' joined the neighbourhood 'Eastside'" in str(status.content)
            inviting.communicate(timeout=60)
            await pilot.press("escape")
            await pilot.pause()

            app.action_invite_group()
            await pilot.pause()
            assert isinstance(app.screen, InviteScreen)
            code_shown = app.screen.query_one("#invite-code", Static)
            for _ in range(600):
                await pilot.pause(0.05)
                if "Opening" not in str(code_shown.content):
                    break
            code = "-".join(str(code_shown.content).lower().split())
            dora = Cli(tmp_path / "dora")
            joining = asyncio.create_task(
                asyncio.to_thread(dora, "neighbourhood", "join", code, "--relay", relay.url)
            )
            invite_status = app.screen.query_one("#invite-status", Static)
            for _ in range(600):
                await pilot.pause(0.05)
                if "Let it in?" in str(invite_status.content):
                    break
            assert "The group 'Maple Row' wants to join Eastside" in str(invite_status.content)
            await pilot.press("y")
            joined = await joining
            assert "'Maple Row' joined the neighbourhood 'Eastside'" in joined.out
    finally:
        relay.kill()


async def test_a_device_removed_and_leaving_asked_about_from_the_app(ada: Node) -> None:
    ben = ada.view().member(ben_id(ada))
    (phone,) = ben.devices
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.action_remove_device()
        await pilot.pause()
        await fill_form(pilot, device=phone)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        assert ada.view().member(ben.id).devices == ()
        app.action_leave()
        await pilot.pause()
        await pilot.press("y")  # the only admin: refused, with what to do
        await pilot.pause()
        assert any("promote someone" in n.message for n in app._notifications)
    assert ada.view().member(ada.identity.member_id).status == "active"


async def test_another_group_started_and_switched_to_from_the_app(ada: Node) -> None:
    elm = ada.current_group().id
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.action_new_group()
        await pilot.pause()
        await fill_form(pilot, name="Allotment")
        assert app.sub_title.startswith("Allotment · ")
        await pilot.press("2")
        await pilot.pause()
        assert cells(app, "resource-table") == []
        app.action_switch_group()
        await pilot.pause()
        await fill_form(pilot, group=elm)
        assert app.sub_title.startswith("Elm Street · ")
        assert "Ladder" in cells(app, "resource-table")
    assert ada.current_group().id == elm


async def test_the_ledger_exported_from_the_app_and_a_missing_folder_said_in_the_form(
    ada: Node, tmp_path: Path
) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.action_export()
        await pilot.pause()
        form = app.screen
        gone = tmp_path / "usb-stick" / "ledger.csv"
        await fill_form(pilot, format="csv", file=str(gone))
        assert app.screen is form
        assert "There is no folder" in str(form.query_one("#form-error", Static).content)
        await fill_form(pilot, file=str(tmp_path / "ledger.csv"))
        assert app.screen is not form
    assert "Ladder" in (tmp_path / "ledger.csv").read_text()


async def wait_for_screen(pilot: Pilot[None], kind: type[ModalScreen[Any]]) -> ModalScreen[Any]:
    """The screen of ``kind`` once the app has put it up (a network flow takes a moment)."""
    for _ in range(400):
        await pilot.pause(0.05)
        if isinstance(pilot.app.screen, kind):
            return pilot.app.screen
    raise AssertionError(f"no {kind.__name__} came up")


@pytest.mark.process
async def test_sync_now_and_the_check_of_this_device_from_the_app(
    ada: Node, tmp_path: Path
) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("u")  # nothing to sync with: said, not a silent nothing
        await pilot.pause()
        assert any("no relay" in n.message for n in app._notifications)
        app.action_check()  # what to do, as the app does it (`hearth relay add` in the CLI)
        shown = await wait_for_screen(pilot, tui.screens.detail.DetailScreen)
        text = str(shown.query_one("#detail", Static).content)
        assert "Add one: “Add a relay” (ctrl+p)." in text
        assert "`" not in text
    relay = start_relay(tmp_path / "relay")
    try:
        with ada.change() as ledger:
            ledger.add_relay(relay.url)
        app = app_for(ada)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("u")
            shown = await wait_for_screen(pilot, tui.screens.detail.DetailScreen)
            text = str(shown.query_one("#detail", Static).content)
            assert f"{relay.url}: sent " in text
            assert "not reached" not in text
            assert " changes and received 0." in text
            await pilot.press("escape")
            app.action_check()
            shown = await wait_for_screen(pilot, tui.screens.detail.DetailScreen)
            text = str(shown.query_one("#detail", Static).content)
            # (the app's clock is a fixed one in 2027: the relay's differs, and that is said)
            reachable = f"ok   Elm Street: {relay.url}: reachable, and it takes the group's"
            assert reachable in text
            await pilot.press("escape")
            with ada.change() as ledger:
                ledger.add_relay("ws://127.0.0.1:9")  # nothing listens there
            app.action_check()
            shown = await wait_for_screen(pilot, tui.screens.detail.DetailScreen)
            text = str(shown.query_one("#detail", Static).content)
            assert "Something needs looking at" in text
            assert "BAD  Elm Street: ws://127.0.0.1:9: not reachable" in text
    finally:
        relay.kill()


@pytest.mark.process
async def test_a_second_device_added_by_a_code_from_the_app(ada: Node, tmp_path: Path) -> None:
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        app.action_add_device()  # no relay to meet through: said, not a silent nothing
        await pilot.pause()
        assert any("lists none" in n.message for n in app._notifications)
    relay = start_relay(tmp_path / "relay")
    try:
        with ada.change() as ledger:
            ledger.add_relay(relay.url)
        app = app_for(ada)
        async with app.run_test(size=SIZE) as pilot:
            app.action_add_device()
            await wait_for_screen(pilot, tui.screens.invite.InviteScreen)
            assert "Add a device" in app.export_screenshot().replace("&#160;", " ")
            code_shown = app.screen.query_one("#invite-code", Static)
            for _ in range(600):
                await pilot.pause(0.05)
                if "Opening" not in str(code_shown.content):
                    break
            code = "-".join(str(code_shown.content).lower().split())
            phone = Cli(tmp_path / "phone")
            joining = asyncio.create_task(
                asyncio.to_thread(phone, "join", code, "--relay", relay.url, "--name", "phone")
            )
            status = app.screen.query_one("#invite-status", Static)
            for _ in range(600):
                await pilot.pause(0.05)
                if "wants to write as you" in str(status.content):
                    break
            assert "The device 'phone' wants to write as you" in str(status.content)
            await pilot.press("y")
            joined = await joining
            assert "You joined 'Elm Street'" in joined.out
            for _ in range(600):
                await pilot.pause(0.05)
                if "one of your devices" in str(status.content):
                    break
            assert "'phone' is now one of your devices" in str(status.content)
        # The new device writes as Ada, not as a new member.
        assert "Ada" in phone("whoami").out
    finally:
        relay.kill()


async def test_peers_added_listed_and_removed_and_the_relay_allow_list_key_from_the_app(
    ada: Node,
) -> None:
    from hearth.group.rotation import admission_key
    from hearth.net.dialled_peers import list_peers

    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.action_remove_peer()  # none yet: said
        await pilot.pause()
        assert any("no peers" in n.message for n in app._notifications)
        app.action_add_peer()
        await pilot.pause()
        form = app.screen
        await fill_form(pilot, url="")
        assert app.screen is form  # nothing guessed: the address is asked for
        assert "Give the peer's address" in str(form.query_one("#form-error", Static).content)
        await fill_form(pilot, url="192.168.1.20:8766")
        assert app.screen is form
        error = str(form.query_one("#form-error", Static).content)
        assert "192.168.1.20:8766" in error
        assert form.query_one("#field-url", Input).value == "192.168.1.20:8766"  # kept
        await fill_form(pilot, url="ws://127.0.0.1:8766")
        assert app.screen is not form
        assert list_peers(ada.store) == ["ws://127.0.0.1:8766"]
        app.action_list_peers()
        await pilot.pause()
        assert "ws://127.0.0.1:8766" in str(app.screen.query_one("#detail", Static).content)
        await pilot.press("escape")
        app.action_remove_peer()
        await pilot.pause()
        app.screen.query_one("#field-url", Select).value = "ws://127.0.0.1:8766"
        await pilot.click("#ok")
        await pilot.pause()
        assert list_peers(ada.store) == []
        app.action_admission_key()
        await pilot.pause()
        shown = str(app.screen.query_one("#detail", Static).content)
        assert admission_key(ada, ada.current_group().id) in shown
        assert "hearth-relay allow KEY" in shown


@pytest.mark.process
async def test_a_quiet_live_link_is_still_up_to_date_not_offline(
    ada: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Used in tmux: three minutes after the last change, both apps' titles said "Offline
    (last shared 00:49)" while their links were up (a change from the other came in live
    and the title still said Offline). A settled live link now says it is still up."""
    import hearth.net.sync_client as sync_client
    from hearth.net.sync_client import RelayReport, _run
    from tui.state import RECENT_MS, sync_state

    monkeypatch.setattr(sync_client, "STILL_UP_S", 0.2, raising=False)
    monkeypatch.setattr(sync_client, "_KEEPALIVE_S", 0.1)
    relay = start_relay(tmp_path / "relay")
    try:
        with ada.change() as ledger:
            ledger.add_relay(relay.url)
        gid = ada.current_group().id
        report = RelayReport(url=relay.url)
        live = asyncio.create_task(_run(ada, relay.url, [gid], report, live=True))
        deadline = time.monotonic() + 30
        while not sync_state(ada, gid, ada.clock.now_ms()).online:
            assert time.monotonic() < deadline
            assert not live.done()
            await asyncio.sleep(0.05)
        assert isinstance(ada.clock, FakeClock)
        ada.clock.advance(RECENT_MS + 60_000)  # a quiet while: nothing comes or goes
        await asyncio.sleep(1.0)
        state = sync_state(ada, gid, ada.clock.now_ms())
        assert state.words.startswith("Up to date"), state.words
        live.cancel()
    finally:
        relay.kill()


async def test_changes_carried_on_a_file_both_ways_from_the_app(
    homes: tuple[Path, Path], ada: Node, tmp_path: Path
) -> None:
    from hearth.net.carrying import read_changes, write_changes

    stick = tmp_path / "stick"
    stick.mkdir()
    with open_node(homes[1], clock=FakeClock(now=NOW + 120_000, step=1000)) as ben:
        with ben.change() as ledger:
            ledger.add_resource("Wheelbarrow")
        app = app_for(ada)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            app.action_write_have()
            await pilot.pause()
            await fill_form(pilot, file=str(stick / "ada-has"))
            assert not isinstance(app.screen, FormScreen)
            # Ben writes what Ada lacks; the app reads it in.
            assert (
                write_changes(
                    ben,
                    ben.current_group().id,
                    str(stick / "for-ada"),
                    since=str(stick / "ada-has"),
                )
                == 1
            )
            app.action_read_changes()
            await pilot.pause()
            form = app.screen
            await fill_form(pilot, file=str(stick / "nothing-here"))
            assert app.screen is form  # the reason in the form, what was typed kept
            assert "Cannot read" in str(form.query_one("#form-error", Static).content)
            (stick / "junk").write_bytes(b"not changes")
            await fill_form(pilot, file=str(stick / "junk"))
            assert str(form.query_one("#form-error", Static).content).endswith(
                "is not a file of changes written by Hearth (“Carry changes: write to a file” "
                "(ctrl+p))."
            )
            await fill_form(pilot, file=str(stick / "for-ada"))
            assert app.screen is not form
            assert "Wheelbarrow" in names(ada)
            assert any("Took in 1 change" in n.message for n in app._notifications)
            # And back: every change, to a stick that is not plugged in, then to one that is.
            with ada.change() as ledger:
                ledger.add_resource("Trestle table")
            app.action_write_changes()
            await pilot.pause()
            form = app.screen
            await fill_form(pilot, which="missing", file=str(stick / "for-ben"))
            assert app.screen is form  # nothing guessed: which changes, and from what
            assert "the file the other device wrote" in str(
                form.query_one("#form-error", Static).content
            )
            await fill_form(pilot, which="all", file=str(tmp_path / "unplugged" / "for-ben"))
            assert app.screen is form
            assert "no folder" in str(form.query_one("#form-error", Static).content)
            await fill_form(pilot, which="all", file=str(stick / "for-ben"))
            assert app.screen is not form
        assert read_changes(ben, str(stick / "for-ben"))
        assert "Trestle table" in names(ben)


async def test_a_sync_tried_by_the_apps_sharing_is_drawn_without_a_poll(
    ada: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sync worker's attempt comes as a message: no poll and no clock redraw comes
    # round during the test.
    monkeypatch.setattr(tui.app, "CLOCK_CHECK_S", 3600.0)
    with ada.change() as ledger:
        ledger.add_relay("ws://127.0.0.1:9")  # nothing there: the first try fails at once
    app = HearthApp(ada, share=True, poll_s=3600)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if "Offline" in app.sub_title:
                break
        assert "Offline" in app.sub_title
        await app.action_quit()


def test_the_app_runs_no_sql_of_its_own() -> None:
    # What the app shows comes through named functions of hearth/, and changes come as
    # messages (tui/watch.py), not from queries written here.
    root = Path(tui.app.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"store\.(query|run|run_many)\(|import sqlite3", text), path
        assert not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE) ", text), path


async def test_a_file_is_read_in_a_worker_thread_while_the_screen_stays_live(
    homes: tuple[Path, Path], ada: Node, tmp_path: Path
) -> None:
    from hearth.net.carrying import write_changes

    with open_node(homes[1], clock=FakeClock(now=NOW + 120_000, step=1000)) as ben:
        with ben.change() as ledger:
            ledger.add_resource("Wheelbarrow")
        write_changes(ben, ben.current_group().id, str(tmp_path / "for-ada"))
    changes = (tmp_path / "for-ada").read_bytes()
    # The file is a pipe: reading it waits until the test writes the changes into it.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)

    def plug_in() -> None:
        with pipe.open("wb") as stream:
            stream.write(changes)

    # Should the read hold the app's loop, this frees it, late (and the test fails).
    late = threading.Timer(10.0, plug_in)
    app = app_for(ada)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.action_read_changes()
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FormScreen)
        form.query_one("#field-file", Input).value = str(pipe)
        form.query_one("#field-file", Input).focus()
        late.start()
        try:
            await pilot.press("enter")
            await pilot.press("escape")  # the screen answers keys meanwhile; the save goes on
            assert form.saving
            assert app.screen is form
        finally:
            late.cancel()
        threading.Thread(target=plug_in, daemon=True).start()
        for _ in range(200):
            await pilot.pause(0.02)
            if not form.saving:
                break
        await pilot.pause()
        assert app.screen is not form
        assert "Wheelbarrow" in names(ada)
        assert any("Took in 1 change" in n.message for n in app._notifications)
