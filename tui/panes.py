"""The app's tabs: each shows one part of the group's ledger and refreshes from a view.

A pane only displays; what a key does to the ledger is the app's job (``tui/app.py``).
Every table keeps its cursor on the same entry across refreshes, so a change arriving
from another member never moves what the member is looking at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import CellDoesNotExist

from hearth.ledger.conflicts import find_conflicts
from hearth.ledger.history import history
from hearth.ledger.model import Commitment, Kind, NeedStatus, Resource
from hearth.ledger.present import (
    amount,
    commitment_amount,
    commitment_rows,
    need_rows,
    resource_rows,
)
from hearth.ledger.view import LedgerView
from hearth.neighbourhood.matching import Matcher
from hearth.values import counted, format_date, format_time
from tui.state import Neighbourhoods, SyncState
from tui.wording import app_words

__all__ = [
    "CommitmentsPane",
    "ConflictsPane",
    "HistoryPane",
    "MembersPane",
    "NeedsPane",
    "NeighboursPane",
    "Overview",
    "Pane",
    "ResourcesPane",
    "Snapshot",
]

WEEK_MS = 7 * 24 * 3600 * 1000
MAX_ROWS = 400  # more than a screen can show, few enough to redraw at once; search narrows


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a pane needs to draw: the view, who I am, the time, the sharing state."""

    view: LedgerView
    me: str  # my member id
    now_ms: int
    sync: SyncState
    neighbours: Neighbourhoods


class Pane(Protocol):
    """A tab's content: it draws itself from a :class:`Snapshot`."""

    def show(self, snap: Snapshot) -> None:
        """Draw from the ledger as the snapshot has it."""


_FEW_CHANGES = 25  # rows added or removed at most for a table to be changed in place


def fill(table: DataTable[Any], rows: Sequence[tuple[str, Sequence[str | Text]]]) -> None:
    """Show these rows (keyed by entry id) in this order, keeping the cursor on the same
    entry. When only a few rows come or go — a change arriving from someone else — the
    table is changed in place: laying out hundreds of new rows is what would take long."""
    selected = selected_key(table)
    # Text, not str: a name is shown as written (a str would be read as markup, which is
    # also the costliest part of laying out a row).
    wanted = {key: [Text(c) if isinstance(c, str) else c for c in cells] for key, cells in rows}
    current = [str(row.key.value) for row in table.ordered_rows]
    if table.row_count and len(set(current) ^ set(wanted)) <= _FEW_CHANGES:
        _change_in_place(table, current, wanted)
    else:
        table.clear()
        for key, cells in wanted.items():
            table.add_row(*cells, key=key)
    if selected is not None and selected in table.rows:
        table.move_cursor(row=table.get_row_index(selected), animate=False)


def _change_in_place(
    table: DataTable[Any], current: list[str], wanted: dict[str, list[Any]]
) -> None:
    columns = [column.key for column in table.ordered_columns]
    for key in set(current) - set(wanted):
        table.remove_row(key)
    for key, cells in wanted.items():
        if key not in table.rows:
            table.add_row(*cells, key=key)
            continue
        for column, old, new in zip(columns, table.get_row(key), cells, strict=True):
            if old != new:
                table.update_cell(key, column, new, update_width=True)
    if [str(row.key.value) for row in table.ordered_rows] != list(wanted):
        # The table sorts by what its key function makes of a row's cells: the id cell
        # (the first), known here by identity, stands for the row's place.
        place = {id(table.get_row(key)[0]): n for n, key in enumerate(wanted)}
        table.sort(key=lambda cells: place[id(cells[0])])


def selected_key(table: DataTable[Any]) -> str | None:
    """The entry id of the row under the cursor, if there is one."""
    if table.row_count == 0:
        return None
    try:
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except CellDoesNotExist:
        return None
    return str(key) if key is not None else None


def _overdue(c: Commitment, now_ms: int) -> bool:
    return c.status.is_open and c.due is not None and c.due < now_ms


_GETTING_STARTED = Text.assemble(
    ("Getting started\n", "bold"),
    "  Add what the group shares — tools, food, rooms, skills: press 2, then a.\n",
    "  Note something someone needs: press 3, then a.\n",
    "  Bring the others in: press 5, then i.\n",
)
"""What an empty group's overview says instead of nothing."""


class Overview(VerticalScroll):
    """What is due, what I promised, what happened lately, and whether we are in sync."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.shown_once = False

    def compose(self) -> ComposeResult:
        yield Static(id="sync-line")
        yield Static(id="attention")
        yield Static(id="start")
        yield Static(id="due")
        yield Static(id="mine")
        yield Static(id="recent")

    def show(self, snap: Snapshot) -> None:
        view = snap.view
        sync = snap.sync
        line = Text(sync.words, style="bold green" if sync.online else "bold yellow")
        if sync.waiting:
            line.append(f" · {sync.waiting} of your changes waiting to go out", style="yellow")
        self.query_one("#sync-line", Static).update(line)

        empty = not any(view.tables[t] for t in ("resources", "needs", "commitments"))
        start = self.query_one("#start", Static)
        start.update(_GETTING_STARTED if empty else "")
        start.display = empty

        if self.shown_once:
            self._attention(snap, len(find_conflicts(view)))
        else:
            # The first screen comes first: looking for problems in a large ledger takes
            # a while, and their count follows straight after.
            self.shown_once = True
            self._attention(snap, None)
            self.call_after_refresh(lambda: self._attention(snap, len(find_conflicts(view))))
        self._commitments_and_recent(snap)

    def _attention(self, snap: Snapshot, problems: int | None) -> None:
        """What needs the member: problems (once counted), held-back changes, requests."""
        view, sync = snap.view, snap.sync
        attention = []
        if problems:
            attention.append(f"{counted(problems, 'problem')} to sort out — see Problems (6)")
        if sync.gaps:
            attention.append(
                f"{counted(sync.gaps, 'change')} from others "
                f"{'is' if sync.gaps == 1 else 'are'} waiting for earlier ones"
            )
        if sync.taken_back:
            attention.append(f"Taken back out: {sync.taken_back[0]}")
        if sync.joining:
            attention.append(sync.joining)
        for alert in sync.admin_alerts:
            attention.append(f"For you as an admin: {alert.what} — see Problems (6)")
        asked = [
            r
            for r, _, way in snap.neighbours.requests
            if way == "incoming" and r.status == "pending"
        ]
        if asked:
            attention.append(
                f"{counted(len(asked), 'request')} from neighbour groups "
                f"{'waits' if len(asked) == 1 else 'wait'} for an answer — see Neighbours (8)"
            )
        me = view.tables["members"].get(snap.me)
        if me is not None and view.member(snap.me).status != "active":
            attention.append(
                "You are no longer in this group: you can read what you had, "
                "but nothing you write here counts."
            )
        shown = self.query_one("#attention", Static)
        shown.update(Text("\n".join(attention), style="bold red") if attention else "")
        shown.display = bool(attention)  # no blank lines where nothing needs the member

    def _commitments_and_recent(self, snap: Snapshot) -> None:
        view, now = snap.view, snap.now_ms
        open_ones = [c for c in view.commitments() if c.status.is_open]
        # Promises, loans and needs with a date, the late ones first.
        dated = [(c.due, self._line(view, c)) for c in open_ones if c.due is not None]
        dated += [
            (
                r.lent_until,
                f"{r.name} back from {' & '.join(view.member_name(m) for m in r.lent_to)}",
            )
            for r in view.resources()
            if r.lent_to and r.lent_until is not None
        ]
        dated += [
            (n.by, f"{n.what} needed by {view.member_name(n.created_by)}")
            for n in view.needs()
            if n.status is NeedStatus.OPEN and n.by is not None
        ]
        dated.sort()
        overdue = [line for when, line in dated if when < now]
        soon = [(when, line) for when, line in dated if now <= when < now + WEEK_MS]
        due = Text("Due\n", style="bold")
        for line in overdue:
            due.append(f"  OVERDUE  {line}\n", style="red")
        for when, line in soon:
            due.append(f"  {format_date(when)}  {line}\n")
        if not overdue and not soon:
            due.append("  Nothing due this week.\n", style="dim")
        self.query_one("#due", Static).update(due)

        mine = [c for c in open_ones if snap.me in (c.giver, c.receiver)]
        text = Text("My commitments\n", style="bold")
        for c in mine:
            text.append(f"  {self._line(view, c)} ({c.status.value})\n")
        if not mine:
            text.append("  None open.\n", style="dim")
        self.query_one("#mine", Static).update(text)

        recent = Text("Recently\n", style="bold")
        items = sorted(history(view), key=lambda h: h.at, reverse=True)[:8]
        for item in items:
            who = view.member_name(item.by)
            recent.append(f"  {format_time(item.at)}  {who} {item.what}\n")
        if not items:
            recent.append("  Nothing yet.\n", style="dim")
        self.query_one("#recent", Static).update(recent)

    @staticmethod
    def _line(view: LedgerView, c: Commitment) -> str:
        giver, receiver = view.giver_name(c), view.receiver_name(c)
        return f"{giver} → {receiver}: {c.what} {commitment_amount(view, c)}".rstrip()


class ResourcesPane(Vertical):
    """The group's things, searchable, filterable by kind, sortable."""

    KINDS: tuple[str, ...] = ("all", *(k.value for k in Kind))
    SORTS: tuple[str, ...] = ("name", "kind", "holder")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.kind_filter = "all"
        self.sort = "name"

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search resources… ( / )", id="resource-search", compact=True)
        yield Static(id="resource-filters", classes="hint")
        table: DataTable[str] = DataTable(
            id="resource-table", cursor_type="row", zebra_stripes=True
        )
        table.add_columns("id", "name", "kind", "quantity", "with", "where")
        yield table

    def show(self, snap: Snapshot) -> None:
        search = self.query_one("#resource-search", Input).value.strip().casefold()
        found: list[Resource] = [
            r
            for r in snap.view.resources()
            if (self.kind_filter == "all" or r.kind.value == self.kind_filter)
            and (not search or search in f"{r.name} {r.location} {r.note}".casefold())
        ]
        if self.sort == "kind":
            found.sort(key=lambda r: (r.kind.value, r.name.casefold()))
        elif self.sort == "holder":
            found.sort(key=lambda r: (snap.view.member_name(r.custodian), r.name.casefold()))
        shown = found[:MAX_ROWS]
        rows = resource_rows(snap.view, shown)
        fill(
            self.query_one("#resource-table", DataTable),
            [(r.id, cells) for r, cells in zip(shown, rows, strict=True)],
        )
        count = f"{len(found)} shown"
        if len(found) > len(shown):
            count = f"the first {len(shown)} of {len(found)} shown: type to search"
        self.query_one("#resource-filters", Static).update(
            f"kind: {self.kind_filter} (k)   sorted by: {self.sort} (s)   {count}"
        )


class NeedsPane(Vertical):
    """What members need: open ones, mine, or all."""

    FILTERS = ("open", "mine", "all")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.filter = "open"

    def compose(self) -> ComposeResult:
        yield Static(id="needs-filter", classes="hint")
        table: DataTable[str] = DataTable(id="need-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("id", "what", "quantity", "by", "who", "status", "could be met by")
        yield table

    def show(self, snap: Snapshot) -> None:
        needs = snap.view.needs()
        if self.filter == "open":
            needs = [n for n in needs if n.status is NeedStatus.OPEN]
        elif self.filter == "mine":
            needs = [n for n in needs if n.created_by == snap.me]
        matcher = Matcher(snap.view.resources(), snap.neighbours.others_offers())
        rows = [
            [*cells, "; ".join(f"{m.what} ({m.where})" for m in matcher.for_need(n))]
            for n, cells in zip(needs, need_rows(snap.view, needs), strict=True)
        ]
        fill(
            self.query_one("#need-table", DataTable),
            [(n.id, cells) for n, cells in zip(needs, rows, strict=True)],
        )
        self.query_one("#needs-filter", Static).update(f"showing: {self.filter} (f)")


class CommitmentsPane(Vertical):
    """Promises between members: open ones, mine, overdue, or all."""

    FILTERS = ("open", "mine", "overdue", "all")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.filter = "open"

    def compose(self) -> ComposeResult:
        yield Static(id="commitments-filter", classes="hint")
        table: DataTable[str] = DataTable(id="promise-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("id", "what", "quantity", "from", "to", "due", "status")
        yield table

    def show(self, snap: Snapshot) -> None:
        found = snap.view.commitments()
        if self.filter == "open":
            found = [c for c in found if c.status.is_open]
        elif self.filter == "mine":
            found = [c for c in found if snap.me in (c.giver, c.receiver)]
        elif self.filter == "overdue":
            found = [c for c in found if _overdue(c, snap.now_ms)]
        rows = commitment_rows(snap.view, found, snap.now_ms)
        styled = [
            [Text(cell, style="bold red") if _overdue(c, snap.now_ms) else cell for cell in cells]
            for c, cells in zip(found, rows, strict=True)
        ]
        fill(
            self.query_one("#promise-table", DataTable),
            [(c.id, cells) for c, cells in zip(found, styled, strict=True)],
        )
        self.query_one("#commitments-filter", Static).update(f"showing: {self.filter} (f)")


class MembersPane(Vertical):
    """Who is in the group, their role and devices."""

    def compose(self) -> ComposeResult:
        table: DataTable[str] = DataTable(id="member-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("name", "role", "devices", "joined")
        yield table

    def show(self, snap: Snapshot) -> None:
        members = snap.view.members()
        fill(
            self.query_one("#member-table", DataTable),
            [
                (
                    m.id,
                    [
                        m.name + (" (you)" if m.id == snap.me else ""),
                        m.role.value,
                        str(len(m.devices)),
                        format_date(m.joined_at),
                    ],
                )
                for m in members
            ],
        )


class ConflictsPane(Vertical):
    """Problems that merging cannot settle, each with what to do about it."""

    def compose(self) -> ComposeResult:
        yield Static(
            "Each of these is sorted out by an ordinary change (return, edit, cancel…).",
            classes="hint",
        )
        table: DataTable[str] = DataTable(id="problem-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("problem", "what to do")
        yield table

    def show(self, snap: Snapshot) -> None:
        alerts = [
            (f"alert-{i}", [alert.what[:1].upper() + alert.what[1:], app_words(alert.advice)])
            for i, alert in enumerate(snap.sync.admin_alerts)
        ]
        fill(
            self.query_one("#problem-table", DataTable),
            alerts + [(c.id, [c.summary, app_words(c.advice)]) for c in find_conflicts(snap.view)],
        )


class HistoryPane(Vertical):
    """Who changed what, when: newest first."""

    def compose(self) -> ComposeResult:
        table: DataTable[str] = DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("when", "who", "what")
        yield table

    def show(self, snap: Snapshot) -> None:
        items = sorted(history(snap.view), key=lambda h: h.at, reverse=True)[:MAX_ROWS]
        rows = []
        repeats: dict[str, int] = {}
        for item in items:  # a key that stays put when newer lines arrive above it
            base = f"{item.at}-{item.entry}"
            repeats[base] = repeats.get(base, 0) + 1
            cells = [format_time(item.at), snap.view.member_name(item.by), item.what]
            rows.append((f"{base}-{repeats[base]}", cells))
        fill(self.query_one("#history-table", DataTable), rows)


class NeighboursPane(Vertical):
    """Neighbour groups: what they offer, what we offer, and requests and handoffs."""

    def compose(self) -> ComposeResult:
        yield Static(id="neighbour-summary")
        yield Static(
            "Offered — t: ask for it · a: offer something of ours · x: take back our offer",
            classes="hint",
        )
        offers: DataTable[str] = DataTable(id="offer-table", cursor_type="row", zebra_stripes=True)
        offers.add_columns("group", "what", "quantity", "until", "note")
        yield offers
        yield Static("Asked for and handed over — y: accept · n: decline", classes="hint")
        asked: DataTable[str] = DataTable(id="request-table", cursor_type="row", zebra_stripes=True)
        asked.add_columns("", "what", "quantity", "group", "where it stands")
        yield asked

    def show(self, snap: Snapshot) -> None:
        hood = snap.neighbours
        summary = (
            "\n".join(f"Neighbours in {line}" for line in hood.summary)
            if hood.summary
            else "Your group shares with no other group yet. An admin can start a "
            "neighbourhood, or join one with the code another group's admin reads out: "
            "ctrl+p, Start a neighbourhood or Join a neighbourhood."
        )
        # Text, not markup: other groups name groups, and a record carries any text.
        self.query_one("#neighbour-summary", Static).update(Text(summary))
        fill(
            self.query_one("#offer-table", DataTable),
            [
                (
                    o.id,
                    [
                        o.group_name + (" (us)" if ours else ""),
                        o.what,
                        amount(o.quantity, o.unit),
                        format_date(o.until) if o.until else "",
                        o.note,
                    ],
                )
                for o, ours in hood.offers
            ],
        )
        rows = []
        for item, offer, direction in hood.requests:
            incoming = direction == "incoming"
            stands = {
                "pending": "waiting for our answer" if incoming else "waiting for their answer",
                "accepted": "handed over"
                if item.fulfilled
                else ("handed over, they have to confirm" if incoming else "handed over: confirm")
                if item.given
                else "agreed, to hand over",
                "declined": "declined",
            }[item.status]
            rows.append(
                (
                    item.id,
                    [
                        "they ask" if incoming else "we ask",
                        offer.what,
                        amount(item.quantity, offer.unit),
                        item.group_name if incoming else offer.group_name,
                        Text(stands, style="bold")
                        if incoming and item.status == "pending"
                        else stands,
                    ],
                )
            )
        fill(self.query_one("#request-table", DataTable), rows)
