"""Real processes on 127.0.0.1: a ``hearth-relay`` and ``hearth`` nodes with real SQLite
files and real WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from hearth.net import sync_client
from hearth.net.sync_client import sync_relay
from hearth.node.identity import create_identity
from hearth.node.node import open_node
from hearth.protocol.frames import Hello, encode_frame
from tests.conftest import Cli, hearth_command

pytestmark = pytest.mark.process


@dataclass
class Relay:
    """A running hearth-relay process."""

    proc: subprocess.Popen[str]
    url: str
    data: Path

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


def start_relay(
    data: Path,
    port: int = 0,
    config: Path | None = None,
    extra: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> Relay:
    """A relay process (``prefix``: a command that runs it, such as ``prlimit ... --``)."""
    script = Path(sys.executable).parent / "hearth-relay"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "relay.cli"]
    command = [*prefix, *command]
    data.mkdir(parents=True, exist_ok=True)
    settings = ["--config", str(config)] if config else []
    with (data / "relay.log").open("a") as log:
        proc = subprocess.Popen(
            [
                *command,
                *("--host", "127.0.0.1", "--port", str(port), "--data", str(data)),
                *settings,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on ws://127.0.0.1:"), (line, (data / "relay.log").read_text())
    return Relay(proc, line.removeprefix("listening on "), data)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    running = start_relay(tmp_path / "relay")
    yield running
    running.kill(signal.SIGTERM)


def group_of_three(tmp_path: Path, relay_url: str) -> list[Cli]:
    ada, ben, cleo = (Cli(tmp_path / n) for n in ("ada", "ben", "cleo"))
    ada("init", "--name", "Ada")
    ada("group", "create", "Elm Street", "--relay", relay_url)
    ada("resource", "add", "Ladder", "--kind", "tool")
    ada("resource", "add", "Compost", "--qty", "10", "--unit", "bags")
    for cli, name in ((ben, "Ben"), (cleo, "Cleo")):
        invited = ada("invite", "--token")
        token = invited.out.strip()  # the token alone, for scripts; the advice goes to stderr
        assert "works once" in invited.err
        ada("sync")
        joined = json.loads(cli("join", token, "--name", name, "--json").out)
        assert joined["relays_ok"] == [relay_url]
    for cli in (ada, ben, cleo):
        cli("sync")
    return [ada, ben, cleo]


def state(cli: Cli) -> tuple[object, ...]:
    data = json.loads(cli("export", "--format", "json").out)
    return (data["members"], data["resources"], data["commitments"], data["needs"], data["events"])


def test_three_nodes_edit_offline_then_converge(tmp_path: Path, relay: Relay) -> None:
    ada, ben, cleo = group_of_three(tmp_path, relay.url)
    ada("consume", "compost", "--qty", "2")
    ben("consume", "compost", "--qty", "3")
    ben("lend", "ladder", "--to", "Cleo")
    cleo("need", "add", "Twine", "--qty", "1", "--unit", "roll")
    cleo("commitment", "add", "Bring twine", "--from", "Ben", "--to", "Cleo")
    for _ in range(2):
        for cli in (ada, ben, cleo):
            cli("sync")
    states = [state(c) for c in (ada, ben, cleo)]
    assert states[0] == states[1] == states[2]
    compost = next(
        r for r in json.loads(ada("resource", "list", "--json").out) if r["name"] == "Compost"
    )
    assert compost["quantity"] == 5
    names = [m["name"] for m in json.loads(cleo("member", "list", "--json").out)]
    assert names == ["Ada", "Ben", "Cleo"]
    # The relay's files hold none of the ledgers' words.
    for path in relay.data.glob("relay.db*"):
        content = path.read_bytes()
        for word in (b"Compost", b"Ladder", b"Twine", b"Elm Street", b"Cleo"):
            assert word not in content, (path.name, word)


def test_sync_with_no_reachable_relay_fails_and_keeps_changes(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "solo")
    cli("init", "--name", "Solo")
    cli("group", "create", "Alone", "--relay", "ws://127.0.0.1:9")
    cli("resource", "add", "Spade")
    result = cli("sync", "--timeout", "3", "--json", check=False)
    assert result.code == 1
    data = json.loads(result.out)
    assert data["relays_ok"] == []
    [failed] = data["relays_failed"]
    assert failed["url"] == "ws://127.0.0.1:9"
    assert "nothing answers at that address" in failed["error"]
    assert [r["name"] for r in json.loads(cli("resource", "list", "--json").out)] == ["Spade"]
    status = json.loads(cli("status", "--json").out)
    assert status["relays"][0]["waiting_to_send"] >= 2
    assert "bundles waiting to go out" in cli("status").out


@contextlib.contextmanager
def mute_websocket_server() -> Iterator[str]:
    """A server on 127.0.0.1 that takes the WebSocket upgrade and then never says a word
    (a wrong service on the port, or a hung relay): its ``ws://`` address, while open."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    closing = asyncio.Event()

    async def upgrade(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(closing.wait(), 120)
        return ws

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/", upgrade)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(closing.set)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_relay_that_upgrades_but_never_greets_is_given_up_on_in_seconds(
    tmp_path: Path,
) -> None:
    cli = Cli(tmp_path / "solo")
    cli("init", "--name", "Solo")
    with mute_websocket_server() as url:
        cli("group", "create", "Alone", "--relay", url)
        started = time.monotonic()
        result = cli("sync", "--timeout", "60", check=False)
        took = time.monotonic() - started
    assert result.code == 1
    assert f"{url}: not reached — it connected but did not greet us within 5 s" in result.out
    assert took < 30, took  # the greeting's deadline, not the sync's 60 s
    # Meanwhile it said what it was waiting for, on stderr (stdout keeps the result).
    assert f"Still syncing — {url}: nothing received yet" in result.err


def test_relay_killed_and_restarted_loses_nothing_acknowledged(
    tmp_path: Path, relay_store: list[str]
) -> None:
    relay = start_relay(tmp_path / "relay", extra=relay_store)
    port = relay.url.rsplit(":", 1)[1]
    try:
        ada, ben, _ = group_of_three(tmp_path, relay.url)
        for i in range(30):
            ada("resource", "add", f"Tool {i}")
        ada("sync")
        relay.kill(signal.SIGKILL)
        relay = start_relay(tmp_path / "relay", port=int(port), extra=relay_store)
        ben("sync")
        names = {r["name"] for r in json.loads(ben("resource", "list", "--json").out)}
        assert {f"Tool {i}" for i in range(30)} <= names
        again = json.loads(ben("sync", "--json").out)
        assert again["received"] == 0
    finally:
        relay.kill(signal.SIGTERM)


def test_a_withheld_bundle_is_noticed_and_fetched_from_another_relay(tmp_path: Path) -> None:
    first = start_relay(tmp_path / "first")
    second = start_relay(tmp_path / "second")
    try:
        ada, ben, _ = group_of_three(tmp_path, first.url)
        ada("relay", "add", second.url)
        for name in ("Saw", "Drill", "Level"):
            ada("resource", "add", name)
        ada("sync")  # both relays now hold everything
        # The first relay withholds the bundle that added the drill.
        first.kill(signal.SIGTERM)
        with sqlite3.connect(first.data / "relay.db") as db:
            rows = db.execute("SELECT cursor FROM envelopes ORDER BY cursor").fetchall()
            db.execute("DELETE FROM envelopes WHERE cursor = ?", (rows[-2][0],))
        first = start_relay(first.data, port=int(first.url.rsplit(":", 1)[1]))
        ben("sync")  # Ben knows both relays from the ledger
        names = {r["name"] for r in json.loads(ben("resource", "list", "--json").out)}
        assert {"Saw", "Drill", "Level"} <= names
        assert json.loads(ben("status", "--json").out)["gaps"] == 0
    finally:
        first.kill(signal.SIGTERM)
        second.kill(signal.SIGTERM)


def test_bad_frames_close_only_that_connection(tmp_path: Path, relay: Relay) -> None:
    ada, ben, _ = group_of_three(tmp_path, relay.url)

    async def attack() -> list[int | None]:
        codes = []
        async with aiohttp.ClientSession() as http:
            noise = random.Random(5).randbytes(2000)
            for payload in (b"\xff\x00garbage", b"", noise, b"\x07\x01\x03\x01t"):
                async with http.ws_connect(relay.url) as ws:
                    await ws.send_bytes(payload)
                    await ws.receive(timeout=20)
                    codes.append(ws.close_code)
            async with http.ws_connect(relay.url, max_msg_size=0) as ws:
                await ws.send_bytes(b"\x00" * (2 * 1024 * 1024))
                await ws.receive(timeout=20)
                codes.append(ws.close_code)
            async with http.ws_connect(relay.url) as ws:
                await ws.send_str("hello")
                await ws.receive(timeout=20)
                codes.append(ws.close_code)
        return codes

    codes = asyncio.run(attack())
    assert codes[:4] == [1002] * 4, codes
    # The relay closes an oversized frame with 1009; a client still busy sending it may
    # only see its connection cut (1006). Either way only that connection ends.
    assert codes[4] in (1009, 1006)
    assert codes[5] == 1002
    ada("resource", "add", "Still works")
    ada("sync")
    ben("sync")
    assert "Still works" in ben("resource", "list").out
    assert relay.proc.poll() is None
    # The operator's log: one JSON object per line, a reason for each rejection, clients
    # as hashes and never as addresses.
    lines = [line for line in (relay.data / "relay.log").read_text().splitlines() if line]
    entries = [json.loads(line) for line in lines]
    rejected = [e for e in entries if e.get("reason") == "bad_frame"]
    assert rejected
    assert all(len(e["client"]) == 12 and "127.0.0.1" not in e["client"] for e in rejected)
    assert "127.0.0.1" not in "\n".join(lines)
    assert all({"at", "level", "logger", "event"} <= set(e) for e in entries)


def test_sigterm_closes_clients_with_1001_and_exits_promptly(
    tmp_path: Path, relay_store: list[str]
) -> None:
    """Also when a client never answers the close: it cannot hold up the others or the exit."""
    relay = start_relay(tmp_path / "relay", extra=relay_store)

    async def wait_for_close() -> int | None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(relay.url, autoclose=False) as silent,
            http.ws_connect(relay.url) as ws,
        ):
            for client in (silent, ws):
                await client.send_bytes(
                    encode_frame(Hello(versions=[1], role="node", agent="test"))
                )
                welcome = await client.receive(timeout=20)
                assert welcome.type is aiohttp.WSMsgType.BINARY
            relay.proc.send_signal(signal.SIGTERM)
            while True:
                message = await ws.receive(timeout=10)
                if message.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                ):
                    code = ws.close_code
                    break
            await asyncio.to_thread(relay.proc.wait, 10)  # the silent one still open
            return code

    started = time.monotonic()
    try:
        code = asyncio.run(wait_for_close())
        exited = relay.proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        relay.proc.send_signal(signal.SIGUSR1)  # the relay writes its stacks to its log
        time.sleep(1)
        pytest.fail("the relay did not stop:\n" + (relay.data / "relay.log").read_text()[-6000:])
    finally:
        relay.kill()
    assert exited == 0  # a second SIGTERM could land after its handler
    assert time.monotonic() - started < 10
    assert code == 1001


def test_bundles_by_hand_between_two_sheds(tmp_path: Path) -> None:
    ada, ben = Cli(tmp_path / "ada"), Cli(tmp_path / "ben")
    ada("init", "--name", "Ada")
    ada("group", "create", "Allotment")
    token = ada("invite", "--token").out.splitlines()[0]
    ben("join", token, "--name", "Ben")
    ada("resource", "add", "Seed potatoes", "--qty", "15", "--unit", "kg")
    usb = tmp_path / "usb"
    usb.mkdir()
    ada("bundle", "export", str(usb / "from-ada.hb"))
    result = json.loads(ben("bundle", "import", str(usb / "from-ada.hb"), "--json").out)
    assert result["applied"] >= 3
    ben("consume", "seed", "--qty", "5")
    ada("bundle", "have", str(usb / "ada-has.hh"))
    ben("bundle", "export", str(usb / "from-ben.hb"), "--since", str(usb / "ada-has.hh"))
    ada("bundle", "import", str(usb / "from-ben.hb"))
    potatoes = json.loads(ada("resource", "list", "--json").out)[0]
    assert potatoes["quantity"] == 10
    again = json.loads(ada("bundle", "import", str(usb / "from-ben.hb"), "--json").out)
    assert again["applied"] == 0
    assert again["duplicate"] >= 1
    (usb / "junk.hb").write_bytes(b"not bundles")
    bad = ada("bundle", "import", str(usb / "junk.hb"), check=False)
    assert bad.code == 1
    assert "is not a file of changes written by Hearth (`hearth bundle export`)" in bad.err


def wait_until(check: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return False


@contextlib.contextmanager
def serving(cli: Cli, log: Path) -> Iterator[subprocess.Popen[str]]:
    """``hearth serve`` on a member's home, from when it says it serves; SIGTERM at the
    end must stop it cleanly."""
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
    with log.open("w") as errors:
        proc = subprocess.Popen(
            [*hearth_command(), "--home", str(cli.home), "serve"],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().startswith("Serving 'Elm Street';")
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        reap(proc)


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill a process still running (its test failed first) and close its output."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_serve_sends_and_receives_live_and_reconnects(tmp_path: Path) -> None:
    relay = start_relay(tmp_path / "relay")
    port = int(relay.url.rsplit(":", 1)[1])
    ada, ben, cleo = group_of_three(tmp_path, relay.url)
    try:
        with serving(ada, tmp_path / "serve.log"):

            def ada_has(name: str) -> bool:
                return name in ada("resource", "list").out

            ben("resource", "add", "Arrived live")
            ben("sync")
            assert wait_until(lambda: ada_has("Arrived live"))

            ada("resource", "add", "From another window")  # another process on the same home

            def cleo_has(name: str) -> bool:
                cleo("sync")
                return name in cleo("resource", "list").out

            assert wait_until(lambda: cleo_has("From another window"))

            # A group Ada starts while serving is served too, without a restart.
            ada("group", "create", "Second street", "--relay", relay.url)
            ada("resource", "add", "Only in the second group")

            def groups_with_bundles_at_relay() -> int:
                with sqlite3.connect(relay.data / "relay.db") as db:
                    return int(
                        db.execute("SELECT COUNT(*) FROM topics WHERE bundles > 0").fetchone()[0]
                    )

            assert wait_until(lambda: groups_with_bundles_at_relay() == 2)
            ada("group", "use", "Elm Street")

            relay.kill(signal.SIGKILL)
            # While it is down, Ada's status says so in words she can act on.
            assert wait_until(
                lambda: "nothing answers at that address" in ada("status").out, seconds=20
            )
            relay = start_relay(tmp_path / "relay", port=port)
            ben("resource", "add", "After the restart")
            ben("sync")
            assert wait_until(lambda: ada_has("After the restart"), seconds=30)
    finally:
        relay.kill(signal.SIGTERM)


def test_doctor_says_what_is_wrong(tmp_path: Path, relay: Relay) -> None:
    cli = Cli(tmp_path / "doc")
    cli("init", "--name", "Dee")
    cli("group", "create", "Checked", "--relay", relay.url)
    healthy = cli("doctor", "--json")
    assert all(f["ok"] for f in json.loads(healthy.out))
    cli("relay", "add", "ws://127.0.0.1:9")
    sick = cli("doctor", "--timeout", "3", check=False)
    assert sick.code == 1
    assert "ws://127.0.0.1:9: not reachable" in sick.out
    assert "→" in sick.out


def test_a_new_device_catches_up_from_a_snapshot(
    tmp_path: Path, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_client, "SNAPSHOT_EVERY", 10)
    create_identity(tmp_path / "writer", name="Writer")
    create_identity(tmp_path / "fresh", name="Fresh")
    with open_node(tmp_path / "writer") as writer, open_node(tmp_path / "fresh") as fresh:
        group = writer.create_group("Snapshots").id
        with writer.change() as ledger:
            ledger.add_relay(relay.url)
        for i in range(30):
            with writer.change() as ledger:
                ledger.add_resource(f"Thing {i}")
        token = writer.create_invite()
        assert asyncio.run(sync_relay(writer, relay.url, [group], timeout=30)).ok
        with sqlite3.connect(relay.data / "relay.db") as db:
            assert db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 1

        fresh.join_with_token(token)
        report = asyncio.run(sync_relay(fresh, relay.url, [group], timeout=30))
        assert report.ok
        # The snapshot, taken with the 33 bundles it covers (R13), not those one by one.
        assert report.snapshots == 1
        assert report.rejected == 0
        with sqlite3.connect(relay.data / "relay.db") as db:  # nothing given back at once
            assert db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 1
        assert {f"Thing {i}" for i in range(30)} <= {r.name for r in fresh.view().resources()}

        with writer.change() as ledger:
            ledger.add_resource("After the snapshot")
        asyncio.run(sync_relay(writer, relay.url, [group], timeout=30))
        asyncio.run(sync_relay(fresh, relay.url, [group], timeout=30))
        assert "After the snapshot" in {r.name for r in fresh.view().resources()}
        asyncio.run(sync_relay(writer, relay.url, [group], timeout=30))
        assert sorted(writer.ledger().doc.heads()) == sorted(fresh.ledger().doc.heads())
        assert writer.feeds.heads(group) == fresh.feeds.heads(group)


def test_a_catch_up_says_how_far_it_has_come_while_it_goes(
    tmp_path: Path, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hearth.net.sync_client import RelayReport, sync_relays

    create_identity(tmp_path / "writer", name="Writer")
    create_identity(tmp_path / "fresh", name="Fresh")
    with open_node(tmp_path / "writer") as writer, open_node(tmp_path / "fresh") as fresh:
        group = writer.create_group("Progress").id
        with writer.change() as ledger:
            ledger.add_relay(relay.url)
        for i in range(60):
            with writer.change() as ledger:
                ledger.add_resource(f"Thing {i}")
        token = writer.create_invite()
        assert asyncio.run(sync_relay(writer, relay.url, [group], timeout=30)).ok
        fresh.join_with_token(token)

        seen: list[tuple[str, int]] = []

        def progress(going: Sequence[RelayReport]) -> None:
            seen.extend((r.url, r.received) for r in going)

        [report] = asyncio.run(
            sync_relays(
                fresh, [relay.url], [group], timeout=30, on_progress=progress, progress_every_s=0.01
            )
        )
    assert report.ok
    assert report.received >= 60
    counts = [n for url, n in seen if url == relay.url]
    assert counts == sorted(counts)  # it only ever grows
    assert any(n > 0 for n in counts), counts  # told while bundles were still arriving


def test_a_long_snapshot_check_keeps_the_connection_to_a_relay_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow device checking the bundles a snapshot covers (R13) goes on answering: the
    sync's event loop runs during the check, so its keep-alive reaches a relay whose
    heartbeat (1 s, an answer due within half of it) would cut a device that went
    silent for the seconds the check takes, and the relay keeps the connection."""
    from hearth.validity import snapshots

    config = tmp_path / "relay.toml"
    config.write_text("[relay]\nheartbeat_s = 1.0\n")
    relay = start_relay(tmp_path / "relay", config=config)
    monkeypatch.setattr(sync_client, "SNAPSHOT_EVERY", 10)
    monkeypatch.setattr(sync_client, "_KEEPALIVE_S", 0.2)
    try:
        create_identity(tmp_path / "writer", name="Writer")
        create_identity(tmp_path / "fresh", name="Fresh")
        with open_node(tmp_path / "writer") as writer, open_node(tmp_path / "fresh") as fresh:
            group = writer.create_group("Slow device").id
            with writer.change() as ledger:
                ledger.add_relay(relay.url)
            for i in range(20):
                with writer.change() as ledger:
                    ledger.add_resource(f"Thing {i}")
            token = writer.create_invite()
            assert asyncio.run(sync_relay(writer, relay.url, [group], timeout=30)).ok
            fresh.join_with_token(token)

            checked = snapshots._check_names
            checking: list[float] = []

            def slowly(*args: object) -> None:  # a device a hundred times slower
                checking.append(time.monotonic())
                time.sleep(0.1)
                checked(*args)  # type: ignore[arg-type]

            monkeypatch.setattr(snapshots, "_check_names", slowly)
            connections: list[tuple[float, float]] = []  # (when, the relay's connections)
            metrics = relay.url.replace("ws://", "http://") + "/metrics"

            async def catch_up() -> sync_client.RelayReport:
                async def watch() -> None:
                    async with aiohttp.ClientSession() as http:
                        while True:
                            async with http.get(metrics) as response:
                                text = await response.text()
                            count = next(
                                float(line.split()[-1])
                                for line in text.splitlines()
                                if line.startswith("hearth_relay_connections ")
                            )
                            connections.append((time.monotonic(), count))
                            await asyncio.sleep(0.05)

                watcher = asyncio.create_task(watch())
                try:
                    return await sync_relay(fresh, relay.url, [group], timeout=60)
                finally:
                    watcher.cancel()

            report = asyncio.run(catch_up())
        assert report.ok, report.error
        assert report.snapshots == 1
        start, end = checking[0], checking[-1]
        assert end - start > 1.5  # longer than the relay waits for an answer
        during = [(when - start, count) for when, count in connections if start <= when <= end]
        # Asked during the check (the loop ran), also after the relay would have cut a
        # silent device, and connected each time.
        assert during, end - start
        assert during[-1][0] > 1.5, (end - start, during)
        assert min(count for _, count in during) >= 1, during
    finally:
        relay.kill(signal.SIGTERM)
