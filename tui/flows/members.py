"""The Members tab and this member's devices: inviting, admins, removing, leaving."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from hearth.errors import HearthError
from hearth.group import member_changes
from hearth.ledger.ledger import check_relay_url
from hearth.ledger.present import device_name
from hearth.protocol.invite_code import JoinerIntroduced
from hearth.values import format_date
from tui.flows.base import Done, FlowBase
from tui.screens.confirm import ConfirmScreen
from tui.screens.detail import DetailScreen
from tui.screens.form import Choice, Field, FormScreen, Values
from tui.screens.invite import InviteScreen, device_words

__all__ = ["MemberFlows"]


@dataclass(frozen=True, slots=True)
class _InviteVia:
    """How to invite, once the form that asks for a relay is saved: through ``relay``,
    or with a token if there is none."""

    relay: str | None


def _pick(key: str, v: Values) -> str:
    """The one value a chooser form is for."""
    return v[key]


class MemberFlows(FlowBase):
    """The keys of the Members tab, and the commands about devices and leaving."""

    def member_under_cursor(self) -> str | None:
        """The member picked on the Members tab; says so if there is none."""
        member_id = self.selected("member-table")
        if member_id is None:
            self.notify("Pick a member first (arrow keys).", severity="warning")
        return member_id

    def show_member(self) -> None:
        """A member's role and devices."""
        member_id = self.member_under_cursor()
        if member_id is None:
            return
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

    def remove_member(self) -> None:
        """Remove the member under the cursor, after asking."""
        member_id = self.member_under_cursor()
        if member_id is None:
            return
        name = self.node.view(self.group_id).member_name(member_id)
        self.push_screen(
            ConfirmScreen(
                f"Remove {name} from the group?",
                "From now on they see nothing new the group writes, and nothing they write "
                "counts. What they saw before stays with them. This cannot be undone; "
                "to have them back, invite them again.",
                yes="Remove",
            ),
            partial(self._remove_member, member_id, name),
        )

    def _remove_member(self, member_id: str, name: str, yes: bool | None) -> None:
        if yes:
            self.attempt(
                lambda: member_changes.remove_member(self.node, self.group_id, member_id),
                f"{name} is out of the group.",
            )

    def action_role(self) -> None:
        member_id = self.member_under_cursor()
        if member_id is None:
            return
        m = self.node.view(self.group_id).member(member_id)
        if m.role.value == "admin":
            self.attempt(
                lambda: member_changes.demote(self.node, self.group_id, member_id),
                f"{m.name} is no longer an admin.",
            )
        else:
            self.attempt(
                lambda: member_changes.promote(self.node, self.group_id, member_id),
                f"{m.name} is now an admin: they can invite and remove members.",
            )

    def action_invite(self) -> None:
        relays = self.node.view(self.group_id).relays()
        if relays:
            self.push_screen(InviteScreen(self.node, relays[0]))
            return
        # No relay to meet through yet: ask for one first, so the invite can be a code.
        form = FormScreen(
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
            self._relay_to_invite_through,
            ok="Invite",
        )
        self.push_screen(form, self._invite_via)

    def _relay_to_invite_through(self, v: Values) -> _InviteVia:
        if not v["url"]:
            return _InviteVia(None)
        url = check_relay_url(v["url"])
        self.edit(lambda ledger: ledger.add_relay(url))
        return _InviteVia(url)

    def _invite_via(self, via: _InviteVia | None) -> None:
        if via is None:
            return
        if via.relay is None:
            self._invite_by_token()
            return
        self.done(Done(f"The group now syncs through {via.relay}."))
        self.push_screen(InviteScreen(self.node, via.relay))

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
        self.push_screen(
            InviteScreen(
                self.node, relays[0], words=device_words(relays[0]), make_token=self._device_token
            )
        )

    def _device_token(self, event: JoinerIntroduced) -> str:
        return member_changes.new_device_token(self.node, event.device_key)

    def action_remove_device(self) -> None:
        """Stop a device writing for its member (what `hearth device remove` does)."""
        view = self.node.view(self.group_id)
        devices = [
            (f"{m.name}: {device_name(view, m.id, d)}", d)
            for m in view.members()
            for d in m.devices
        ]
        self.push_screen(
            FormScreen(
                "Remove a device",
                [Choice("device", "Which device", devices)],
                partial(_pick, "device"),
                ok="Remove",
            ),
            partial(self._confirm_device_removal, {d: text for text, d in devices}),
        )

    def _confirm_device_removal(self, labels: dict[str, str], device: str | None) -> None:
        if device is None:
            return
        label = labels[device]
        self.push_screen(
            ConfirmScreen(
                f"Remove {label}?",
                "Nothing it writes from now on counts, and it gets nothing new. A device "
                "found again joins like a new one.",
                yes="Remove it",
            ),
            partial(self._remove_device, device, label),
        )

    def _remove_device(self, device: str, label: str, yes: bool | None) -> None:
        if yes:
            self.attempt(
                lambda: member_changes.remove_device(self.node, self.group_id, device),
                f"Removed {label}; the group has a new key without it.",
            )

    def action_leave(self) -> None:
        """Leave the group (what `hearth leave` does), after asking."""
        name = self.node.view(self.group_id).group_name
        self.push_screen(
            ConfirmScreen(
                f"Leave '{name}'?",
                "Nothing you write there will count any more; to come back, an admin must "
                "invite you again.",
                yes="Leave",
            ),
            partial(self._leave, name),
        )

    def _leave(self, name: str, yes: bool | None) -> None:
        if yes:
            self.attempt(
                lambda: member_changes.leave(self.node, self.group_id),
                f"You have left '{name}'; its history stays readable here.",
            )
