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
from collections.abc import Callable, Iterable
from typing import ClassVar, cast

from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Input, Static, TabbedContent, TabPane

from hearth.errors import HearthError
from hearth.group import member_changes as members
from hearth.ledger.clashes import field_clashes
from hearth.ledger.conflicts import find_conflicts
from hearth.ledger.history import history
from hearth.ledger.ledger import Ledger, check_relay_url
from hearth.ledger.model import CommitmentStatus, Kind
from hearth.ledger.present import describe_resource, device_name
from hearth.neighbourhood import participation
from hearth.node.node import Node
from hearth.protocol.invite_code import JoinerIntroduced
from hearth.values import counted, format_date, format_time, parse_date, parse_quantity
from tui.forms import Choice, ConfirmScreen, Field, FormScreen
from tui.invite import InviteScreen, InviteWords, NeighbourhoodJoinScreen, device_words
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
    selected_key,
)
from tui.state import neighbourhoods_of, sync_state
from tui.wording import app_words

__all__ = ["HearthApp"]

REDRAW_GAP_S = 0.25  # while changes pour in from sharing, redraw at most this often
IDLE_BEFORE_WARM_UP_S = 1.0  # no key or click for this long after opening: load the ledger
SYNC_TIMEOUT_S = 30.0  # "Sync now" gives up on a relay or peer after this long (as `hearth sync`)
CHECK_TIMEOUT_S = 10.0  # "Check this device" waits this long for each (as `hearth doctor`)

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

HELP = """\
Hearth keeps your group's shared things and promises on this computer and shares
changes with the other members whenever it can. Everything works offline.

Anywhere
  1-8        switch tab (Overview, Resources, Needs, Promises, Members, Problems, History,
             Neighbours)
  ctrl+p     find any action by name
  u          sync now: send and fetch changes, and see what went and came
  ?          this help           q  quit

Resources
  a add   enter details   e edit   l lend   r return   p more   c use up
  g give   x remove   /  search   k kind   s sort

Needs          a add   d done (close)   f show open / mine / all
Promises       a new   y accept   n decline   d done   x cancel   f show …
Members        i invite someone
Problems       o (or enter) sort out the one under the cursor
Neighbours     t ask for the offer under the cursor   a offer something of ours
               x take back our offer   y accept / n decline a request to us

With ctrl+p: Check this device · Add or remove a device, a relay or a peer · Peers
  Carry changes on a file (USB stick) · Key for a relay's allow-list · Export the ledger
  Switch or start a group · Leave · Start, join or invite into a neighbourhood
"""


class HelpScreen(ModalScreen[None]):
    """What every key does."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close")
    ]

    def compose(self) -> ComposeResult:
        yield Static(HELP, classes="dialog", id="help")


class DetailScreen(ModalScreen[None]):
    """A resource's details and its history."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "app.pop_screen", "Close")]

    def __init__(self, text: str, *, markup: bool = True) -> None:
        """``markup=False`` for text from elsewhere (a relay's error), shown as written."""
        super().__init__()
        self.text = app_words(text)
        self.markup = markup

    def compose(self) -> ComposeResult:
        yield Static(self.text, classes="dialog", id="detail", markup=self.markup)


class HearthApp(App[None]):
    """The app over one node's current group."""

    TITLE = "Hearth"
    CSS = """
    .dialog { width: 72; height: auto; max-height: 90%; padding: 1 2;
              border: thick $accent; background: $surface; }
    #help { width: 96; max-width: 100%; }  /* its lines unbroken in a wide enough terminal */
    ModalScreen { align: center middle; }
    .dialog-title { text-style: bold; margin-bottom: 1; }
    .dialog-text { width: 100%; height: auto; }
    .dialog-buttons { height: auto; margin-top: 1; }
    .dialog-buttons Button { margin-right: 2; }
    .hint { color: $text-muted; height: 1; }
    #sync-line { margin-bottom: 1; }
    #attention, #start, #due, #mine { margin-bottom: 1; }
    DataTable { height: 1fr; }
    """
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
        super().__init__()
        self.node = node
        self.group_id = node.current_group().id
        self.share = share
        self.poll_s = poll_s
        self._seen: tuple[int, int, int] = (-1, -1, -1)
        self._stale: set[str] = set()  # tabs to draw afresh when next shown
        self._drawn_at = 0
        self._stop_sharing = asyncio.Event()
        self._in_form = False  # a form's Save is running: refusals go back to the form
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
        # Other `hearth` commands on this home are noticed by polling; what sharing brings
        # in here is drawn as soon as it is applied (at most every REDRAW_GAP_S while a
        # catch-up brings much).
        self.set_interval(self.poll_s, self.redraw_if_changed)
        self.node.arrival_listeners.append(self._arrived)
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
        tab = self._tab()
        self._pane(tab).show(snap)
        self._stale = set(self._PANES) - {tab}
        self._seen = self._change_marks()
        self._drawn_at = snap.now_ms
        self._redrawn = time.monotonic()

    def on_unmount(self) -> None:
        if self._arrived in self.node.arrival_listeners:
            self.node.arrival_listeners.remove(self._arrived)

    def _arrived(self) -> None:
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
        self.redraw_if_changed()

    def redraw_if_changed(self) -> None:
        """Redraw when something new was stored or shared — and now and then anyway, as
        "up to date as of …" and "overdue" move on with the clock."""
        stale = self.node.clock.now_ms() - self._drawn_at > 30_000
        if stale or self._change_marks() != self._seen:
            # The panes are only ever taken down as the app closes: a poll then finds none.
            with contextlib.suppress(NoMatches):
                self.redraw()

    def _change_marks(self) -> tuple[int, int, int]:
        rows = self.node.store.query("SELECT COALESCE(MAX(last_attempt), 0) FROM sync_log")
        return (
            self.node.store.last_seq(),
            int(rows[0][0]),
            participation.newest_arrival(self.node),
        )

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
        tab = self._tab()
        if tab in self._stale:
            self._stale.discard(tab)
            self._pane(tab).show(self.snapshot())
        tables = self.query_one(f"#{tab}", TabPane).query(DataTable)
        if tables:  # so the arrow keys move through the rows straight away
            tables.first().focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A tab's keys work, and show in the footer, only on that tab."""
        tabs = self._ACTION_TABS.get(action)
        return tabs is None or self._tab() in tabs

    # --- helpers ------------------------------------------------------------------------

    def _tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active or "overview"

    def _selected(self, table_id: str) -> str | None:
        return selected_key(self.query_one(f"#{table_id}", DataTable))

    def change(self, edit: Callable[[Ledger], object], done: str) -> bool:
        """Make one change to the ledger; a refusal is shown in plain words."""

        def run() -> None:
            with self.node.change(self.group_id) as ledger:
                edit(ledger)

        return self.attempt(run, done)

    def attempt(self, act: Callable[[], object], done: str) -> bool:
        """Do something to the group; a refusal is shown in plain words."""
        try:
            act()
        except HearthError as exc:
            if self._in_form:
                raise  # the form shows it and stays open
            self.notify(str(exc), title="Not done", severity="error", timeout=8, markup=False)
            return False
        self.notify(done, markup=False)  # names in it are as written (another group's too)
        self.redraw()
        return True

    def ask(
        self,
        title: str,
        fields: list[Field | Choice],
        then: Callable[[dict[str, str]], object],
        ok: str = "Save",
        after: Callable[[dict[str, str] | None], None] | None = None,
    ) -> None:
        """Show a form; on Save, hand its values on (errors are shown, not raised);
        ``after`` is told how it closed (its values, or ``None`` if cancelled)."""

        def submit(values: dict[str, str]) -> None:
            # A refusal stays in the form, with what was typed (see ``attempt``).
            self._in_form = True
            try:
                then(values)
            finally:
                self._in_form = False

        self.push_screen(FormScreen(title, fields, ok, submit=submit), callback=after)

    def _members(self, *, others: bool = False) -> list[tuple[str, str]]:
        me = self.node.identity.member_id
        return [
            (m.name, m.id)
            for m in self.node.view(self.group_id).members()
            if not (others and m.id == me)
        ]

    def _member_choice(self, key: str, label: str) -> Choice:
        """A pick among the other members, blank until the member picks one."""
        return Choice(key, label, self._members(others=True))

    def _resource_name(self, resource_id: str) -> str:
        return self.node.view(self.group_id).resource(resource_id).name

    # --- global actions -----------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, text, action in (
            ("Add a resource", "Record something the group shares", self.action_add_resource),
            ("Add a need", "Say what you or someone needs", self.action_add_need),
            ("New promise", "Record who will give what to whom", self.action_add_promise),
            ("Invite someone", "A code to read out to a new member", self.action_invite),
            ("Add a relay", "A relay the group syncs and meets through", self.action_add_relay),
            ("Remove a relay", "One the group no longer syncs through", self.action_remove_relay),
            (
                "Add a device",
                "Your phone or another computer, writing as you (a code to type there)",
                self.action_add_device,
            ),
            (
                "Remove a device",
                "A lost phone: it writes nothing that counts",
                self.action_remove_device,
            ),
            (
                "Sync now",
                "Send and fetch changes now, and see what went and came",
                self.action_sync_now,
            ),
            (
                "Check this device",
                "Its store, keys and relays, end to end, and what to do about a problem",
                self.action_check,
            ),
            ("Add a peer", "Another device to sync with directly", self.action_add_peer),
            ("Peers", "The devices this one syncs with directly", self.action_list_peers),
            ("Remove a peer", "Stop syncing with a device directly", self.action_remove_peer),
            (
                "Key for a relay's allow-list",
                "What the operator of a relay that takes only the groups it lists asks for",
                self.action_admission_key,
            ),
            (
                "Carry changes: write to a file",
                "For a device that cannot sync: on a USB stick",
                self.action_write_changes,
            ),
            (
                "Carry changes: read from a file",
                "Changes another device wrote to a USB stick",
                self.action_read_changes,
            ),
            (
                "Carry changes: say what this device has",
                "A file for the other device, so it writes only what is missing here",
                self.action_write_have,
            ),
            ("Leave the group", "Stop being a member of this group", self.action_leave),
            ("Switch group", "Show another of your groups", self.action_switch_group),
            (
                "Start another group",
                "A new group, with you as its first admin",
                self.action_new_group,
            ),
            (
                "Export the ledger",
                "To a file: a spreadsheet (CSV), JSON or ValueFlows",
                self.action_export,
            ),
            (
                "Start a neighbourhood",
                "A group of groups that share surplus (admins)",
                self.action_start_neighbourhood,
            ),
            (
                "Invite a group into the neighbourhood",
                "A code to read to another group's admin (admins)",
                self.action_invite_group,
            ),
            (
                "Join a neighbourhood",
                "With the code another group's admin reads out (admins)",
                self.action_join_neighbourhood,
            ),
            (
                "Offer to neighbours",
                "Share some of a resource with neighbour groups",
                self.action_offer,
            ),
            ("Help", "What every key does", self.action_help),
        ):
            yield SystemCommand(title, text, action)
        # What the keys do on this tab, for the selected row (found by name here).
        tab = self._tab()
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
        for n, tab in enumerate(_TABS, start=1):
            yield SystemCommand(
                f"Go to {tab.title()}", f"Key {n}", lambda t=tab: self.action_show_tab(t)
            )

    # --- adding -------------------------------------------------------------------------

    def action_add(self) -> None:
        {
            "resources": self.action_add_resource,
            "needs": self.action_add_need,
            "promises": self.action_add_promise,
            "neighbours": self.action_offer,
        }.get(self._tab(), lambda: None)()

    def action_add_resource(self) -> None:
        kinds = [(k.value, k.value) for k in Kind]

        def save(v: dict[str, str]) -> None:
            quantity = parse_quantity(v["quantity"] or "1", allow_zero=True)
            self.change(
                lambda ledger: ledger.add_resource(
                    v["name"],
                    kind=Kind(v["kind"]),
                    quantity=quantity,
                    unit=v["unit"],
                    location=v["location"],
                    note=v["note"],
                ),
                f"Added {v['name']}.",
            )

        self.ask(
            "Add a resource",
            [
                Field("name", "Name", placeholder="e.g. Ladder"),
                Choice("kind", "Kind", kinds),
                Field("quantity", "How many", value="1"),
                Field("unit", "Unit (optional)", placeholder="e.g. bags, kg"),
                Field("location", "Where it is kept (optional)"),
                Field("note", "Note (optional)"),
            ],
            save,
        )

    def action_add_need(self) -> None:
        def save(v: dict[str, str]) -> None:
            quantity = parse_quantity(v["quantity"]) if v["quantity"] else None
            by = parse_date(v["by"], now_ms=self.node.clock.now_ms()) if v["by"] else None
            self.change(
                lambda ledger: ledger.add_need(v["what"], quantity=quantity, unit=v["unit"], by=by),
                f"Noted the need for {v['what']}.",
            )

        self.ask(
            "Add a need",
            [
                Field("what", "What is needed", placeholder="e.g. seed trays"),
                Field("quantity", "How many (optional)"),
                Field("unit", "Unit (optional)"),
                Field("by", "By when (optional)", placeholder="2026-12-24, tomorrow or +3d"),
            ],
            save,
        )

    def action_add_promise(self) -> None:
        members = self._members()  # either side may be me, or neither
        resources = [(r.name, r.id) for r in self.node.view(self.group_id).resources()]

        def save(v: dict[str, str]) -> None:
            quantity = parse_quantity(v["quantity"]) if v["quantity"] else None
            due = parse_date(v["due"], now_ms=self.node.clock.now_ms()) if v["due"] else None
            self.change(
                lambda ledger: ledger.add_commitment(
                    v["what"],
                    giver=v["giver"],
                    receiver=v["receiver"],
                    resource=v["resource"],
                    quantity=quantity,
                    due=due,
                ),
                f"Recorded the promise: {v['what']}.",
            )

        self.ask(
            "New promise",
            [
                Field("what", "What is promised", placeholder="e.g. lend the ladder"),
                Choice("giver", "Who gives", members),
                Choice("receiver", "To whom", members),
                # As `commitment add --resource`: once done, the gift is recorded too.
                Choice(
                    "resource", "Of the group's resources (optional)", resources, required=False
                ),
                Field("quantity", "How many (optional)"),
                Field("due", "By when (optional)", placeholder="2026-12-24, tomorrow or +3d"),
            ],
            save,
        )

    # --- resources ----------------------------------------------------------------------

    def _with_resource(self, act: Callable[[str], None]) -> None:
        if self._tab() != "resources":
            return
        resource_id = self._selected("resource-table")
        if resource_id is None:
            self.notify("Pick a resource first (arrow keys).", severity="warning")
            return
        act(resource_id)

    def action_details(self) -> None:
        if self._tab() == "members":
            self._with_member(self._show_member)
            return

        def show(resource_id: str) -> None:
            view = self.node.view(self.group_id)
            lines = [describe_resource(view, view.resource(resource_id)), "", "History:"]
            for item in history(view, resource=resource_id):
                lines.append(f"  {format_time(item.at)}  {view.member_name(item.by)} {item.what}")
            self.push_screen(DetailScreen("\n".join(lines)))

        self._with_resource(show)

    def action_edit(self) -> None:
        def edit(resource_id: str) -> None:
            r = self.node.view(self.group_id).resource(resource_id)
            sharing = [("no: only this group sees it", "no"), ("yes: it can be offered", "yes")]
            self.ask(
                f"Edit {r.name}",
                [
                    Field("name", "Name", value=r.name),
                    Choice("kind", "Kind", [(k.value, k.value) for k in Kind], r.kind.value),
                    Field("unit", "Unit", value=r.unit),
                    Field("location", "Where it is kept", value=r.location),
                    Choice("keeper", "Who looks after it", self._members(), r.keeper),
                    Choice(
                        "shareable",
                        "Shareable with neighbour groups",
                        sharing,
                        "yes" if r.shareable else "no",
                    ),
                    Field("note", "Note", value=r.note),
                ],
                lambda v: self.change(
                    lambda ledger: ledger.edit_resource(
                        resource_id,
                        name=v["name"],
                        kind=Kind(v["kind"]),
                        unit=v["unit"],
                        location=v["location"],
                        keeper=v["keeper"],
                        shareable=v["shareable"] == "yes",
                        note=v["note"],
                    ),
                    f"Saved {v['name']}.",
                ),
            )

        self._with_resource(edit)

    def action_lend(self) -> None:
        def lend(resource_id: str) -> None:
            name = self._resource_name(resource_id)
            # As the CLI: anyone but the thing's keeper (who has it whenever it is not lent),
            # the member too, taking a thing someone else keeps.
            keeper = self.node.view(self.group_id).resource(resource_id).keeper
            me = self.node.identity.member_id
            borrowers = [
                (f"{label} (me: I take it)" if member == me else label, member)
                for label, member in self._members()
                if member != keeper
            ]

            def save(v: dict[str, str]) -> None:
                until = (
                    parse_date(v["until"], now_ms=self.node.clock.now_ms()) if v["until"] else None
                )
                keeps = self.node.view(self.group_id).member_name(keeper)
                self.change(
                    lambda ledger: ledger.lend(resource_id, to=v["to"], until=until),
                    f"You took {name} ({keeps} keeps it)." if v["to"] == me else f"Lent {name}.",
                )

            self.ask(
                f"Lend {name}",
                [
                    Choice("to", "To whom", borrowers),
                    Field("until", "Until (optional)", placeholder="2026-12-24, tomorrow or +3d"),
                ],
                save,
                ok="Lend",
            )

        self._with_resource(lend)

    def action_return(self) -> None:
        def give_back(resource_id: str) -> None:
            name = self._resource_name(resource_id)
            self.change(lambda ledger: ledger.return_(resource_id), f"{name} is back.")

        self._with_resource(give_back)

    def _quantity_change(self, verb: str, done: str) -> None:
        def ask_quantity(resource_id: str) -> None:
            r = self.node.view(self.group_id).resource(resource_id)

            def save(v: dict[str, str]) -> None:
                quantity = parse_quantity(v["quantity"])
                operation = {"produce": Ledger.produce, "consume": Ledger.consume}[verb]
                self.change(
                    lambda ledger: operation(ledger, resource_id, quantity, note=v["note"]),
                    done.format(name=r.name),
                )

            title = "Add to" if verb == "produce" else "Use up some of"
            self.ask(
                f"{title} {r.name}",
                [Field("quantity", f"How many {r.unit}".strip()), Field("note", "Note (optional)")],
                save,
            )

        self._with_resource(ask_quantity)

    def action_produce(self) -> None:
        self._quantity_change("produce", "Added to {name}.")

    def action_consume(self) -> None:
        self._quantity_change("consume", "Used up some {name}.")

    def action_give(self) -> None:
        def give(resource_id: str) -> None:
            r = self.node.view(self.group_id).resource(resource_id)

            def save(v: dict[str, str]) -> None:
                quantity = parse_quantity(v["quantity"] or "1")
                self.change(
                    lambda ledger: ledger.give(resource_id, to=v["to"], quantity=quantity),
                    f"Gave {r.name}.",
                )

            self.ask(
                f"Give {r.name}",
                [
                    self._member_choice("to", "To whom"),
                    Field("quantity", "How many", value="1"),
                ],
                save,
                ok="Give",
            )

        self._with_resource(give)

    def action_remove(self) -> None:
        if self._tab() == "neighbours":
            self._take_back_offer()
            return
        if self._tab() == "promises":
            self._promise_to(CommitmentStatus.CANCELLED, "Cancel")
            return
        if self._tab() == "members":
            self._with_member(self._remove_member)
            return

        def remove(resource_id: str) -> None:
            name = self._resource_name(resource_id)

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.change(
                        lambda ledger: ledger.remove_resource(resource_id), f"Removed {name}."
                    )

            self.push_screen(
                ConfirmScreen(
                    f"Remove {name}?",
                    "It disappears from everyone's list; its history is kept.",
                    yes="Remove",
                ),
                confirmed,
            )

        self._with_resource(remove)

    def action_search(self) -> None:
        if self._tab() == "resources":
            self.query_one("#resource-search", Input).focus()

    def action_kind_filter(self) -> None:
        if self._tab() == "resources":
            pane = self.query_one(ResourcesPane)
            kinds = ResourcesPane.KINDS
            pane.kind_filter = kinds[(kinds.index(pane.kind_filter) + 1) % len(kinds)]
            pane.show(self.snapshot())

    def action_sort(self) -> None:
        if self._tab() == "resources":
            pane = self.query_one(ResourcesPane)
            sorts = ResourcesPane.SORTS
            pane.sort = sorts[(sorts.index(pane.sort) + 1) % len(sorts)]
            pane.show(self.snapshot())

    # --- needs and promises ---------------------------------------------------------------

    def action_filter(self) -> None:
        pane: NeedsPane | CommitmentsPane
        if self._tab() == "needs":
            pane = self.query_one(NeedsPane)
        elif self._tab() == "promises":
            pane = self.query_one(CommitmentsPane)
        else:
            return
        pane.filter = pane.FILTERS[(pane.FILTERS.index(pane.filter) + 1) % len(pane.FILTERS)]
        pane.show(self.snapshot())

    def action_done(self) -> None:
        if self._tab() == "promises":
            self._promise_to(CommitmentStatus.FULFILLED, "Done")
        elif self._tab() == "needs":
            need_id = self._selected("need-table")
            if need_id is None:
                return
            what = self.node.view(self.group_id).need(need_id).what
            self.change(lambda ledger: ledger.close_need(need_id), f"Closed the need for {what}.")

    def action_accept(self) -> None:
        if self._tab() == "neighbours":
            self._answer(accept=True)
            return
        self._promise_to(CommitmentStatus.ACCEPTED, "Accepted")

    def action_decline(self) -> None:
        if self._tab() == "neighbours":
            self._answer(accept=False)
            return
        self._promise_to(CommitmentStatus.DECLINED, "Declined")

    def _promise_to(self, status: CommitmentStatus, word: str) -> None:
        if self._tab() != "promises":
            return
        commitment_id = self._selected("promise-table")
        if commitment_id is None:
            self.notify("Pick a promise first (arrow keys).", severity="warning")
            return
        what = self.node.view(self.group_id).commitment(commitment_id).what

        def act(yes: bool | None = True) -> None:
            if yes:
                self.change(
                    lambda ledger: ledger.change_commitment(commitment_id, status),
                    f"{word}: {what}.",
                )

        if status is CommitmentStatus.CANCELLED:
            self.push_screen(ConfirmScreen(f"Cancel the promise '{what}'?", yes="Cancel it"), act)
        else:
            act()

    # --- problems -------------------------------------------------------------------------

    def action_sort_out(self) -> None:
        """Offer the ordinary change that settles the problem under the cursor."""
        conflict_id = self._selected("problem-table")
        view = self.node.view(self.group_id)
        found = [c for c in find_conflicts(view) if c.id == conflict_id]
        if not found:
            return
        conflict = found[0]
        resource_id = conflict.entries[0]
        if conflict.kind == "double-lend":
            r = view.resource(resource_id)
            self.ask(
                f"Who does not have {r.name} any more?",
                [
                    Choice(
                        "borrower",
                        "Record a return from",
                        [(view.member_name(m), m) for m in r.lent_to],
                    )
                ],
                lambda v: self.change(
                    lambda ledger: ledger.return_(resource_id, borrower=v["borrower"]),
                    f"Recorded the return of {r.name}.",
                ),
                ok="Record the return",
            )
        elif conflict.kind == "field-clash":
            self._settle_field_clash(resource_id, conflict.entries[1:])
        elif conflict.kind == "overdrawn":
            r = view.resource(resource_id)
            self.ask(
                f"How much {r.name} is really there?",
                [Field("quantity", f"Count ({r.unit})".replace(" ()", ""), value="0")],
                lambda v: self.change(
                    lambda ledger: ledger.edit_resource(
                        resource_id, quantity=parse_quantity(v["quantity"], allow_zero=True)
                    ),
                    f"Corrected {r.name}.",
                ),
                ok="Correct it",
            )
        else:  # promises: decide among them on the Promises tab
            self.action_show_tab("promises")
            promises = self.query_one(CommitmentsPane)
            promises.filter = "open"
            promises.show(self.snapshot())
            wanted = [
                e for e in conflict.entries if e in self.query_one("#promise-table", DataTable).rows
            ]
            if wanted:
                table = self.query_one("#promise-table", DataTable)
                table.move_cursor(row=table.get_row_index(wanted[0]))
                table.focus()
            self.notify(conflict.advice)

    def _settle_field_clash(self, resource_id: str, edits: tuple[str, ...]) -> None:
        """Pick which of the values set at the same time is right; setting it settles the
        clash (what `hearth resource edit ID --FIELD VALUE` does)."""
        view = self.node.view(self.group_id)
        r = view.resource(resource_id)
        clash = next(
            c
            for c in field_clashes(view.tables["resources"][resource_id])
            if tuple(rival.edit for rival in c.rivals) == edits
        )

        def shown(value: str) -> str:
            return view.member_name(value) if clash.field == "keeper" else value or "(nothing)"

        options: dict[str, str] = {}
        for rival in clash.rivals:
            options.setdefault(
                rival.value, f"{shown(rival.value)} (set by {view.member_name(rival.by)})"
            )

        def typed(value: str) -> object:
            if clash.field == "kind":
                return Kind(value)
            if clash.field == "shareable":
                return value == "yes"
            return value

        self.ask(
            f"Which {clash.field} of {r.name} is right?",
            [Choice("value", clash.field.capitalize(), [(t, v) for v, t in options.items()])],
            lambda v: self.change(
                lambda ledger: ledger.edit_resource(
                    resource_id,
                    **{clash.field: typed(v["value"])},  # type: ignore[arg-type]
                ),
                f"{r.name}: {clash.field} set to {shown(v['value'])}.",
            ),
            ok="Set it",
        )

    # --- members --------------------------------------------------------------------------

    def _with_member(self, act: Callable[[str], None]) -> None:
        member_id = self._selected("member-table")
        if member_id is None:
            self.notify("Pick a member first (arrow keys).", severity="warning")
            return
        act(member_id)

    def _show_member(self, member_id: str) -> None:
        view = self.node.view(self.group_id)
        m = view.member(member_id)
        lines = [
            m.name,
            f"{'Admin' if m.role.value == 'admin' else 'Member'} since {format_date(m.joined_at)}",
            "",
            "Devices:",
            *(f"  {device_name(view, m.id, d)}" for d in m.devices),
        ]
        self.push_screen(DetailScreen("\n".join(lines)))

    def _remove_member(self, member_id: str) -> None:
        name = self.node.view(self.group_id).member_name(member_id)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.attempt(
                    lambda: members.remove_member(self.node, self.group_id, member_id),
                    f"{name} is out of the group.",
                )

        self.push_screen(
            ConfirmScreen(
                f"Remove {name} from the group?",
                "From now on they see nothing new the group writes, and nothing they write "
                "counts. What they saw before stays with them. This cannot be undone; "
                "to have them back, invite them again.",
                yes="Remove",
            ),
            confirmed,
        )

    def action_role(self) -> None:
        def toggle(member_id: str) -> None:
            view = self.node.view(self.group_id)
            m = view.member(member_id)
            if m.role.value == "admin":
                self.attempt(
                    lambda: members.demote(self.node, self.group_id, member_id),
                    f"{m.name} is no longer an admin.",
                )
            else:
                self.attempt(
                    lambda: members.promote(self.node, self.group_id, member_id),
                    f"{m.name} is now an admin: they can invite and remove members.",
                )

        self._with_member(toggle)

    def action_invite(self) -> None:
        relays = self.node.view(self.group_id).relays()
        if relays:
            self.push_screen(InviteScreen(self.node, relays[0]))
            return

        # No relay to meet through yet: ask for one first, so the invite can be a code.
        def save(v: dict[str, str]) -> None:
            if v["url"]:
                url = check_relay_url(v["url"])
                self.change(
                    lambda ledger: ledger.add_relay(url), f"The group now syncs through {url}."
                )

        def then(v: dict[str, str] | None) -> None:
            if v is None:
                return
            relays = self.node.view(self.group_id).relays()
            if relays:
                self.push_screen(InviteScreen(self.node, relays[0]))
            else:
                self._invite_by_token()

        self.ask(
            "Invite someone",
            [
                Field(
                    "url",
                    "To invite with a short code read out, the group needs a relay to meet "
                    "through: its address (whoever runs it can tell you). Leave it empty for "
                    "a one-use token to pass on instead.",
                    placeholder="ws://relay.example.org:8765",
                )
            ],
            save,
            ok="Invite",
            after=then,
        )

    def _invite_by_token(self) -> None:
        from hearth.protocol.invite_token import encode_token  # no relay to meet through: a token

        try:
            token = encode_token(self.node.create_invite())
        except HearthError as exc:
            self.notify(str(exc), title="Not done", severity="error")
            return
        self.push_screen(
            DetailScreen(
                "The group has no relay to meet through, so here is a one-use token instead "
                "(with a relay, an invite is a short code to read out: ctrl+p, Add a relay).\n"
                "Give it to the new member privately (it lets them in once, for a day):\n\n"
                f"{token}\n\nThey run: hearth join '<the text above>' --name THEIR-NAME\n"
                "(copied with the frame and line breaks is fine, inside the quotes), or paste "
                "it where Hearth's first screen asks for the invite code"
            )
        )
        self.redraw()

    def action_add_relay(self) -> None:
        """List a relay the group syncs through (what `hearth relay add` does)."""

        def save(v: dict[str, str]) -> None:
            url = check_relay_url(v["url"])
            self.change(lambda ledger: ledger.add_relay(url), f"The group now syncs through {url}.")

        self.ask(
            "Add a relay",
            [Field("url", "Its address", placeholder="ws://relay.example.org:8765")],
            save,
            ok="Add",
        )

    def action_remove_relay(self) -> None:
        """Stop syncing through one of the group's relays (what `hearth relay remove` does);
        removing the only one asks first, as the command does."""
        relays = self.node.view(self.group_id).relays()
        if not relays:
            self.notify("The group lists no relay.", severity="warning")
            return

        def remove(url: str) -> None:
            self.change(
                lambda ledger: ledger.remove_relay(url),
                f"The group no longer syncs through {url}.",
            )

        def chosen(v: dict[str, str] | None) -> None:
            if v is None:
                return
            url = v["url"]
            if len(relays) > 1:
                remove(url)
                return
            self.push_screen(
                ConfirmScreen(
                    f"{url} is the group's only relay. Remove it?",
                    "Without one, members sync only on the same network or by file, and "
                    "invites are long tokens instead of codes. Add another relay first if "
                    "you can.",
                    yes="Remove it",
                ),
                lambda yes: remove(url) if yes else None,
            )

        self.push_screen(
            FormScreen(
                "Remove a relay",
                [Choice("url", "Which relay", [(u, u) for u in relays])],
                ok="Remove",
            ),
            callback=chosen,
        )

    def _show_group(self, group_id: str) -> None:
        """Make ``group_id`` the group the app shows (and the commands' current one)."""
        self.node.use_group(group_id)
        self.group_id = group_id
        self.redraw()

    def action_switch_group(self) -> None:
        """Show another of this node's groups (what `hearth group use` does)."""
        groups = [(g.name, g.id) for g in self.node.groups() if g.id != self.group_id]
        if not groups:
            self.notify(
                "You are in no other group: ctrl+p, Start another group.", severity="warning"
            )
            return
        self.push_screen(
            FormScreen("Switch group", [Choice("group", "Which group", groups)], ok="Show it"),
            callback=lambda v: self._show_group(v["group"]) if v else None,
        )

    def action_new_group(self) -> None:
        """Start a second group on this device (what `hearth group create --another`
        does) and show it."""

        def save(v: dict[str, str]) -> None:
            self.attempt(
                lambda: self._show_group(self.node.create_group(v["name"]).id),
                f"Started '{v['name']}'; you are its first admin.",
            )

        self.ask("Start another group", [Field("name", "Its name")], save, ok="Start")

    def action_export(self) -> None:
        """Write the group's ledger to a file (what `hearth export -o FILE` does)."""
        from hearth.files import write_file
        from hearth.ledger.export import export_csv, export_json, export_valueflows

        formats = [
            ("CSV, for a spreadsheet", "csv"),
            ("JSON", "json"),
            ("ValueFlows JSON-LD, for other economic tools", "valueflows"),
        ]

        def save(v: dict[str, str]) -> None:
            if not v["file"]:
                raise HearthError("Give the file to write, e.g. ~/ledger.csv.")
            view = self.node.view(self.group_id)
            if v["format"] == "csv":
                text = export_csv(view)
            elif v["format"] == "valueflows":
                text = export_valueflows(view, self.group_id, view.group_name)
            else:
                text = export_json(view, view.group_name)
            self.attempt(
                lambda: write_file(v["file"], text if text.endswith("\n") else text + "\n"),
                f"Wrote {v['file']}.",
            )

        self.ask(
            "Export the ledger",
            [
                Choice("format", "As", formats),
                Field("file", "To the file", placeholder="~/ledger.csv"),
            ],
            save,
            ok="Export",
        )

    def action_add_device(self) -> None:
        """Let another device of this member's write as them, by a code typed there (what
        `hearth device add` does)."""
        relays = self.node.view(self.group_id).relays()
        if not relays:
            self.notify(
                "A new device meets this one through the group's relay, and the group lists "
                "none: ctrl+p, Add a relay.",
                title="No relay",
                severity="warning",
                timeout=8,
            )
            return

        def device_token(event: JoinerIntroduced) -> str:
            return members.new_device_token(self.node, event.device_key)

        self.push_screen(
            InviteScreen(
                self.node, relays[0], words=device_words(relays[0]), make_token=device_token
            )
        )

    def action_remove_device(self) -> None:
        """Stop a device writing for its member (what `hearth device remove` does)."""
        view = self.node.view(self.group_id)
        devices = [
            (f"{m.name}: {device_name(view, m.id, d)}", d)
            for m in view.members()
            for d in m.devices
        ]

        def chosen(v: dict[str, str] | None) -> None:
            if v is None:
                return
            label = next(text for text, d in devices if d == v["device"])

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.attempt(
                        lambda: members.remove_device(self.node, self.group_id, v["device"]),
                        f"Removed {label}; the group has a new key without it.",
                    )

            self.push_screen(
                ConfirmScreen(
                    f"Remove {label}?",
                    "Nothing it writes from now on counts, and it gets nothing new. A device "
                    "found again joins like a new one.",
                    yes="Remove it",
                ),
                confirmed,
            )

        self.push_screen(
            FormScreen("Remove a device", [Choice("device", "Which device", devices)], ok="Remove"),
            callback=chosen,
        )

    def action_leave(self) -> None:
        """Leave the group (what `hearth leave` does), after asking."""
        name = self.node.view(self.group_id).group_name

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.attempt(
                    lambda: members.leave(self.node, self.group_id),
                    f"You have left '{name}'; its history stays readable here.",
                )

        self.push_screen(
            ConfirmScreen(
                f"Leave '{name}'?",
                "Nothing you write there will count any more; to come back, an admin must "
                "invite you again.",
                yes="Leave",
            ),
            confirmed,
        )

    def action_sync_now(self) -> None:
        """Send and fetch changes now, and say what went and came (what `hearth sync` does;
        the app shares all the time, but someone just back online wants to see it)."""
        from hearth.net.dialled_peers import list_peers

        if not self.node.view(self.group_id).relays() and not list_peers(self.node.store):
            self.notify(
                "The group lists no relay and this device has no peer to sync with: "
                "ctrl+p, Add a relay.",
                title="Nothing to sync with",
                severity="warning",
                timeout=8,
            )
            return
        self.notify("Syncing now…", timeout=3)
        self._sync_now()

    @work(exclusive=True, group="sync-now")
    async def _sync_now(self) -> None:
        from hearth.net.syncing import sync_everywhere, sync_report

        groups = [self.group_id]
        started = self.node.clock.now_ms()
        try:
            reports = await sync_everywhere(self.node, groups, timeout=SYNC_TIMEOUT_S)
        except HearthError as exc:
            self.notify(str(exc), title="Not synced", severity="error", timeout=8, markup=False)
            return
        lines, told = sync_report(self.node, groups, reports, started, unit="change")
        if not any(r.ok for r in reports):
            lines.append(
                "No relay or peer could be reached; your changes are kept and go out next time."
            )
        self.push_screen(DetailScreen("\n".join(["Synced now", "", *lines, *told]), markup=False))
        self.redraw()

    def action_check(self) -> None:
        """Check this device end to end and show what is wrong, if anything (what
        `hearth doctor` does)."""
        self.notify("Checking this device and its relays…", timeout=3)
        self._check()

    @work(exclusive=True, group="check")
    async def _check(self) -> None:
        from hearth.cli.doctor import check_node, finding_lines

        findings = await check_node(self.node, timeout=CHECK_TIMEOUT_S)
        verdict = (
            "All is well."
            if all(f.ok for f in findings)
            else "Something needs looking at: see BAD below."
        )
        text = "\n".join(["Check this device", "", verdict, "", *finding_lines(findings)])
        self.push_screen(DetailScreen(text, markup=False))

    def action_add_peer(self) -> None:
        """Sync with another device directly, as well as through relays (what `hearth peer
        add` does)."""
        from hearth.net.dialled_peers import add_peer

        def save(v: dict[str, str]) -> None:
            if not v["url"]:
                raise HearthError(
                    "Give the peer's address: what its `hearth serve --listen` says it listens "
                    "on, e.g. ws://192.168.1.20:8766."
                )
            url = add_peer(self.node.store, v["url"], self.node.clock.now_ms())
            self.notify(f"This device now syncs with {url} directly.", markup=False)

        self.ask(
            "Add a peer",
            [Field("url", "Its address", placeholder="ws://192.168.1.20:8766")],
            save,
            ok="Add",
        )

    def action_list_peers(self) -> None:
        """The devices this one syncs with directly (what `hearth peer list` does)."""
        from hearth.net.dialled_peers import list_peers

        peers = list_peers(self.node.store)
        text = "\n".join(peers) if peers else "No peers yet: ctrl+p, Add a peer."
        self.push_screen(DetailScreen(f"Peers of this device\n\n{text}", markup=False))

    def action_remove_peer(self) -> None:
        """Stop syncing with a device directly (what `hearth peer remove` does)."""
        from hearth.net.dialled_peers import list_peers, remove_peer

        peers = list_peers(self.node.store)
        if not peers:
            self.notify("This device has no peers.", severity="warning")
            return

        def chosen(v: dict[str, str] | None) -> None:
            if v is not None:
                self.attempt(
                    lambda: remove_peer(self.node.store, v["url"]),
                    f"This device no longer syncs with {v['url']} directly.",
                )

        self.push_screen(
            FormScreen("Remove a peer", [Choice("url", "Which peer", [(p, p) for p in peers])]),
            callback=chosen,
        )

    def action_admission_key(self) -> None:
        """The key to give the operator of a relay that takes only the groups it lists
        (what `hearth relay key` does)."""
        from hearth.group.rotation import admission_key

        self.push_screen(
            DetailScreen(
                "Key for a relay's allow-list\n\n"
                f"{admission_key(self.node, self.group_id)}\n\n"
                "Give this to the operator of a relay that takes only the groups it lists "
                "(they run: hearth-relay allow KEY). It says nothing about members, and it "
                "changes when someone is removed.",
                markup=False,
            )
        )

    def action_write_changes(self) -> None:
        """Write the group's changes to a file, to carry to a device that cannot sync
        (what `hearth bundle export` does)."""
        from hearth.net.carrying import write_changes

        def save(v: dict[str, str]) -> None:
            if not v["file"]:
                raise HearthError("Give the file to write, e.g. /media/usb/hearth-changes.")
            if v["which"] == "missing" and not v["since"]:
                raise HearthError(
                    "Give the file the other device wrote (ctrl+p there, Carry changes: say "
                    "what this device has), or choose every change."
                )
            since = v["since"] if v["which"] == "missing" else None
            written = write_changes(self.node, self.group_id, v["file"], since=since)
            self.notify(
                f"Wrote {counted(written, 'change')} to {v['file']}: on the other device, "
                "ctrl+p, Carry changes: read from a file.",
                markup=False,
            )

        self.ask(
            "Carry changes: write to a file",
            [
                Choice(
                    "which",
                    "Which changes",
                    [
                        ("Every change of the group", "all"),
                        ("Only those the other device lacks (from the file it wrote)", "missing"),
                    ],
                ),
                Field("file", "To the file", placeholder="/media/usb/hearth-changes"),
                Field(
                    "since",
                    "The file the other device wrote of what it has (only for those it lacks)",
                    placeholder="/media/usb/hearth-have",
                ),
            ],
            save,
            ok="Write",
        )

    def action_read_changes(self) -> None:
        """Take in the changes another device wrote to a file (what `hearth bundle import`
        does)."""
        from hearth.net.carrying import read_changes
        from hearth.validity.intake import Verdict

        def save(v: dict[str, str]) -> None:
            if not v["file"]:
                raise HearthError("Give the file to read, e.g. /media/usb/hearth-changes.")
            counts = read_changes(self.node, v["file"])
            self.notify(
                f"Took in {counted(counts[Verdict.APPLIED], 'change')} from {v['file']} "
                f"(already had {counts[Verdict.DUPLICATE]}, waiting for earlier ones "
                f"{counts[Verdict.WAITING]}, refused {counts[Verdict.REJECTED]}).",
                markup=False,
            )
            self.redraw()

        self.ask(
            "Carry changes: read from a file",
            [Field("file", "From the file", placeholder="/media/usb/hearth-changes")],
            save,
            ok="Read",
        )

    def action_write_have(self) -> None:
        """Write what this device has to a file, so that the other device writes only what
        is missing here (what `hearth bundle have` does)."""
        from hearth.net.carrying import write_have

        def save(v: dict[str, str]) -> None:
            if not v["file"]:
                raise HearthError("Give the file to write, e.g. /media/usb/hearth-have.")
            write_have(self.node, self.group_id, v["file"])
            self.notify(
                f"Wrote what this device has to {v['file']}: on the other device, ctrl+p, "
                "Carry changes: write to a file, only those this one lacks.",
                markup=False,
            )

        self.ask(
            "Carry changes: say what this device has",
            [Field("file", "To the file", placeholder="/media/usb/hearth-have")],
            save,
            ok="Write",
        )

    def action_start_neighbourhood(self) -> None:
        """Start a neighbourhood with this group in it (what `hearth neighbourhood create`
        does); other groups join with a code from `hearth neighbourhood invite`."""

        def save(v: dict[str, str]) -> None:
            self.attempt(
                lambda: participation.create(self.node, self.group_id, v["name"]),
                f"Started the neighbourhood '{v['name']}'. Invite other groups with "
                "`hearth neighbourhood invite`.",
            )

        self.ask(
            "Start a neighbourhood",
            [Field("name", "Its name", placeholder="e.g. Eastside")],
            save,
            ok="Start",
        )

    def action_invite_group(self) -> None:
        """A code for another group's admin (what `hearth neighbourhood invite` does)."""
        relays = self.node.view(self.group_id).relays()
        try:
            participation.require_admin(self.node, self.group_id, "invite groups in")
            hood = participation.find(self.node, self.group_id)
            if not relays:
                raise HearthError("The group has no relay to meet through: ctrl+p, Add a relay.")
        except HearthError as exc:
            self.notify(str(exc), title="Not done", severity="error", markup=False)
            return

        def admit(event: JoinerIntroduced) -> str:
            participation.admit(self.node, hood, event.device_key, event.name)
            return participation.encode_token(hood)

        words = InviteWords(
            f"Invite a group into {hood.name}",
            f"Read this code to the other group's admin, with the relay's address: "
            f"{relays[0]}\nThey choose Join a neighbourhood (ctrl+p) and type both (or run: "
            f"hearth neighbourhood join CODE --relay {relays[0]}).",
            lambda name: f"The group '{name}' wants to join {hood.name}. Let it in? (y or n)",
            lambda name: f"'{name}' is in '{hood.name}' now.",
        )
        self.push_screen(InviteScreen(self.node, relays[0], words=words, make_token=admit))

    def action_join_neighbourhood(self) -> None:
        """Take the group into a neighbourhood with a code (`hearth neighbourhood join`)."""
        relays = self.node.view(self.group_id).relays()
        chosen: dict[str, str] = {}

        def save(v: dict[str, str]) -> None:
            from hearth.protocol.invite_code import parse_code

            participation.require_admin(self.node, self.group_id, "join a neighbourhood")
            parse_code(v["code"])  # a misheard code is said here, in the form
            if not (v["relay"] or relays):
                raise HearthError("Give the relay's address the other admin gave you (ws://…).")
            chosen["relay"] = check_relay_url(v["relay"]) if v["relay"] else relays[0]

        def then(v: dict[str, str] | None) -> None:
            if v is not None:
                self.push_screen(
                    NeighbourhoodJoinScreen(self.node, self.group_id, chosen["relay"], v["code"])
                )

        self.ask(
            "Join a neighbourhood",
            [
                Field(
                    "code",
                    "The code the other group's admin read out",
                    placeholder="4-amber-kettle-sloe",
                ),
                Field(
                    "relay",
                    "Their relay's address" + (" (empty: your group's)" if relays else ""),
                    placeholder=relays[0] if relays else "ws://relay.example.org:8765",
                ),
            ],
            save,
            ok="Join",
            after=then,
        )

    # --- neighbours ---------------------------------------------------------------------

    def action_offer(self) -> None:
        """Offer part of a resource the group shares to neighbour groups."""
        view = self.node.view(self.group_id)
        shareable = [(r.name, r.id) for r in view.resources() if r.shareable and r.quantity > 0]
        if not shareable:
            self.notify(
                "Nothing is marked as shareable with other groups yet: edit a resource "
                "(e on Resources) and say yes to sharing.",
                severity="warning",
                timeout=8,
            )
            return

        def save(v: dict[str, str]) -> None:
            quantity = parse_quantity(v["quantity"])
            until = parse_date(v["until"], now_ms=self.node.clock.now_ms()) if v["until"] else None
            self.attempt(
                lambda: participation.add_offer(
                    self.node, self.group_id, v["resource"], quantity, until=until, note=v["note"]
                ),
                "Offered; neighbour groups see it once it has been shared.",
            )

        self.ask(
            "Offer to neighbour groups",
            [
                Choice("resource", "What", shareable, value=_only(shareable)),
                Field("quantity", "How much", "1"),
                Field("until", "Until (optional)", placeholder="2026-12-24, +2w"),
                Field("note", "Note (optional)"),
            ],
            save,
            ok="Offer",
        )

    def action_ask(self) -> None:
        """Ask the group behind the offer under the cursor for some of it."""
        offer_id = self._selected("offer-table")
        found = {o.id: (o, ours) for o, ours in self.snapshot().neighbours.offers}
        if offer_id is None or offer_id not in found:
            self.notify("Pick an offer first (arrow keys).", severity="warning")
            return
        offer, ours = found[offer_id]
        if ours:
            self.notify("That is our own group's offer.", severity="warning")
            return

        def save(v: dict[str, str]) -> None:
            quantity = parse_quantity(v["quantity"])
            self.attempt(
                lambda: participation.request(
                    self.node, self.group_id, offer.id, quantity, note=v["note"]
                ),
                f"Asked {offer.group_name}; their answer comes once it has been shared.",
            )

        self.ask(
            f"Ask {offer.group_name} for {offer.what}",
            [
                Field("quantity", "How much", str(offer.quantity)),
                Field("note", "Note (optional)"),
            ],
            save,
            ok="Ask",
        )

    def _answer(self, *, accept: bool) -> None:
        request_id = self._selected("request-table")
        found = {r.id: (r, o, d) for r, o, d in self.snapshot().neighbours.requests}
        if request_id is None or request_id not in found:
            self.notify("Pick a request first (arrow keys, lower table).", severity="warning")
            return
        item, offer, direction = found[request_id]
        if direction != "incoming" or item.status != "pending":
            self.notify("Only a request to us that waits for an answer can be answered.")
            return
        self.attempt(
            lambda: participation.answer(self.node, self.group_id, item.id, accept=accept),
            f"Agreed to give {offer.what} to {item.group_name}: it is on Promises now."
            if accept
            else f"Said no to {item.group_name}.",
        )

    def _take_back_offer(self) -> None:
        offer_id = self._selected("offer-table")
        found = {o.id: (o, ours) for o, ours in self.snapshot().neighbours.offers}
        if offer_id is None or offer_id not in found or not found[offer_id][1]:
            self.notify("Pick one of our own offers first.", severity="warning")
            return
        offer = found[offer_id][0]

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.attempt(
                    lambda: participation.withdraw(self.node, self.group_id, offer.id),
                    f"Took back the offer of {offer.what}.",
                )

        self.push_screen(
            ConfirmScreen(
                f"Take back the offer of {offer.what}?",
                "Neighbour groups stop seeing it; what was already agreed stays agreed.",
                yes="Take back",
            ),
            confirmed,
        )


def _only(options: list[tuple[str, str]]) -> str | None:
    """The value of the one option there is, else ``None`` (the member picks)."""
    return options[0][1] if len(options) == 1 else None
