"""What every key does."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["HELP", "HelpScreen"]

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
