"""A TCP proxy on 127.0.0.1 that can damage what a relay sends: for the tests of R16
(damaged is not invalid). It runs its own event loop in a thread, so the ``hearth``
processes under test connect to it as they would to a relay.

While ``damage`` is above zero, each large WebSocket frame from the relay (a delivered
bundle) gets one byte flipped in the middle of its payload — inside the bundle's
ciphertext — and ``damage`` goes down by one. Frames from the relay are not masked, so
the proxy can find them in the byte stream after the HTTP upgrade.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["WireProxy", "wire_proxy"]

_LARGE = 400  # bytes of payload: a delivered bundle, not an ack or a caught-up


class WireProxy:
    """A proxy from a port of its own to a relay's port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.damage = 0
        self.damaged = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        server.close()
        for writer in self._writers:
            writer.transport.abort()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(server.wait_closed())
        loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._proxy(reader, writer)
        except asyncio.CancelledError:
            # The proxy is stopping. A connection's task must not end cancelled: asyncio's
            # stream server logs that as an error ("Exception in callback ...").
            writer.transport.abort()

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._frames(up_reader, writer), return_exceptions=True
        )
        writer.close()
        up_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay to client: the HTTP answer as it is, then frame by frame."""
        writer.write(await reader.readuntil(b"\r\n\r\n"))
        while True:
            head = await reader.readexactly(2)
            length = head[1] & 0x7F
            extended = b""
            if length == 126:
                extended = await reader.readexactly(2)
                length = int.from_bytes(extended, "big")
            elif length == 127:
                extended = await reader.readexactly(8)
                length = int.from_bytes(extended, "big")
            payload = bytearray(await reader.readexactly(length))
            if self.damage > 0 and length >= _LARGE:
                payload[length // 2] ^= 0x40
                self.damage -= 1
                self.damaged += 1
            writer.write(head + extended + bytes(payload))
            await writer.drain()


@contextmanager
def wire_proxy(relay_url: str) -> Iterator[WireProxy]:
    """A proxy in front of the relay at ``relay_url``, for the length of a test."""
    proxy = WireProxy(int(relay_url.rsplit(":", 1)[1]))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
