"""Direct node-to-node sync: the sans-IO sessions frame by frame, then real ``hearth serve
--listen`` processes on 127.0.0.1 with no relay at all."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from hearth.crypto import SigningKey
from hearth.errors import ProtocolError
from hearth.net.lan import SERVICE_TYPE
from hearth.protocol import codec
from hearth.protocol.beacon import BUCKET_MS, TAG_BYTES, beacon_tag, groups_beaconed
from hearth.protocol.bundle import EpochKeys, peer_proof, registration_proof
from hearth.protocol.connection import CLOSE_PROTOCOL
from hearth.protocol.frames import (
    CaughtUp,
    Deliver,
    DeviceProof,
    Error,
    Hello,
    Register,
    Subscribe,
    Welcome,
    decode_frame,
    encode_frame,
)
from hearth.protocol.handshake import CONNECTING, device_proof
from hearth.protocol.serving import CatchUpPeer, Close, ServingSession
from hearth.protocol.sync import PeerHas, Refused, RelaySession, Send, Settled, TopicPlan
from relay.config import RelayConfig
from relay.core import RelayCore, ToClient
from relay.sqlite_store import SqliteStore
from tests.conftest import Cli, hearth_command
from tests.test_sync_processes import reap, state, wait_until

CHALLENGE = bytes(range(32))
NONCE = bytes(range(32, 64))
SERVER_DEVICE = SigningKey.generate()
CLIENT_DEVICE = SigningKey.generate()


def _serving(
    topics: dict[bytes, bytes], departed: dict[bytes, frozenset[bytes]] | None = None
) -> ServingSession:
    return ServingSession(topics, CHALLENGE, device_key=SERVER_DEVICE, departed=departed or {})


def _client(*plans: TopicPlan, nonce: bytes = NONCE) -> RelaySession:
    return RelaySession(plans=list(plans), device_key=CLIENT_DEVICE, nonce=nonce)


def _keys() -> EpochKeys:
    return EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))


def _peer_plan(
    keys: EpochKeys,
    have: list[tuple[bytes, int]] | None = None,
    departed: frozenset[bytes] = frozenset(),
) -> TopicPlan:
    return TopicPlan(
        topic=keys.topic,
        relay_key=keys.relay_key.public,
        proof=b"",
        after=0,
        prove=partial(peer_proof, keys),
        have=have or [],
        departed=departed,
    )


def _wire(session: ServingSession, outputs: list[object]) -> list[object]:
    """Frames a session's outputs would send, decoded as the other side would see them."""
    return [decode_frame(session.send(o.frame)) for o in outputs if isinstance(o, Send)]


def _open(serving: ServingSession, client: RelaySession) -> list[Send]:
    """Run hello/welcome; return what the client sends next, as the server receives it."""
    (hello,) = client.start()
    assert isinstance(hello, Send)
    (welcome,) = _wire(serving, serving.receive(encode_frame(hello.frame)))
    assert isinstance(welcome, Welcome)
    assert welcome.challenge == CHALLENGE
    return [o for o in client.handle(welcome) if isinstance(o, Send)]


def _exchange(serving: ServingSession, client: RelaySession) -> list[object]:
    """Open, pass everything the client sends to the server and every answer back;
    return the client's outputs from the answers."""
    answers = [
        f
        for s in _open(serving, client)
        for f in _wire(serving, serving.receive(encode_frame(s.frame)))
    ]
    return [o for a in answers for o in client.handle(a)]


def test_a_peer_registers_by_answering_the_challenge_and_trades_version_vectors() -> None:
    keys = _keys()
    device = os.urandom(32)
    serving = _serving({keys.topic: keys.relay_key.public})
    client = _client(_peer_plan(keys, have=[(device, 3)]))
    register, proof, subscribe = _open(serving, client)
    assert serving.receive(encode_frame(register.frame)) == []
    (answer,) = _wire(serving, serving.receive(encode_frame(proof.frame)))
    assert serving.peer_device == CLIENT_DEVICE.public
    assert client.handle(answer) == []
    assert client.peer_device == SERVER_DEVICE.public
    (catch_up,) = serving.receive(encode_frame(subscribe.frame))
    assert catch_up == CatchUpPeer(keys.topic, {device: 3})

    ours = os.urandom(32)
    caught_up = decode_frame(serving.send(serving.caught_up(keys.topic, [(ours, 7)])))
    assert isinstance(caught_up, CaughtUp)
    outputs = client.handle(caught_up)
    assert outputs == [PeerHas(keys.topic, {ours: 7})]  # not settled until we offer
    assert client.offer(keys.topic, []) == [Settled()]


def test_a_relay_registration_replayed_at_a_peer_gets_nothing() -> None:
    keys = _keys()
    serving = _serving({keys.topic: keys.relay_key.public})
    serving.receive(encode_frame(Hello(versions=[1, 2], role="node", agent="replay")))
    serving.send(Welcome(version=2, limits={}, challenge=CHALLENGE))
    replayed = Register(
        topic=keys.topic, relay_key=keys.relay_key.public, proof=registration_proof(keys)
    )
    (refusal,) = _wire(serving, serving.receive(encode_frame(replayed)))
    assert isinstance(refusal, Error)
    assert refusal.code == "bad-registration"
    assert serving.receive(encode_frame(Subscribe(topic=keys.topic, after=0))) == []
    stale = peer_proof(keys, bytes(32))  # an answer to some other connection's challenge
    again = Register(topic=keys.topic, relay_key=keys.relay_key.public, proof=stale)
    (refusal,) = _wire(serving, serving.receive(encode_frame(again)))
    assert refusal.code == "bad-registration"


def test_a_group_the_peer_is_not_in_is_refused_and_the_rest_still_settles() -> None:
    shared, other = _keys(), _keys()
    serving = _serving({shared.topic: shared.relay_key.public})
    client = _client(_peer_plan(other), _peer_plan(shared))
    sends = _open(serving, client)
    answers = [f for s in sends for f in _wire(serving, serving.receive(encode_frame(s.frame)))]
    assert [(a.code, a.id) for a in answers if isinstance(a, Error)] == [
        ("unknown-topic", other.topic)
    ]
    for answer in answers:
        client.handle(answer)
    assert client.refused_topics == {other.topic}
    caught_up = decode_frame(serving.send(serving.caught_up(shared.topic, [])))
    assert client.handle(caught_up) == [PeerHas(shared.topic, {})]
    assert client.offer(shared.topic, []) == [Settled()]


def test_what_a_peer_may_not_do_closes_or_refuses_it() -> None:
    keys = _keys()
    serving = _serving({keys.topic: keys.relay_key.public})
    (close,) = serving.receive(encode_frame(Hello(versions=[1], role="relay", agent="x")))
    assert isinstance(close, Close)
    assert close.code == CLOSE_PROTOCOL

    serving = _serving({keys.topic: keys.relay_key.public})
    (close,) = serving.receive(b"\xff garbage")
    assert isinstance(close, Close)

    serving = _serving({keys.topic: keys.relay_key.public})
    serving.receive(encode_frame(Hello(versions=[1, 2], role="node", agent="x")))
    serving.send(Welcome(version=2, limits={}, challenge=CHALLENGE))
    subscribe = encode_frame(Subscribe(topic=keys.topic, after=0))
    (refusal,) = _wire(serving, serving.receive(subscribe))
    assert refusal.code == "unknown-topic"  # subscribing without registering
    assert serving.live == set()


def test_each_side_proves_its_device_over_this_connections_transcript() -> None:
    keys = _keys()
    topics = {keys.topic: keys.relay_key.public}
    serving, client = _serving(topics), _client(_peer_plan(keys))
    register, proof, _ = _open(serving, client)
    # Another connection's proofs: the same challenge, but the client's nonce differs.
    other, elsewhere = _serving(topics), _client(_peer_plan(keys), nonce=bytes(32))
    other_register, other_proof, _ = _open(other, elsewhere)
    other.receive(encode_frame(other_register.frame))
    (other_answer,) = _wire(other, other.receive(encode_frame(other_proof.frame)))
    assert isinstance(other_answer, DeviceProof)

    serving.receive(encode_frame(register.frame))
    (close,) = serving.receive(encode_frame(other_proof.frame))
    assert isinstance(close, Close)
    assert close.reason == "The device proof does not verify."
    assert serving.peer_device == b""
    with pytest.raises(ProtocolError, match="does not verify"):
        client.handle(other_answer)  # the listening node's proof for someone else
    with pytest.raises(ProtocolError, match="does not verify"):
        client.handle(proof.frame)  # our own proof sent back is not the other side's
    assert client.peer_device == b""


def test_nothing_passes_between_nodes_before_the_device_proofs() -> None:
    keys = _keys()
    topics = {keys.topic: keys.relay_key.public}
    serving, client = _serving(topics), _client(_peer_plan(keys))
    register, proof, subscribe = _open(serving, client)
    (close,) = serving.receive(encode_frame(proof.frame))
    assert isinstance(close, Close)  # a device proof comes after a key holder's registration
    assert "Register a topic" in close.reason

    serving = _serving(topics)
    client = _client(_peer_plan(keys))
    register, _, subscribe = _open(serving, client)
    assert serving.receive(encode_frame(register.frame)) == []
    (refusal,) = _wire(serving, serving.receive(encode_frame(subscribe.frame)))
    assert isinstance(refusal, Error)
    assert (refusal.code, refusal.id) == ("no-device", keys.topic)
    assert serving.live == set()
    with pytest.raises(ProtocolError, match="before proving"):
        client.handle(CaughtUp(topic=keys.topic, cursor=0, have=[]))


def test_a_device_the_group_removed_is_turned_away_by_either_side() -> None:
    keys = _keys()
    topics = {keys.topic: keys.relay_key.public}
    # The listening node knows the connecting device was removed.
    serving = _serving(topics, departed={keys.topic: frozenset({CLIENT_DEVICE.public})})
    client = _client(_peer_plan(keys))
    outputs = _exchange(serving, client)
    assert [(o.code, o.id) for o in outputs if isinstance(o, Refused)] == [("removed", keys.topic)]
    assert serving.live == set()
    assert client.refused_topics == {keys.topic}

    # The connecting node knows the listening device was removed.
    serving = _serving(topics)
    client = _client(_peer_plan(keys, departed=frozenset({SERVER_DEVICE.public})))
    outputs = _exchange(serving, client)
    assert [(o.code, o.id) for o in outputs if isinstance(o, Refused)] == [("removed", keys.topic)]
    assert Settled() in outputs  # nothing to wait for from that peer
    assert client.refused_topics == {keys.topic}
    deliver = Deliver(topic=keys.topic, cursor=0, envelope=b"x" * 100)
    assert client.handle(deliver) == []  # what it sends anyway is not taken in
    assert client.received == 0


def test_an_older_epoch_is_delivered_only_to_a_device_the_group_lists_now() -> None:
    """A removed member who proves a device key made since, and holds an old epoch's
    secret, gets that epoch's topic from no listening node (issue 23, item 6)."""
    old = _keys()
    topics = {old.topic: old.relay_key.public}
    serving = ServingSession(
        topics,
        CHALLENGE,
        device_key=SERVER_DEVICE,
        departed={},
        listed={old.topic: frozenset({SERVER_DEVICE.public})},
    )
    outputs = _exchange(serving, _client(_peer_plan(old)))
    assert [(o.code, o.id) for o in outputs if isinstance(o, Refused)] == [
        ("not-listed", old.topic)
    ]
    assert serving.live == set()
    listed = {old.topic: frozenset({CLIENT_DEVICE.public})}
    serving = ServingSession(
        topics, CHALLENGE, device_key=SERVER_DEVICE, departed={}, listed=listed
    )
    outputs = _exchange(serving, _client(_peer_plan(old)))
    assert not [o for o in outputs if isinstance(o, Refused)]
    assert serving.live == {old.topic}


def test_a_relay_answers_a_device_proof_with_an_error() -> None:
    core = RelayCore(RelayConfig(), SqliteStore(Path(":memory:")), clock=lambda: 0.0)
    assert core.admit(1, "192.0.2.1")
    core.receive(1, encode_frame(Hello(versions=[1], role="node", agent="x", nonce=NONCE)))
    core.encode(1, Welcome(version=1, limits={}))
    proof = device_proof(CLIENT_DEVICE, bytes(32), CONNECTING)
    (answer,) = core.receive(1, encode_frame(proof))
    assert isinstance(answer, ToClient)
    assert isinstance(answer.frame, Error)
    assert answer.frame.code == "not-a-node"


def test_a_field_at_its_default_is_left_off_the_wire() -> None:
    # A relay from before the nonce knows a hello by these fields only, and refuses others.
    to_relay = Hello(versions=[1], role="node", agent="hearth")
    assert set(codec.decode(encode_frame(to_relay))) == {"t", "versions", "role", "agent"}
    to_peer = Hello(versions=[1], role="node", agent="hearth", nonce=NONCE)
    assert codec.decode(encode_frame(to_peer))["nonce"] == NONCE  # type: ignore[index]
    for frame in (to_relay, to_peer, Subscribe(topic=bytes(32), after=3)):
        assert decode_frame(encode_frame(frame)) == frame


def test_two_nodes_sync_directly_only_at_a_version_with_device_proofs() -> None:
    keys = _keys()
    # A node from before the device proofs dials ours: told plainly, nothing exchanged.
    serving = _serving({keys.topic: keys.relay_key.public})
    (close,) = serving.receive(encode_frame(Hello(versions=[1], role="node", agent="old")))
    assert isinstance(close, Close)
    assert "older Hearth" in close.reason
    serving = _serving({keys.topic: keys.relay_key.public})
    (welcome,) = serving.receive(
        encode_frame(Hello(versions=[1, 2], role="node", agent="new", nonce=NONCE))
    )
    assert isinstance(welcome, Send)
    assert welcome.frame == Welcome(version=2, limits=welcome.frame.limits, challenge=CHALLENGE)  # type: ignore[union-attr]

    # Ours dials an older node, which can only welcome it at version 1.
    client = _client(_peer_plan(keys))
    (hello,) = client.start()
    assert isinstance(hello, Send)
    assert hello.frame.versions == [1, 2, 3]  # type: ignore[union-attr]
    with pytest.raises(ProtocolError, match="older Hearth"):
        client.handle(Welcome(version=1, limits={}, challenge=CHALLENGE))
    # A relay at version 1 is fine: relays take no device proofs.
    to_relay = RelaySession(plans=[_peer_plan(keys)])
    to_relay.start()
    assert to_relay.handle(Welcome(version=1, limits={}, challenge=CHALLENGE))


@pytest.mark.parametrize(("offered", "chosen"), [([1], 1), ([1, 2], 2), ([2, 7], 2)])
def test_a_relay_welcomes_each_node_at_the_newest_version_both_speak(
    offered: list[int], chosen: int
) -> None:
    core = RelayCore(RelayConfig(), SqliteStore(Path(":memory:")), clock=lambda: 0.0)
    assert core.admit(1, "192.0.2.1")
    (welcome,) = core.receive(1, encode_frame(Hello(versions=offered, role="node", agent="x")))
    assert isinstance(welcome, ToClient)
    assert isinstance(welcome.frame, Welcome)
    assert welcome.frame.version == chosen


def test_a_relay_closes_on_a_node_speaking_no_version_it_does() -> None:
    core = RelayCore(RelayConfig(), SqliteStore(Path(":memory:")), clock=lambda: 0.0)
    assert core.admit(1, "192.0.2.1")
    (close,) = core.receive(1, encode_frame(Hello(versions=[7], role="node", agent="x")))
    assert "speaks versions [7]" in str(close)


def test_a_malformed_version_vector_is_a_protocol_error() -> None:
    bad = Subscribe(topic=bytes(32), after=0, have=[[b"short", 1]])
    with pytest.raises(ProtocolError, match="version vector"):
        decode_frame(encode_frame(bad))


# --- real processes -------------------------------------------------------------------


@contextmanager
def serving(cli: Cli, *extra: str) -> Iterator[str]:
    """``hearth serve --listen 127.0.0.1:0`` on a home; yields the address it listens on."""
    env = {k: v for k, v in os.environ.items() if k != "HEARTH_HOME"}
    with (cli.home.parent / f"{cli.home.name}-serve.log").open("w") as log:
        proc = subprocess.Popen(
            [
                *hearth_command(),
                "--home",
                str(cli.home),
                "-v",
                "serve",
                "--listen",
                "127.0.0.1:0",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        listening = [line for line in lines if line.startswith("listening on ws://127.0.0.1:")]
        assert listening, lines
        yield listening[0].removeprefix("listening on ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        reap(proc)


def two_members_without_a_relay(tmp_path: Path) -> tuple[Cli, Cli]:
    ada, ben = Cli(tmp_path / "ada"), Cli(tmp_path / "ben")
    ada("init", "--name", "Ada")
    ada("group", "create", "Allotment")
    ada("resource", "add", "Wheelbarrow", "--kind", "tool")
    token = ada("invite", "--token").out.splitlines()[0]
    ben("join", token, "--name", "Ben")
    return ada, ben


@pytest.mark.process
def test_two_nodes_sync_directly_with_no_relay(tmp_path: Path) -> None:
    ada, ben = two_members_without_a_relay(tmp_path)
    ben("resource", "add", "Seed trays", "--qty", "12")  # ben offline, before meeting
    with serving(ada) as url:
        ada("resource", "add", "Hose")  # another process on the serving home
        ben("peer", "add", url)
        result = json.loads(ben("sync", "--json").out)
        assert result["peers_ok"] == [url]
        assert result["relays_ok"] == []
        assert result["received"] >= 3
        assert result["sent"] >= 1
        assert state(ada) == state(ben)
        # Ada's node confirms Ben's join as his claim reaches it (R14); the confirmation
        # may come with the first sync or the next.
        again = json.loads(ben("sync", "--json").out)
        assert (again["sent"], again["received"]) in ((0, 0), (0, 1))
        again = json.loads(ben("sync", "--json").out)
        assert (again["sent"], again["received"]) == (0, 0)  # the vectors say: nothing to do
        checks = {f["check"]: f for f in json.loads(ben("doctor", "--json").out)}
        assert checks[f"peer {url}"]["ok"]
        assert checks["Allotment: relays"]["ok"]  # no relay, but a peer: not a fault
        status = json.loads(ben("status", "--json").out)
        (peer,) = status["peers"]
        assert peer["url"] == url
        assert peer["device"] == "Ada's device"  # as it proved on connecting
        assert peer["reachable"]
        assert peer["waiting_to_send"] == 0
    names = {r["name"] for r in json.loads(ada("resource", "list", "--json").out)}
    assert names == {"Wheelbarrow", "Hose", "Seed trays"}
    gone = ben("doctor", "--timeout", "3", check=False)  # ada's node has stopped serving
    assert gone.code == 1
    assert "not reached" in gone.out


@pytest.mark.process
def test_two_serving_nodes_exchange_changes_live(tmp_path: Path) -> None:
    ada, ben = two_members_without_a_relay(tmp_path)
    with serving(ada) as url:
        ben("peer", "add", url)
        with serving(ben):

            def has(cli: Cli, name: str) -> bool:
                return name in cli("resource", "list").out

            ada("resource", "add", "Rake")
            assert wait_until(lambda: has(ben, "Rake"))
            ben("resource", "add", "Trowel")
            assert wait_until(lambda: has(ada, "Trowel"))
        assert state(ada) == state(ben)


@pytest.mark.process
def test_a_stranger_gets_nothing_from_a_listening_node(tmp_path: Path) -> None:
    ada, ben = two_members_without_a_relay(tmp_path)
    eve = Cli(tmp_path / "eve")
    eve("init", "--name", "Eve")
    eve("group", "create", "Elsewhere")
    with serving(ada) as url:
        eve("peer", "add", url)
        result = eve("sync", "--json", check=False)
        assert result.code == 1
        data = json.loads(result.out)
        assert data["received"] == 0
        assert data["peers_ok"] == []
        assert "none of these groups" in data["peers_failed"][0]["error"]

        async def garbage() -> int | None:
            async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
                await ws.send_bytes(b"\x00not a frame")
                await ws.receive(timeout=10)
                return ws.close_code

        assert asyncio.run(garbage()) == CLOSE_PROTOCOL
        assert "Wheelbarrow" not in eve("resource", "list").out
        ada("resource", "add", "Still serving")  # and the node carries on for its members
        ben("peer", "add", url)
        assert json.loads(ben("sync", "--json").out)["peers_ok"] == [url]
        assert "Still serving" in ben("resource", "list").out


@pytest.mark.process
def test_a_removed_member_and_a_listening_node_get_nothing_from_each_other(
    tmp_path: Path,
) -> None:
    ada, ben = two_members_without_a_relay(tmp_path)
    with serving(ada) as url:
        ben("peer", "add", url)
        assert json.loads(ben("sync", "--json").out)["peers_ok"] == [url]
        ada("member", "remove", "Ben", "--yes")
        ada("resource", "add", "Padlock code")
        # Ben has not heard: he still holds the old key, and asks Ada's node for news.
        result = ben("sync", "--json", check=False)
        assert result.code == 1
        data = json.loads(result.out)
        assert data["received"] == 0
        assert "no longer in that group" in data["peers_failed"][0]["error"]
    with serving(ben) as ben_url:
        ada("peer", "add", ben_url)
        result = ada("sync", "--json", "--timeout", "5", check=False)
        data = json.loads(result.out)
        assert (data["sent"], data["received"]) == (0, 0)
        assert "removed from this group" in data["peers_failed"][0]["error"]
    assert "Padlock" not in ben("resource", "list").out


def closed_by_peer(sock: socket.socket, deadline: float) -> bool:
    """Whether the other end has closed ``sock`` by ``deadline`` (reading what it sends)."""
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.05))
        try:
            if not sock.recv(4096):
                return True
        except (ConnectionResetError, ConnectionAbortedError):
            return True
        except TimeoutError:
            return False


@pytest.mark.process
def test_a_stranger_cannot_lock_members_out_of_a_listening_node(tmp_path: Path) -> None:
    """Issue 23, item 6: 40 WebSocket connections from one address that never say
    anything, and 32 raw TCP sockets from eight more that never finish the upgrade — half
    send nothing, half send half an HTTP request. The listening node lets four in from one
    address and turns the rest away at once, so Ben's node, from another address, syncs
    while they are open; and once the hello timeout (and a second's grace) has passed,
    every raw socket is closed too, as a relay closes them (not only WebSockets)."""
    ada, ben = two_members_without_a_relay(tmp_path)
    with serving(ada, "--no-lan", "--hello-timeout", "2") as url:
        host, port = url.removeprefix("ws://").rsplit(":", 1)

        def raw(address: str, half_a_request: bool) -> socket.socket:
            sock = socket.create_connection((host, int(port)), source_address=(address, 0))
            if half_a_request:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            return sock

        async def lock_out() -> tuple[int, int, list[socket.socket], float]:
            connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=0)
            opened: list[aiohttp.ClientWebSocketResponse] = []
            turned_away = 0
            async with aiohttp.ClientSession(connector=connector) as http:
                for _ in range(40):
                    try:
                        opened.append(await http.ws_connect(url))
                    except (aiohttp.WSServerHandshakeError, aiohttp.ClientConnectionError):
                        turned_away += 1  # refused, or (past the door's limit) reset
                started = time.monotonic()
                sockets = [raw(f"127.0.0.{3 + i // 4}", i % 2 == 1) for i in range(32)]
                assert not closed_by_peer(sockets[-1], time.monotonic())  # within bounds
                ben("peer", "add", url)
                result = await asyncio.to_thread(ben, "sync", "--json", check=False)
                assert json.loads(result.out)["peers_ok"] == [url], result.out
                for ws in opened:
                    await ws.close()
            return len(opened), turned_away, sockets, started

        let_in, turned_away, sockets, started = asyncio.run(lock_out())
        try:
            assert (let_in, turned_away) == (4, 36)
            by = started + 2 + 1 + 3  # the timeout, the grace, and room for a loaded machine
            assert [closed_by_peer(s, by) for s in sockets] == [True] * len(sockets)
        finally:
            for sock in sockets:
                sock.close()


async def test_a_connection_that_proves_nothing_in_time_is_closed(tmp_path: Path) -> None:
    from hearth.net.peer_listener import start_listener
    from hearth.node.identity import create_identity
    from hearth.node.node import open_node

    create_identity(tmp_path / "ada", name="Ada")
    with open_node(tmp_path / "ada") as ada:
        ada.create_group("Allotment")
        runner, url = await start_listener(ada, "127.0.0.1", 0, hello_timeout_s=0.3)
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
                started = time.monotonic()
                message = await ws.receive(timeout=5)
                assert message.type is aiohttp.WSMsgType.CLOSE
                assert ws.close_code == 1008
                assert time.monotonic() - started < 2
        finally:
            await runner.cleanup()


async def test_a_removed_device_or_an_invite_number_not_open_holds_no_place_at_a_listener(
    tmp_path: Path,
) -> None:
    """Two ways past the hello timeout, each holding a place for good (32 of them lock every
    member out, from eight addresses): Ben, removed, proves a device key made since and
    registers an epoch he still holds the secret of; a stranger says hello and asks for an
    invite number that is not open. Each is closed once the hello timeout has passed, as
    one who says nothing is: only a device of the group now, or a joiner of an open invite,
    stays."""
    from hearth.group import member_changes
    from hearth.group.rotation import keep_keys
    from hearth.net.peer_listener import start_listener
    from hearth.net.sync_client import plan_for
    from hearth.node.identity import create_identity
    from hearth.node.node import open_node
    from hearth.protocol.connection import Connection, Role
    from hearth.protocol.frames import DEVICE_PROOFS, Hello, Mailbox, decode_frame, encode_frame
    from hearth.validity.intake import take_in

    for name in ("ada", "ben"):
        create_identity(tmp_path / name, name=name.title())
    with open_node(tmp_path / "ada") as ada, open_node(tmp_path / "ben") as ben:
        group = ada.create_group("Allotment").id
        ben.join_with_token(ada.create_invite())
        for bundle in ben.feeds.all():
            take_in(ada, bundle.envelope, source="test")
        member_changes.remove_member(ada, group, "Ben")
        keep_keys(ada, group)  # a new epoch, which Ben's node never hears of
        runner, url = await start_listener(ada, "127.0.0.1", 0, hello_timeout_s=0.3)
        try:
            async with aiohttp.ClientSession() as http:
                removed = await http.ws_connect(url)
                session = RelaySession(
                    plans=plan_for(ben, url, [group], peer=True),
                    device_key=SigningKey.generate(os.urandom),  # one made since
                    nonce=os.urandom(32),
                )
                conn = Connection(Role.CONNECTING)
                outputs = session.start()
                refused = False
                while not refused:
                    for output in outputs:
                        if isinstance(output, Send):
                            await removed.send_bytes(conn.send(output.frame))
                    message = await removed.receive(timeout=5)
                    assert message.type is aiohttp.WSMsgType.BINARY
                    outputs = session.handle(conn.receive(message.data))
                    refused = any(isinstance(o, Refused) for o in outputs)
                assert session.peer_device  # proven, and refused every topic

                stranger = await http.ws_connect(url)
                hello = Hello(versions=[DEVICE_PROOFS], role="node", agent="x", nonce=b"n" * 32)
                await stranger.send_bytes(encode_frame(hello))
                await stranger.receive(timeout=5)  # welcome
                await stranger.send_bytes(encode_frame(Mailbox(nameplate=4242)))
                answer = decode_frame((await stranger.receive(timeout=5)).data)
                assert getattr(answer, "code", "") == "no-such-mailbox"

                started = time.monotonic()
                for ws in (removed, stranger):
                    message = await ws.receive(timeout=5)
                    while message.type is aiohttp.WSMsgType.BINARY:  # pushes, if any
                        message = await ws.receive(timeout=5)
                    assert message.type is aiohttp.WSMsgType.CLOSE, message
                assert time.monotonic() - started < 3
        finally:
            await runner.cleanup()


# --- finding each other on the LAN ----------------------------------------------------


def test_beacon_tags_rotate_and_match_only_their_group() -> None:
    mine, theirs = os.urandom(32), os.urandom(32)
    now = 1_800_000_000_000
    tag = beacon_tag(mine, now)
    assert beacon_tag(mine, now + BUCKET_MS) != tag  # a new tag every ten minutes
    assert beacon_tag(theirs, now) != tag
    keys = {"ours": mine, "other": theirs}
    assert groups_beaconed([tag], keys, now) == ["ours"]
    assert groups_beaconed([tag], keys, now + BUCKET_MS) == ["ours"]  # clocks a bit apart
    assert groups_beaconed([tag], keys, now + 3 * BUCKET_MS) == []  # an old beacon replayed
    assert groups_beaconed(["00" * TAG_BYTES], keys, now) == []


def _announced(expect: int, within: float = 15.0) -> list[dict[bytes, bytes | None]]:
    """The TXT records of the Hearth services announced on loopback, as a stranger sees
    them: browsing until ``expect`` of them are resolved or ``within`` seconds pass."""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    async def look() -> list[dict[bytes, bytes | None]]:
        names: set[str] = set()
        records: dict[str, dict[bytes, bytes | None]] = {}
        zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        browser = AsyncServiceBrowser(
            zc.zeroconf, [SERVICE_TYPE], handlers=[lambda name, **_: names.add(name)]
        )
        deadline = time.monotonic() + within
        while len(records) < expect and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            for name in sorted(names - set(records)):
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if await info.async_request(zc.zeroconf, 2000):
                    records[name] = dict(info.properties)
        await browser.async_cancel()
        await zc.async_close()
        return list(records.values())

    return asyncio.run(look())


@pytest.mark.process
def test_nodes_of_a_group_find_each_other_on_the_lan_and_nobody_learns_the_group(
    tmp_path: Path,
) -> None:
    ada, ben = two_members_without_a_relay(tmp_path)
    eve = Cli(tmp_path / "eve")
    eve("init", "--name", "Eve")
    eve("group", "create", "Elsewhere")
    group_id = json.loads(ada("group", "list", "--json").out)[0]["id"]
    with serving(ada), serving(ben), serving(eve):
        ada("resource", "add", "Found on the LAN")
        assert wait_until(lambda: "Found on the LAN" in ben("resource", "list").out)
        ben("resource", "add", "And back")
        assert wait_until(lambda: "And back" in ada("resource", "list").out)
        records = _announced(expect=3)
    assert len(records) >= 3
    on_air = repr(records).encode()
    for secret in (group_id.encode(), bytes.fromhex(group_id), b"Allotment", b"Ada", b"Ben"):
        assert secret not in on_air
    assert "Found on the LAN" not in eve("resource", "list").out
    logs = {n: (tmp_path / f"{n}-serve.log").read_text() for n in ("ada", "ben", "eve")}
    assert "found a node of 1 of our groups" in logs["ada"] + logs["ben"]
    assert "found a node" not in logs["eve"]
