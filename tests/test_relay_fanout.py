"""Live fan-out: the relay writes a delivery's WebSocket frame straight to each
subscriber's socket, framed once per bundle (relay/links.py), and commits bundles that
arrive together in one transaction (relay/server.py). These check that what a subscriber's
WebSocket client reads is exactly what was published, at every frame size, and that
bundles sent together share commits."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from hearth.protocol.frames import Deliver, Subscribe
from relay.links import websocket_frame
from tests.peering_simulation import make_pool
from tests.test_relay_limits import Client
from tests.test_sync_processes import start_relay

# Each length form of RFC 6455 §5.2 (7-bit, 16-bit, 64-bit) and its edges.
SIZES = [0, 1, 125, 126, 65_535, 65_536, 300_000]


async def test_a_frame_written_straight_to_the_socket_reads_back_whole_at_every_size() -> None:
    payloads = [bytes([n % 251]) * n for n in SIZES]

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        assert request.transport is not None
        for payload in payloads:
            request.transport.write(websocket_frame(payload))
        await ws.receive()  # until the client closes
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"ws://127.0.0.1:{port}/", max_msg_size=0)
            got = []
            for _ in payloads:
                message = await ws.receive(timeout=10)
                assert message.type == aiohttp.WSMsgType.BINARY, message
                got.append(message.data)
            await ws.close()
        assert got == payloads
    finally:
        await runner.cleanup()


@pytest.mark.process
async def test_every_subscriber_gets_each_live_bundle_as_it_was_published(
    tmp_path: Path, relay_store: list[str]
) -> None:
    # Bundles in the smallest padding bucket and ones past 64 KiB (the long frame form).
    [(small_keys, small)] = make_pool(groups=1, per_group=3, seed=3)
    [(big_keys, big)] = make_pool(groups=1, per_group=2, extra_bytes=70_000, seed=4)
    relay = start_relay(tmp_path / "relay", extra=relay_store)
    try:
        async with aiohttp.ClientSession() as http:
            publisher = await Client.connect(http, relay.url, "127.0.0.1")
            subscribers = [await Client.connect(http, relay.url, "127.0.0.1") for _ in range(3)]
            for keys in (small_keys, big_keys):
                await publisher.register(keys)
                for subscriber in subscribers:
                    await subscriber.register(keys)
                    await subscriber.send(Subscribe(topic=keys.topic, after=0))
                    await subscriber.receive()  # caught_up: nothing stored yet
            small_topic, big_topic = small_keys.topic, big_keys.topic
            published = [
                (small_topic, small[0]),
                (big_topic, big[0]),
                (small_topic, small[1]),
                (small_topic, small[2]),
                (big_topic, big[1]),
            ]
            for _, envelope in published:
                assert await publisher.publish_all([envelope]) == {"ack": 1}

            async def live(subscriber: Client) -> list[tuple[bytes, bytes]]:
                frames = [await subscriber.receive() for _ in published]
                assert all(isinstance(f, Deliver) for f in frames), frames
                return [(f.topic, f.envelope) for f in frames if isinstance(f, Deliver)]

            received = await asyncio.gather(*(live(s) for s in subscribers))
            assert received == [published] * 3
    finally:
        relay.kill()


@pytest.mark.process
async def test_bundles_published_together_share_commits(tmp_path: Path) -> None:
    [(keys, envelopes)] = make_pool(groups=1, per_group=48, seed=5)
    relay = start_relay(tmp_path / "relay")
    try:
        async with aiohttp.ClientSession() as http:
            publisher = await Client.connect(http, relay.url, "127.0.0.1")
            await publisher.register(keys)
            assert await publisher.publish_all(envelopes[:1]) == {"ack": 1}  # alone
            assert await publisher.publish_all(envelopes[1:]) == {"ack": 47}  # all at once
        commits = _metric(relay.url, "hearth_relay_write_seconds_count")
        # One for the lone bundle, one or a few for the 47 sent together (not one each).
        assert 2 <= commits <= 12, commits
    finally:
        relay.kill()


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url.replace("ws://", "http://") + "/metrics", timeout=10) as got:  # noqa: S310 - our loopback relay
        lines = got.read().decode().splitlines()
    return float(next(line.split()[1] for line in lines if line.startswith(name + " ")))
