"""Two ``hearth-relay`` processes on one PostgreSQL database, behind one address, with real
``hearth`` nodes: whichever process a node's connection lands on, the group converges, and
a bundle stored through one process reaches a node listening on the other live."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.test_sync_processes import (
    Relay,
    group_of_three,
    serving,
    start_relay,
    state,
    wait_until,
)

pytestmark = pytest.mark.process


class Forwarder:
    """One address in front of several relay processes, as an operator's reverse proxy
    would be: each new TCP connection goes to the backend ``to`` names, or, when ``to`` is
    ``None``, to the next one in turn. Counts the connections each backend got."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = [url.removeprefix("ws://").rsplit(":", 1) for url in backends]
        self.to: int | None = None
        self.turn = 0
        self.connections = [0] * len(backends)
        self.loop = asyncio.new_event_loop()
        self.stopping = asyncio.Event()
        ready = threading.Event()
        self.url = ""

        async def serve() -> None:
            server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
            self.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            ready.set()
            await self.stopping.wait()
            server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        def run() -> None:
            self.loop.run_until_complete(serve())
            self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.to if self.to is not None else self.turn % len(self.backends)
        self.turn += 1
        self.connections[index] += 1
        host, port = self.backends[index]
        up_reader, up_writer = await asyncio.open_connection(host, int(port))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(10)


@pytest.fixture
def two_relays(tmp_path: Path, postgres_url: str) -> Iterator[tuple[list[Relay], Forwarder]]:
    """Two relay processes sharing one store (and one relay.key), and one address for both."""
    relays = [start_relay(tmp_path / "relay", extra=["--database", postgres_url]) for _ in range(2)]
    forwarder = Forwarder([r.url for r in relays])
    yield relays, forwarder
    forwarder.stop()
    for relay in relays:
        relay.kill(signal.SIGTERM)


def test_nodes_on_different_processes_converge_and_receive_live(
    tmp_path: Path, postgres_url: str, two_relays: tuple[list[Relay], Forwarder]
) -> None:
    relays, forwarder = two_relays
    ada, ben, cleo = group_of_three(tmp_path, forwarder.url)  # connections take turns
    assert min(forwarder.connections) >= 3
    ada("consume", "compost", "--qty", "2")
    ben("lend", "ladder", "--to", "Cleo")
    cleo("need", "add", "Twine", "--qty", "1", "--unit", "roll")
    for _ in range(2):
        for cli in (ada, ben, cleo):
            cli("sync")
    assert state(ada) == state(ben) == state(cleo)

    # Ben stays connected to process 0; Ada's changes go in through process 1.
    forwarder.to = 0
    links_to_0 = forwarder.connections[0]
    with serving(ben, tmp_path / "serve.log"):
        assert wait_until(lambda: forwarder.connections[0] == links_to_0 + 1)
        forwarder.to = 1

        def ben_has(name: str) -> bool:
            return name in ben("resource", "list").out

        # The first may still come in Ben's catch-up; once it is there, Ben's link is
        # subscribed, and the second can only arrive live from the other process.
        for name in ("Stored through the other process", "And another, live"):
            before = forwarder.connections[1]
            ada("resource", "add", name)
            ada("sync")
            assert forwarder.connections[1] > before
            assert wait_until(lambda name=name: ben_has(name)), name  # type: ignore[misc]
        assert forwarder.connections[0] == links_to_0 + 1  # the same link all along

    # One store: both processes say so, and every bundle is in the database once.
    for relay in relays:
        assert relay.proc.poll() is None
    with psycopg.connect(postgres_url) as db:
        stored, distinct = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT id) FROM envelopes"
        ).fetchone()
        words = db.execute(
            "SELECT string_agg(encode(data, 'escape'), '') FROM envelopes"
        ).fetchone()
    assert stored == distinct > 0
    assert b"Compost" not in (words[0] or "").encode()
    assert json.loads(ada("status", "--json").out)["relays"][0]["reachable"]
