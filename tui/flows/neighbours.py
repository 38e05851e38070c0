"""The Neighbours tab and neighbourhoods: starting, inviting, joining; offers, requests
and answers between groups."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from hearth.errors import HearthError
from hearth.ledger.ledger import check_relay_url
from hearth.neighbourhood import participation
from hearth.neighbourhood.participation import Membership
from hearth.neighbourhood.rules import Offer
from hearth.protocol.invite_code import JoinerIntroduced
from hearth.values import parse_date, parse_quantity
from tui.flows.base import Done, FlowBase
from tui.screens.confirm import ConfirmScreen
from tui.screens.form import Choice, Field, FormScreen, Values
from tui.screens.invite import InviteScreen, InviteWords
from tui.screens.neighbourhood_join import NeighbourhoodJoinScreen

__all__ = ["NeighbourFlows"]


@dataclass(frozen=True, slots=True)
class _JoinWith:
    """A neighbourhood's code, checked, and the relay to meet its admin through."""

    code: str
    relay: str


def _only(options: list[tuple[str, str]]) -> str | None:
    """The value of the one option there is, else ``None`` (the member picks)."""
    return options[0][1] if len(options) == 1 else None


class NeighbourFlows(FlowBase):
    """The keys of the Neighbours tab, and the neighbourhood commands."""

    def action_start_neighbourhood(self) -> None:
        """Start a neighbourhood with this group in it (what `hearth neighbourhood create`
        does); other groups join with a code from `hearth neighbourhood invite`."""
        self.ask(
            "Start a neighbourhood",
            [Field("name", "Its name", placeholder="e.g. Eastside")],
            self._start_neighbourhood,
            ok="Start",
        )

    def _start_neighbourhood(self, v: Values) -> Done:
        participation.create(self.node, self.group_id, v["name"])
        return Done(
            f"Started the neighbourhood '{v['name']}'. Invite other groups with "
            "`hearth neighbourhood invite`."
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
        words = InviteWords(
            f"Invite a group into {hood.name}",
            f"Read this code to the other group's admin, with the relay's address: "
            f"{relays[0]}\nThey choose Join a neighbourhood (ctrl+p) and type both (or run: "
            f"hearth neighbourhood join CODE --relay {relays[0]}).",
            lambda name: f"The group '{name}' wants to join {hood.name}. Let it in? (y or n)",
            lambda name: f"'{name}' is in '{hood.name}' now.",
        )
        self.push_screen(
            InviteScreen(
                self.node, relays[0], words=words, make_token=partial(self._admit_group, hood)
            )
        )

    def _admit_group(self, hood: Membership, event: JoinerIntroduced) -> str:
        participation.admit(self.node, hood, event.device_key, event.name)
        return participation.encode_token(hood)

    def action_join_neighbourhood(self) -> None:
        """Take the group into a neighbourhood with a code (`hearth neighbourhood join`)."""
        relays = self.node.view(self.group_id).relays()
        form = FormScreen(
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
            partial(self._checked_join, relays),
            ok="Join",
        )
        self.push_screen(form, self._join)

    def _checked_join(self, relays: list[str], v: Values) -> _JoinWith:
        from hearth.protocol.invite_code import parse_code

        participation.require_admin(self.node, self.group_id, "join a neighbourhood")
        parse_code(v["code"])  # a misheard code is said here, in the form
        if not (v["relay"] or relays):
            raise HearthError("Give the relay's address the other admin gave you (ws://…).")
        return _JoinWith(v["code"], check_relay_url(v["relay"]) if v["relay"] else relays[0])

    def _join(self, join: _JoinWith | None) -> None:
        if join is not None:
            self.push_screen(
                NeighbourhoodJoinScreen(self.node, self.group_id, join.relay, join.code)
            )

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
        self.ask(
            "Offer to neighbour groups",
            [
                Choice("resource", "What", shareable, value=_only(shareable)),
                Field("quantity", "How much", "1"),
                Field("until", "Until (optional)", placeholder="2026-12-24, +2w"),
                Field("note", "Note (optional)"),
            ],
            self._offer,
            ok="Offer",
        )

    def _offer(self, v: Values) -> Done:
        quantity = parse_quantity(v["quantity"])
        until = parse_date(v["until"], now_ms=self.node.clock.now_ms()) if v["until"] else None
        participation.add_offer(
            self.node, self.group_id, v["resource"], quantity, until=until, note=v["note"]
        )
        return Done("Offered; neighbour groups see it once it has been shared.")

    def action_ask(self) -> None:
        """Ask the group behind the offer under the cursor for some of it."""
        offer_id = self.selected("offer-table")
        found = {o.id: (o, ours) for o, ours in self.snapshot().neighbours.offers}
        if offer_id is None or offer_id not in found:
            self.notify("Pick an offer first (arrow keys).", severity="warning")
            return
        offer, ours = found[offer_id]
        if ours:
            self.notify("That is our own group's offer.", severity="warning")
            return
        self.ask(
            f"Ask {offer.group_name} for {offer.what}",
            [
                Field("quantity", "How much", str(offer.quantity)),
                Field("note", "Note (optional)"),
            ],
            partial(self._request, offer),
            ok="Ask",
        )

    def _request(self, offer: Offer, v: Values) -> Done:
        quantity = parse_quantity(v["quantity"])
        participation.request(self.node, self.group_id, offer.id, quantity, note=v["note"])
        return Done(f"Asked {offer.group_name}; their answer comes once it has been shared.")

    def answer_request(self, *, accept: bool) -> None:
        """Accept or decline the request to us under the cursor."""
        request_id = self.selected("request-table")
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

    def take_back_offer(self) -> None:
        """Withdraw our offer under the cursor, after asking."""
        offer_id = self.selected("offer-table")
        found = {o.id: (o, ours) for o, ours in self.snapshot().neighbours.offers}
        if offer_id is None or offer_id not in found or not found[offer_id][1]:
            self.notify("Pick one of our own offers first.", severity="warning")
            return
        offer = found[offer_id][0]
        self.push_screen(
            ConfirmScreen(
                f"Take back the offer of {offer.what}?",
                "Neighbour groups stop seeing it; what was already agreed stays agreed.",
                yes="Take back",
            ),
            partial(self._withdraw, offer),
        )

    def _withdraw(self, offer: Offer, yes: bool | None) -> None:
        if yes:
            self.attempt(
                lambda: participation.withdraw(self.node, self.group_id, offer.id),
                f"Took back the offer of {offer.what}.",
            )
