"""The Hearth app: the group's ledger in a terminal, from the keyboard or the mouse, offline.

:class:`HearthApp` is given a node (tests give it one in a temporary home) and shows the
current group in tabs. Keys act on the entry under the cursor; every change goes through
the same ledger operations as the command line, and a mistake comes back as a plain
message. While the app is open it shares changes as ``hearth serve`` does (unless told not
to), and it redraws when anything new is stored — by sharing, or by another ``hearth``
command on the same home — without moving the cursor or touching what is being typed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterable
from functools import partial
from typing import ClassVar, cast

from textual import events, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Input, TabbedContent, TabPane

from hearth.errors import HearthError
from hearth.ledger.model import CommitmentStatus
from hearth.node.node import Node
from tui.flows.carrying import CarryingFlows
from tui.flows.device import DeviceFlows
from tui.flows.members import MemberFlows
from tui.flows.neighbours import NeighbourFlows
from tui.flows.problems import ProblemFlows
from tui.flows.promises import PromiseFlows
from tui.flows.resources import ResourceFlows
from tui.messages import LedgerChanged, SyncStateChanged
from tui.palette import COMMANDS
from tui.panes import (
    CommitmentsPane,
    ConflictsPane,
    HistoryPane,
    MembersPane,
    NeedsPane,
    NeighboursPane,
    Overview,
    Pane,
    ResourcesPane,
    Snapshot,
)
from tui.screens.help import HelpScreen
from tui.state import neighbourhoods_of, sync_state
from tui.watch import NodeWatcher
from tui.wording import app_words

__all__ = ["HearthApp"]

REDRAW_GAP_S = 0.25  # while changes pour in from sharing, redraw at most this often
CLOCK_CHECK_S = 5.0  # how often to see whether the screen is old enough to draw again
IDLE_BEFORE_WARM_UP_S = 1.0  # no key or click for this long after opening: load the ledger

_TABS = (
    "overview",
    "resources",
    "needs",
    "promises",
    "members",
    "problems",
    "history",
    "neighbours",
)


class HearthApp(
    ResourceFlows,
    PromiseFlows,
    ProblemFlows,
    MemberFlows,
    DeviceFlows,
    CarryingFlows,
    NeighbourFlows,
):
    """The app over one node's current group: its tabs, its keys, and redrawing when
    the node says something changed (what each key does is in :mod:`tui.flows`)."""

    TITLE = "Hearth"
    CSS_PATH = "app.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("u", "sync_now", "Sync now"),
        *(
            Binding(str(n), f"show_tab('{tab}')", tab.title(), show=False)
            for n, tab in enumerate(_TABS, start=1)
        ),
        # Resources
        Binding("a", "add", "Add"),
        Binding("enter", "details", "Details"),
        Binding("e", "edit", "Edit"),
        Binding("l", "lend", "Lend"),
        Binding("r", "return", "Return"),
        Binding("p", "produce", "More"),
        Binding("c", "consume", "Use up"),
        Binding("g", "give", "Give"),
        Binding("x", "remove", "Remove/Cancel"),
        Binding("slash", "search", "Search"),
        Binding("k", "kind_filter", "Kind"),
        Binding("s", "sort", "Sort"),
        # Needs and promises
        Binding("d", "done", "Done"),
        Binding("y", "accept", "Accept"),
        Binding("n", "decline", "Decline"),
        Binding("f", "filter", "Show"),
        # Members
        Binding("i", "invite", "Invite"),
        Binding("m", "role", "Admin or not"),
        # Problems
        Binding("o", "sort_out", "Sort out"),
        # Neighbours
        Binding("t", "ask", "Ask for it"),
    ]
    _PANES: ClassVar[dict[str, type[Widget]]] = {
        "overview": Overview,
        "resources": ResourcesPane,
        "needs": NeedsPane,
        "promises": CommitmentsPane,
        "members": MembersPane,
        "problems": ConflictsPane,
        "history": HistoryPane,
        "neighbours": NeighboursPane,
    }
    # The tabs each action works on (and whose footer shows its key).
    _ACTION_TABS: ClassVar[dict[str, frozenset[str]]] = {
        **dict.fromkeys(
            (
                "edit",
                "lend",
                "return",
                "produce",
                "consume",
                "give",
                "search",
                "kind_filter",
                "sort",
            ),
            frozenset({"resources"}),
        ),
        "add": frozenset({"resources", "needs", "promises", "neighbours"}),
        "remove": frozenset({"resources", "promises", "members", "neighbours"}),
        "details": frozenset({"resources", "members"}),
        "role": frozenset({"members"}),
        "done": frozenset({"needs", "promises"}),
        "filter": frozenset({"needs", "promises"}),
        "accept": frozenset({"promises", "neighbours"}),
        "decline": frozenset({"promises", "neighbours"}),
        "ask": frozenset({"neighbours"}),
        "invite": frozenset({"members"}),
        "sort_out": frozenset({"problems"}),
    }

    def __init__(self, node: Node, *, share: bool = True, poll_s: float = 0.2) -> None:
        """``poll_s``: how often to look whether another process on this home committed
        (a counter read, not a query: see :mod:`tui.watch`)."""
        super().__init__()
        self.node = node
        self.group_id = node.current_group().id
        self.share = share
        self.poll_s = poll_s
        self._watcher = NodeWatcher(node, self)
        self._drawn_mark = -1  # the node's event count when last drawn
        self._changed_elsewhere = False  # another process committed since
        self._stale: set[str] = set()  # tabs to draw afresh when next shown
        self._drawn_at = 0
        self._stop_sharing = asyncio.Event()
        self._redraw_due = False
        self._redrawn = 0.0
        self._last_input = time.monotonic()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """A notification, in the app's words: a message from hearth/ that names a command
        names the app's way to it instead (:func:`tui.wording.app_words`)."""
        super().notify(
            app_words(message), title=title, severity=severity, timeout=timeout, markup=markup
        )

    # --- layout and refreshing ---------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="overview", id="tabs"):
            with TabPane("Overview", id="overview"):
                yield Overview()
            with TabPane("Resources", id="resources"):
                yield ResourcesPane()
            with TabPane("Needs", id="needs"):
                yield NeedsPane()
            with TabPane("Promises", id="promises"):
                yield CommitmentsPane()
            with TabPane("Members", id="members"):
                yield MembersPane()
            with TabPane("Problems", id="problems"):
                yield ConflictsPane()
            with TabPane("History", id="history"):
                yield HistoryPane()
            with TabPane("Neighbours", id="neighbours"):
                yield NeighboursPane()
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()
        # What this process does to the node comes as messages (drawn at most every
        # REDRAW_GAP_S while a catch-up brings much); other `hearth` commands on this home
        # are noticed by the store's change counter.
        self._watcher.start()
        self.set_interval(self.poll_s, self._watcher.check_other_processes)
        self.set_interval(CLOCK_CHECK_S, self._redraw_if_old)
        if self.share:
            self.share_changes()
        self.set_timer(IDLE_BEFORE_WARM_UP_S, self._warm_up_when_idle)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)):
            self._last_input = time.monotonic()
        await super().on_event(event)

    def _warm_up_when_idle(self) -> None:
        """Load the ledger in the first idle second after opening rather than when the
        first change from others arrives: the screen waits for it either way, better while
        nobody is typing."""
        idle = time.monotonic() - self._last_input
        if idle < IDLE_BEFORE_WARM_UP_S:
            self.set_timer(IDLE_BEFORE_WARM_UP_S - idle, self._warm_up_when_idle)
            return
        try:
            self.node.warm_up(self.group_id)
        except HearthError as exc:  # the change that needs it will say so
            self.log(f"warming up the ledger: {exc}")
        # What is loaded now lives as long as the app: leave it out of Python's full
        # garbage collections, which otherwise walk it all again and again (50-150 ms
        # each at 10,000 entries, landing on key presses and arriving changes).
        gc.freeze()

    @work(exclusive=True, group="sharing")
    async def share_changes(self) -> None:
        """Stay in touch with the group's relays and peers while the app is open."""
        from hearth.net.serve import serve  # networking loads only when sharing

        await serve(self.node, self._stop_sharing)

    async def action_quit(self) -> None:
        self._stop_sharing.set()
        self.exit()

    def snapshot(self) -> Snapshot:
        """The state every pane draws from."""
        now = self.node.clock.now_ms()
        return Snapshot(
            view=self.node.view(self.group_id),
            me=self.node.identity.member_id,
            now_ms=now,
            sync=sync_state(self.node, self.group_id, now),
            neighbours=neighbourhoods_of(self.node, self.group_id, now),
        )

    def redraw(self) -> None:
        """Draw the tab in view from the ledger as it is now; the others when next shown
        (a large ledger makes every table costly to fill)."""
        snap = self.snapshot()
        self.sub_title = f"{snap.view.group_name} · {snap.sync.words}"
        tab = self.tab()
        self._pane(tab).show(snap)
        self._stale = set(self._PANES) - {tab}
        self._drawn_mark = self.node.changes.count
        self._changed_elsewhere = False
        self._drawn_at = snap.now_ms
        self._redrawn = time.monotonic()

    def on_unmount(self) -> None:
        self._watcher.stop()

    def on_ledger_changed(self, message: LedgerChanged) -> None:
        if message.mark is None:
            # Another process's commit, noticed by the change counter: drawn at once, as
            # such changes come one at a time (a catch-up pours in through sharing).
            self._changed_elsewhere = True
            self._redraw_arrivals()
        elif message.mark > self._drawn_mark:  # else drawn since (a flow's own change)
            self._redraw_soon()

    def on_sync_state_changed(self, message: SyncStateChanged) -> None:
        if message.mark <= self._drawn_mark:
            return
        self._redraw_soon()

    def _redraw_soon(self) -> None:
        if self._redraw_due:
            return
        self._redraw_due = True
        wait = self._redrawn + REDRAW_GAP_S - time.monotonic()
        if wait > 0:
            self.set_timer(wait, self._redraw_arrivals)
        else:
            self.call_later(self._redraw_arrivals)

    def _redraw_arrivals(self) -> None:
        self._redraw_due = False
        if not self._changed_elsewhere and self.node.changes.count == self._drawn_mark:
            return  # drawn since the message came (a flow's own change, say)
        # The panes are only ever taken down as the app closes: a late timer finds none.
        with contextlib.suppress(NoMatches):
            self.redraw()

    def _redraw_if_old(self) -> None:
        """Redraw now and then anyway, as "up to date as of …" and "overdue" move on with
        the clock."""
        if self.node.clock.now_ms() - self._drawn_at > 30_000:
            with contextlib.suppress(NoMatches):
                self.redraw()

    def _pane(self, tab: str) -> Pane:
        return cast(Pane, self.query_one(self._PANES[tab]))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "resource-search":
            self.query_one(ResourcesPane).show(self.snapshot())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "resource-search":  # Enter: on to the rows found
            self.query_one("#resource-table", DataTable).focus()

    def on_key(self, event: events.Key) -> None:
        # Escape leaves the search box (what was typed stays), so the keys work again.
        search = self.query("#resource-search")
        if event.key == "escape" and search and self.focused is search.first():
            self.query_one("#resource-table", DataTable).focus()
            event.stop()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id in ("resource-table", "member-table"):  # Enter, or a click
            self.action_details()
        elif event.data_table.id == "problem-table":
            self.action_sort_out()

    def on_tabbed_content_tab_activated(self) -> None:
        self.refresh_bindings()
        tab = self.tab()
        if tab in self._stale:
            self._stale.discard(tab)
            self._pane(tab).show(self.snapshot())
        tables = self.query_one(f"#{tab}", TabPane).query(DataTable)
        if tables:  # so the arrow keys move through the rows straight away
            tables.first().focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A tab's keys work, and show in the footer, only on that tab."""
        tabs = self._ACTION_TABS.get(action)
        return tabs is None or self.tab() in tabs

    # --- what keys do on each tab -----------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, text, action in COMMANDS:
            yield SystemCommand(title, text, getattr(self, f"action_{action}"))
        # What the keys do on this tab, for the selected row (found by name here).
        tab = self.tab()
        for binding in self.BINDINGS:
            if not isinstance(binding, Binding):
                continue
            tabs = self._ACTION_TABS.get(binding.action)
            if tabs is None or tab not in tabs or binding.action == "add":
                continue
            yield SystemCommand(
                binding.description,
                f"On this tab (key {binding.key})",
                getattr(self, f"action_{binding.action}"),
            )
        for n, shown in enumerate(_TABS, start=1):
            yield SystemCommand(
                f"Go to {shown.title()}", f"Key {n}", partial(self.action_show_tab, shown)
            )

    def action_add(self) -> None:
        {
            "resources": self.action_add_resource,
            "needs": self.action_add_need,
            "promises": self.action_add_promise,
            "neighbours": self.action_offer,
        }.get(self.tab(), lambda: None)()

    def action_details(self) -> None:
        if self.tab() == "members":
            self.show_member()
        else:
            self.show_resource()

    def action_remove(self) -> None:
        tab = self.tab()
        if tab == "neighbours":
            self.take_back_offer()
        elif tab == "promises":
            self.promise_to(CommitmentStatus.CANCELLED, "Cancel")
        elif tab == "members":
            self.remove_member()
        else:
            self.remove_resource()

    def action_done(self) -> None:
        if self.tab() == "promises":
            self.promise_to(CommitmentStatus.FULFILLED, "Done")
        elif self.tab() == "needs":
            self.close_need()

    def action_accept(self) -> None:
        if self.tab() == "neighbours":
            self.answer_request(accept=True)
        else:
            self.promise_to(CommitmentStatus.ACCEPTED, "Accepted")

    def action_decline(self) -> None:
        if self.tab() == "neighbours":
            self.answer_request(accept=False)
        else:
            self.promise_to(CommitmentStatus.DECLINED, "Declined")
