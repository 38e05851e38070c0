"""Invite mailboxes (SECURITY.md §5), without I/O: who is in which mailbox, what waits for
the side not there yet, and the limits. The relay keeps one :class:`Mailboxes` for all its
clients; so does a node's ``hearth serve`` listener, for invites run over the local network.

Either side of an invite puts messages in a mailbox under its number (the nameplate of the
code); the holder passes each on to the other side, now or when it arrives, and reads
none of them: they are SPAKE2 messages and sealed boxes (``hearth.protocol.invite_code``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hearth.protocol.frames import Error, Frame, Mailbox, MailboxClose

__all__ = ["MailboxLimits", "Mailboxes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxLimits:
    """How many mailboxes, how many per creating address, and how much through each."""

    max_mailboxes: int = 1000
    per_creator: int = 5
    message_bytes: int = 4096
    messages: int = 16
    ttl_s: float = 3600.0
    # Opening a mailbox one did not create is a guess at a nameplate (1-999): limited per
    # address and over the whole space, so that trying them all takes many hours, while
    # an invite lives one. A guess comes back a while after it was spent (a token bucket).
    guesses_per_address: int = 5
    guess_back_per_address_s: float = 60.0
    guesses: int = 20
    guess_back_s: float = 60.0


@dataclass
class _Mailbox:
    creator: str
    opened: float
    members: list[int] = field(default_factory=list)
    waiting: list[bytes] = field(default_factory=list)  # for the side not yet there
    messages: int = 0


Out = list[tuple[int, Frame]]
"""Frames for clients: (client, frame)."""


class Mailboxes:
    """Every open mailbox of one relay or listener."""

    def __init__(self, limits: MailboxLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock  # monotonic seconds
        self.open: dict[int, _Mailbox] = {}
        # Guesses left (and when counted) per address, and over the nameplate space.
        self._guesses: dict[str, tuple[float, float]] = {}
        self._all_guesses = (float(limits.guesses), clock())

    def _guess(self, address: str) -> bool:
        """Spend a guess for ``address`` if it and the relay as a whole have one left."""
        limits, now = self.limits, self.clock()

        def left(bucket: tuple[float, float], size: int, back_s: float) -> float:
            tokens, counted = bucket
            return min(float(size), tokens + (now - counted) / max(back_s, 1e-9))

        mine = left(
            self._guesses.get(address, (float(limits.guesses_per_address), now)),
            limits.guesses_per_address,
            limits.guess_back_per_address_s,
        )
        everyone = left(self._all_guesses, limits.guesses, limits.guess_back_s)
        if mine < 1 or everyone < 1:
            return False
        self._guesses[address] = (mine - 1, now)
        self._all_guesses = (everyone - 1, now)
        if len(self._guesses) > 10_000:  # forget addresses whose guesses have all come back
            full = limits.guesses_per_address
            back = limits.guess_back_per_address_s
            for known, bucket in list(self._guesses.items()):
                if left(bucket, full, back) >= full:
                    del self._guesses[known]
        return True

    def handle(self, client: int, creator: str, frame: Mailbox | MailboxClose) -> Out:
        """What follows from a client's mailbox frame; ``creator``: its address, which the
        per-creator and per-address guess limits count by. Refusals are :class:`Error`
        frames to that client."""
        if isinstance(frame, MailboxClose):
            box = self.open.get(frame.nameplate)
            return self.burn(frame.nameplate) if box and client in box.members else []
        limits, now, n = self.limits, self.clock(), frame.nameplate
        for old in [k for k, b in self.open.items() if now - b.opened > limits.ttl_s]:
            self.burn(old)
        if len(frame.body) > limits.message_bytes:
            return _refuse(client, "mailbox-full", "That invite message is too large.")
        box = self.open.get(n)
        out: Out = []
        joining = not frame.create and (box is None or client not in box.members)
        if joining and not self._guess(creator):
            return _refuse(
                client,
                "too-many-guesses",
                "Too many invite numbers were tried from here or at this relay lately; "
                "wait a few minutes, check the code, and try again.",
            )
        if frame.create:
            if box is not None:
                return _refuse(client, "mailbox-taken", f"Invite number {n} is in use.")
            mine = sum(1 for b in self.open.values() if b.creator == creator)
            if len(self.open) >= limits.max_mailboxes or mine >= limits.per_creator:
                return _refuse(
                    client, "too-many-mailboxes", "Too many invites are open; try later."
                )
            box = self.open[n] = _Mailbox(creator=creator, opened=now, members=[client])
            out.append((client, Mailbox(nameplate=n, create=True)))
        elif box is None:
            return _refuse(
                client,
                "no-such-mailbox",
                "No invite is waiting under that number: check the code, or ask for a new one.",
            )
        elif client not in box.members:
            if len(box.members) >= 2:
                return _refuse(client, "mailbox-full", "Someone else is using this invite.")
            box.members.append(client)
            out += [(client, Mailbox(nameplate=n, body=body)) for body in box.waiting]
            box.waiting.clear()
        if frame.body:
            box.messages += 1
            if box.messages > limits.messages:
                return out + self.burn(n)
            others = [m for m in box.members if m != client]
            if others:
                out.append((others[0], Mailbox(nameplate=n, body=frame.body)))
            else:
                box.waiting.append(frame.body)
        return out

    def gone(self, client: int) -> Out:
        """A client went away: the invites it was in are over, and the other sides told."""
        out: Out = []
        for nameplate, box in list(self.open.items()):
            if client in box.members:
                box.members.remove(client)
                out += self.burn(nameplate)
        return out

    def burn(self, nameplate: int) -> Out:
        """Close a mailbox for good; tell whoever is in it."""
        box = self.open.pop(nameplate, None)
        if box is None:
            return []
        return [(m, MailboxClose(nameplate=nameplate)) for m in box.members]


def _refuse(client: int, code: str, message: str) -> Out:
    return [(client, Error(code=code, message=message))]
