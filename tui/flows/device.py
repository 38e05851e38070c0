"""This device and the group's settings: relays, peers, groups, export, syncing now and
checking this device."""

from __future__ import annotations

from functools import partial

from textual import work

from hearth.errors import HearthError
from hearth.ledger.ledger import check_relay_url
from hearth.node.node import Node
from tui.flows.base import Done, FlowBase
from tui.screens.confirm import ConfirmScreen
from tui.screens.detail import DetailScreen
from tui.screens.form import Choice, Field, FormScreen, Values

__all__ = ["DeviceFlows"]

SYNC_TIMEOUT_S = 30.0  # "Sync now" gives up on a relay or peer after this long (as `hearth sync`)
CHECK_TIMEOUT_S = 10.0  # "Check this device" waits this long for each (as `hearth doctor`)


def _pick(key: str, v: Values) -> str:
    """The one value a chooser form is for."""
    return v[key]


class DeviceFlows(FlowBase):
    """The commands (ctrl+p) about relays, peers, groups and this device."""

    def action_add_relay(self) -> None:
        """List a relay the group syncs through (what `hearth relay add` does)."""
        self.ask(
            "Add a relay",
            [Field("url", "Its address", placeholder="ws://relay.example.org:8765")],
            self._add_relay,
            ok="Add",
        )

    def _add_relay(self, v: Values) -> Done:
        url = check_relay_url(v["url"])
        return self.saved(
            lambda ledger: ledger.add_relay(url), f"The group now syncs through {url}."
        )

    def action_remove_relay(self) -> None:
        """Stop syncing through one of the group's relays (what `hearth relay remove` does);
        removing the only one asks first, as the command does."""
        relays = self.node.view(self.group_id).relays()
        if not relays:
            self.notify("The group lists no relay.", severity="warning")
            return
        self.push_screen(
            FormScreen(
                "Remove a relay",
                [Choice("url", "Which relay", [(u, u) for u in relays])],
                partial(_pick, "url"),
                ok="Remove",
            ),
            partial(self._relay_chosen, len(relays)),
        )

    def _relay_chosen(self, listed: int, url: str | None) -> None:
        if url is None:
            return
        if listed > 1:
            self._remove_relay(url, True)
            return
        self.push_screen(
            ConfirmScreen(
                f"{url} is the group's only relay. Remove it?",
                "Without one, members sync only on the same network or by file, and "
                "invites are long tokens instead of codes. Add another relay first if "
                "you can.",
                yes="Remove it",
            ),
            partial(self._remove_relay, url),
        )

    def _remove_relay(self, url: str, yes: bool | None) -> None:
        if yes:
            self.attempt_edit(
                lambda ledger: ledger.remove_relay(url),
                f"The group no longer syncs through {url}.",
            )

    def show_group(self, group_id: str | None) -> None:
        """Make ``group_id`` the group the app shows (and the commands' current one)."""
        if group_id is None:
            return
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
            FormScreen(
                "Switch group",
                [Choice("group", "Which group", groups)],
                partial(_pick, "group"),
                ok="Show it",
            ),
            self.show_group,
        )

    def action_new_group(self) -> None:
        """Start a second group on this device (what `hearth group create --another`
        does) and show it."""
        self.ask("Start another group", [Field("name", "Its name")], self._new_group, ok="Start")

    def _new_group(self, v: Values) -> Done:
        self.show_group(self.node.create_group(v["name"]).id)
        return Done(f"Started '{v['name']}'; you are its first admin.")

    def action_export(self) -> None:
        """Write the group's ledger to a file (what `hearth export -o FILE` does)."""
        formats = [
            ("CSV, for a spreadsheet", "csv"),
            ("JSON", "json"),
            ("ValueFlows JSON-LD, for other economic tools", "valueflows"),
        ]
        self.ask(
            "Export the ledger",
            [
                Choice("format", "As", formats),
                Field("file", "To the file", placeholder="~/ledger.csv"),
            ],
            self._export,
            ok="Export",
        )

    async def _export(self, v: Values) -> Done:
        if not v["file"]:
            raise HearthError("Give the file to write, e.g. ~/ledger.csv.")
        # A large ledger takes a while to turn into text: in a worker thread.
        await self.in_background(partial(_export_to, self.group_id, v["format"], v["file"]))
        return Done(f"Wrote {v['file']}.")

    def action_add_peer(self) -> None:
        """Sync with another device directly, as well as through relays (what `hearth peer
        add` does)."""
        self.ask(
            "Add a peer",
            [Field("url", "Its address", placeholder="ws://192.168.1.20:8766")],
            self._add_peer,
            ok="Add",
        )

    def _add_peer(self, v: Values) -> Done:
        from hearth.net.dialled_peers import add_peer

        if not v["url"]:
            raise HearthError(
                "Give the peer's address: what its `hearth serve --listen` says it listens "
                "on, e.g. ws://192.168.1.20:8766."
            )
        url = add_peer(self.node.store, v["url"], self.node.clock.now_ms())
        return Done(f"This device now syncs with {url} directly.")

    def action_list_peers(self) -> None:
        """The devices this one syncs with directly (what `hearth peer list` does)."""
        from hearth.net.dialled_peers import list_peers

        peers = list_peers(self.node.store)
        text = "\n".join(peers) if peers else "No peers yet: ctrl+p, Add a peer."
        self.push_screen(DetailScreen(f"Peers of this device\n\n{text}", markup=False))

    def action_remove_peer(self) -> None:
        """Stop syncing with a device directly (what `hearth peer remove` does)."""
        from hearth.net.dialled_peers import list_peers

        peers = list_peers(self.node.store)
        if not peers:
            self.notify("This device has no peers.", severity="warning")
            return
        self.push_screen(
            FormScreen(
                "Remove a peer",
                [Choice("url", "Which peer", [(p, p) for p in peers])],
                partial(_pick, "url"),
            ),
            self._remove_peer,
        )

    def _remove_peer(self, url: str | None) -> None:
        from hearth.net.dialled_peers import remove_peer

        if url is not None:
            self.attempt(
                lambda: remove_peer(self.node.store, url),
                f"This device no longer syncs with {url} directly.",
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


def _export_to(group_id: str, form: str, file: str, node: Node) -> None:
    """Write a group's ledger to ``file`` as CSV, JSON or ValueFlows (``form``)."""
    from hearth.files import write_file
    from hearth.ledger.export import export_csv, export_json, export_valueflows

    view = node.view(group_id)
    if form == "csv":
        text = export_csv(view)
    elif form == "valueflows":
        text = export_valueflows(view, group_id, view.group_name)
    else:
        text = export_json(view, view.group_name)
    write_file(file, text if text.endswith("\n") else text + "\n")
