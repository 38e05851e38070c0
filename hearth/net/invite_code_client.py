"""Running an invite code over a relay's mailbox: the thin adapter around
:class:`~hearth.protocol.invite_code.InviteExchange` for both sides.

The inviter opens a mailbox under a free number, shows the code, and waits; when the
joiner has proved the code and introduced itself, the member approves by name, the node
records the invite and publishes it to the group's relays, and only then sends the join
token. The joiner opens the same mailbox with the code it was told and, once approved,
receives the token. Either side closing, a wrong code or the time running out ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from hearth.crypto import RandomBytes, SigningKey
from hearth.errors import HearthError, ProtocolError, TransportError
from hearth.net.connect import answer_within, open_websocket
from hearth.net.sync_client import sync_relays, why_failed
from hearth.node.node import Node
from hearth.protocol.connection import Connection, Role
from hearth.protocol.frames import (
    VERSIONS,
    Error,
    Frame,
    Hello,
    Mailbox,
    MailboxClose,
)
from hearth.protocol.invite_code import (
    MAX_NAMEPLATE,
    Failed,
    InviteCode,
    InviteExchange,
    JoinerIntroduced,
    Send,
    TokenReceived,
    Verified,
)
from hearth.protocol.invite_token import encode_token

__all__ = ["InviteResult", "accept_invite", "offer_invite"]


@dataclass
class InviteResult:
    """How an invite ended: who joined, or why not."""

    joined: str = ""
    phrase: str = ""
    refused: bool = False


_CLOSE_WAIT_S = 2.0
"""How long leaving an invite waits for the relay to answer the close."""


class _MailboxLink:
    """A WebSocket to a relay, spoken to only about one mailbox."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = Connection(Role.CONNECTING)
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None

    async def __aenter__(self) -> _MailboxLink:
        self._http = aiohttp.ClientSession()
        try:
            self._ws = await open_websocket(self._http, self.url)
            await self.send(Hello(versions=list(VERSIONS), role="node", agent="hearth-invite"))
            await answer_within(self.receive())  # welcome
        except (aiohttp.ClientError, OSError, TransportError) as exc:
            await self._close()
            raise TransportError(f"Cannot reach the relay {self.url}: {why_failed(exc)}.") from exc
        except BaseException:
            await self._close()
            raise
        return self

    async def _close(self) -> None:
        if self._ws is not None:
            # Leaving (Ctrl-C among other ways) waits a moment for the relay's goodbye,
            # not aiohttp's 10 s: a busy relay must not keep a member at a dead prompt.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ws.close(), _CLOSE_WAIT_S)
        if self._http is not None:
            await self._http.close()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def send(self, frame: Frame) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(self.conn.send(frame))

    async def receive(self) -> Frame:
        assert self._ws is not None
        message = await self._ws.receive()
        if message.type != aiohttp.WSMsgType.BINARY:
            raise TransportError(f"The relay {self.url} closed the connection.")
        return self.conn.receive(message.data)


async def _open_mailbox(link: _MailboxLink, random_bytes: RandomBytes) -> int:
    """A free mailbox number at the relay, opened by us."""
    for _ in range(20):
        nameplate = 1 + int.from_bytes(random_bytes(2), "big") % MAX_NAMEPLATE
        await link.send(Mailbox(nameplate=nameplate, create=True))
        answer = await link.receive()
        if isinstance(answer, Mailbox) and answer.create:
            return nameplate
        if not (isinstance(answer, Error) and answer.code == "mailbox-taken"):
            raise TransportError(f"The relay would not open an invite: {_said(answer)}")
    raise TransportError("The relay has no free invite numbers right now; try again later.")


def _said(frame: Frame) -> str:
    return frame.message if isinstance(frame, Error) else f"an unexpected {frame.TYPE} frame"


async def _exchange(
    link: _MailboxLink,
    nameplate: int,
    exchange: InviteExchange,
    on_event: Callable[[object], Awaitable[list[object]]],
) -> None:
    """Carry the exchange's messages through the mailbox until it is over."""

    async def carry(events: list[object]) -> bool:
        for event in events:
            if isinstance(event, Send):
                await link.send(Mailbox(nameplate=nameplate, body=event.body))
            elif isinstance(event, Failed):
                await link.send(MailboxClose(nameplate=nameplate))
                raise ProtocolError(event.reason)
            elif await carry(await on_event(event)):
                return True
        return exchange.state.value == "done"

    if await carry(list(exchange.start())):
        return
    while True:
        frame = await link.receive()
        if isinstance(frame, MailboxClose):
            raise TransportError("The other side went away before the invite was finished.")
        if isinstance(frame, Error):
            raise TransportError(frame.message)
        if (
            isinstance(frame, Mailbox)
            and frame.body
            and await carry(list(exchange.receive(frame.body)))
        ):
            await link.send(MailboxClose(nameplate=nameplate))
            return


async def offer_invite(
    node: Node,
    url: str,
    *,
    timeout: float,
    show_code: Callable[[str], None],
    show_phrase: Callable[[str], None],
    approve: Callable[[str], Awaitable[bool]],
    random_bytes: RandomBytes = secrets.token_bytes,
    make_token: Callable[[JoinerIntroduced], str] | None = None,
) -> InviteResult:
    """Show a code and let in whoever proves it, if the member approves them.

    ``make_token`` records the invite and gives what is sealed to the joiner (by
    default a new member's join token; ``hearth device add`` gives a device token).
    """
    group = node.current_group()
    result = InviteResult()
    async with _MailboxLink(url) as link:
        nameplate = await _open_mailbox(link, random_bytes)
        code = InviteCode.new(nameplate, random_bytes)
        exchange = InviteExchange(code, inviter=True, random_bytes=random_bytes)
        show_code(str(code))

        async def on_event(event: object) -> list[object]:
            if isinstance(event, Verified):
                result.phrase = event.phrase
                show_phrase(event.phrase)
            elif isinstance(event, JoinerIntroduced):
                if not await approve(event.name):
                    result.refused = True
                    return list(exchange.refuse())
                token = (
                    make_token(event)
                    if make_token
                    else encode_token(node.create_invite(for_device=event.device_key))
                )
                # The others must know of the invite before the joiner's first bundle
                # claims it: publish it first.
                await sync_relays(node, node.view(group.id).relays(), [group.id], timeout=20)
                result.joined = event.name
                return list(exchange.approve(token))
            return []

        try:
            await asyncio.wait_for(_exchange(link, nameplate, exchange, on_event), timeout)
        except asyncio.TimeoutError:
            await link.send(MailboxClose(nameplate=nameplate))
            raise TransportError(
                f"Nobody used the code within {timeout:g} s; it is closed now."
            ) from None
    return result


async def accept_invite(
    url: str,
    code: InviteCode,
    *,
    name: str,
    device: SigningKey,
    timeout: float,
    show_phrase: Callable[[str], None],
    random_bytes: RandomBytes = secrets.token_bytes,
) -> str:
    """Prove the code, introduce ourselves, and return the join token once approved."""
    exchange = InviteExchange(
        code, inviter=False, random_bytes=random_bytes, name=name, device=device
    )
    token: list[str] = []

    async def on_event(event: object) -> list[object]:
        if isinstance(event, Verified):
            show_phrase(event.phrase)
        elif isinstance(event, TokenReceived):
            token.append(event.token)
        return []

    async with _MailboxLink(url) as link:
        try:
            await asyncio.wait_for(_exchange(link, code.nameplate, exchange, on_event), timeout)
        except asyncio.TimeoutError:
            raise TransportError(
                f"No answer from the inviter within {timeout:g} s; ask them for a new code."
            ) from None
    if not token:
        raise HearthError("The invite ended without letting you in.")
    return token[0]
