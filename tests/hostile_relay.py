"""A relay that lies, for the attacks on a node's side of the exchange
(tests/test_sync_client_attacks.py): a WebSocket server on 127.0.0.1, in a thread of its
own, speaking the wire format and answering each frame from a node as its ``answer``
function says. Real ``hearth`` processes connect to it as to any relay."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

from aiohttp import web

from hearth.protocol.connection import Connection, Role
from hearth.protocol.frames import Frame, Hello, Welcome

__all__ = ["Answer", "hostile_relay"]

Answer = Callable[[Frame], list[Frame]]
"""What the hostile relay sends back for one frame from a node (after its welcome)."""


@contextlib.contextmanager
def hostile_relay(answer: Answer, *, version: int = 3) -> Iterator[str]:
    """A relay that welcomes a node at ``version`` and then answers each of its frames
    with ``answer``; its ``ws://`` address, while open. Each connection is bounded: it
    ends after two minutes whatever the node does."""
    loop = asyncio.new_event_loop()

    async def upgrade(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        conn = Connection(Role.ACCEPTING)

        async def talk() -> None:
            async for message in ws:
                frame = conn.receive(message.data)
                if isinstance(frame, Hello):
                    agreed = min(version, conn.agreed or version)
                    replies: list[Frame] = [Welcome(version=agreed, limits={})]
                else:
                    replies = answer(frame)
                for reply in replies:
                    await ws.send_bytes(conn.send(reply))

        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(talk(), 120)
        return ws

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/", upgrade)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
