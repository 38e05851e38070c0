"""Attacks on a public relay's moderation and admission (issue 25), each as a hostile
client, a hostile member or an unlucky operator would try it: real relay processes on
127.0.0.1 (a relay's core where only an exact interleaving shows the weakness)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from hearth.errors import ConfigError
from hearth.protocol.frames import Error, Hello, encode_frame
from relay.config import RelayConfig, load_config
from relay.core import RelayCore, ToClient
from relay.door import Door
from relay.forwarded import counted_as
from relay.sqlite_store import SqliteStore
from tests.peering_simulation import make_pool
from tests.test_relay_backup import relay_command
from tests.test_relay_limits import Client
from tests.test_relay_moderation import answer, applied
from tests.test_relay_peering import metric, relay_id
from tests.test_sync_processes import start_relay, wait_until

[(KEYS, BUNDLES), (OTHER_KEYS, _)] = make_pool(groups=2, per_group=3, seed=2525)


async def refusal(client: Client) -> str:
    """The code of the error the relay answers ``client`` with next."""
    frame = await client.receive(timeout=5)
    assert isinstance(frame, Error), frame
    return frame.code


async def handshake_status(url: str, header_lines: list[str]) -> tuple[int, asyncio.StreamWriter]:
    """Open a WebSocket by hand with these raw header lines (a proxy may send a header
    twice, which aiohttp's client will not): the HTTP status, and the open socket."""
    host, port = url.removeprefix("ws://").rstrip("/").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    extra = "".join(f"{line}\r\n" for line in header_lines)
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n"
        ).encode()
    )
    status = await asyncio.wait_for(reader.readline(), 10)
    return int(status.split()[1]), writer


@pytest.mark.process
async def test_a_forwarded_for_header_sent_twice_is_read_from_its_last_line(
    tmp_path: Path,
) -> None:
    """A proxy that adds its own X-Forwarded-For line (HAProxy's ``option forwardfor``)
    leaves the client's forged line first: HTTP makes two lines one list, in order, so the
    client is still the last address, and forging the first line buys no fresh address."""
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\ntrusted_proxies = ["127.0.0.1"]\nmax_connections_per_ip = 2\n')
    relay = start_relay(tmp_path / "relay", config=config)
    sockets = []
    try:
        statuses = []
        for n in range(4):
            status, writer = await handshake_status(
                relay.url,
                [f"X-Forwarded-For: 10.0.{n}.1", "X-Forwarded-For: 198.51.100.4"],
            )
            statuses.append(status)
            sockets.append(writer)
        assert statuses == [101, 101, 503, 503]
    finally:
        for writer in sockets:
            writer.close()
        relay.kill()


@pytest.mark.process
async def test_a_revoked_invite_admits_nothing_more_on_connections_already_open(
    tmp_path: Path,
) -> None:
    """``uninvite`` revokes a code for the connections that came with it too: an always-on
    node (or a removed member) holding one open must not go on registering groups."""
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\nadmission = "allow-list"\n')
    relay = start_relay(tmp_path / "relay", config=config)
    on_store = ["--data", str(relay.data)]
    try:
        made = relay_command("invite", *on_store)
        assert made.returncode == 0, made.stderr
        code = made.stdout.split()[0]
        applied(relay, "invite")
        async with aiohttp.ClientSession() as http:
            held = await Client.connect(http, f"{relay.url}?admit={code}", "127.0.0.1")
            await held.register(KEYS)
            assert await answer(held, BUNDLES[0]) == "ack"
            assert relay_command("uninvite", code, *on_store).returncode == 0
            applied(relay, "uninvite")
            await held.register(OTHER_KEYS)
            assert await refusal(held) == "not-admitted"
            assert await answer(held, BUNDLES[1]) == "not-admitted"
            await held.ws.close()
    finally:
        relay.kill()


@pytest.mark.process
async def test_keys_in_the_config_count_whatever_their_case(tmp_path: Path) -> None:
    """``check-config`` takes a key in capitals (hex is hex); the relay must then match it,
    not refuse the very group the operator listed."""
    config = tmp_path / "relay.toml"
    upper = KEYS.relay_key.public.hex().upper()
    config.write_text(f'[relay]\nadmission = "allow-list"\nallowed_keys = ["{upper}"]\n')
    assert relay_command("check-config", str(config)).returncode == 0
    relay = start_relay(tmp_path / "relay", config=config)
    try:
        async with aiohttp.ClientSession() as http:
            member = await Client.connect(http, relay.url, "127.0.0.1")
            await member.register(KEYS)
            assert await answer(member, BUNDLES[0]) == "ack"
            await member.ws.close()
    finally:
        relay.kill()
    peer = "AB" * 32
    assert load_config(None, add_accept_peers=[peer]).accept_peers == (peer.lower(),)


@pytest.mark.parametrize("setting", ["heartbeat_s = inf", "handshake_timeout_s = nan"])
def test_check_config_refuses_numbers_that_are_not_finite(tmp_path: Path, setting: str) -> None:
    """TOML has ``inf`` and ``nan``: neither is a limit. Refused by name, not a traceback."""
    config = tmp_path / "relay.toml"
    config.write_text(f"[relay]\n{setting}\n")
    done = relay_command("check-config", str(config))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert setting.split()[0] in done.stderr


@pytest.mark.process
async def test_a_reload_with_an_infinite_heartbeat_keeps_the_relay_serving(
    tmp_path: Path,
) -> None:
    """SIGHUP with a file whose numbers are not finite keeps the old settings and says so;
    it must not break every handshake after it."""
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\n")
    relay = start_relay(tmp_path / "relay", config=config)
    try:
        config.write_text("[relay]\nheartbeat_s = inf\n")
        relay.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "not reloaded" in (relay.data / "relay.log").read_text(), 15), (
            "the relay did not say the settings were refused"
        )
        async with aiohttp.ClientSession() as http:
            member = await Client.connect(http, relay.url, "127.0.0.1")
            await member.register(KEYS)
            assert await answer(member, BUNDLES[0]) == "ack"
            await member.ws.close()
    finally:
        relay.kill()


def test_trusting_every_address_as_a_proxy_is_refused(tmp_path: Path) -> None:
    """``trusted_proxies = ["0.0.0.0/0"]`` lets every client name its own address: no
    per-address limit or ban would hold. check-config refuses it."""
    for wide in ("0.0.0.0/0", "::/0", "0.0.0.0/4"):
        config = tmp_path / "relay.toml"
        config.write_text(f'[relay]\ntrusted_proxies = ["{wide}"]\n')
        with pytest.raises(ConfigError, match="trusted_proxies"):
            load_config(config)
    config.write_text('[relay]\ntrusted_proxies = ["10.0.0.0/8", "fc00::/7"]\n')
    assert load_config(config).trusted_proxies == ("10.0.0.0/8", "fc00::/7")


@pytest.mark.process
async def test_a_ban_written_as_an_ipv4_mapped_address_bans_that_address(
    tmp_path: Path,
) -> None:
    """``ss`` and a dual-stack listener show IPv4 clients as ``::ffff:198.51.100.7``: a ban
    written so must ban 198.51.100.7, not an address no client ever has."""
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\ntrusted_proxies = ["127.0.0.1"]\n')
    relay = start_relay(tmp_path / "relay", config=config)
    try:
        banned = relay_command("ban", "::ffff:198.51.100.0/120", "--data", str(relay.data))
        assert banned.returncode == 0, banned.stderr
        assert "198.51.100.0/24" in banned.stdout
        applied(relay, "ban")
        async with aiohttp.ClientSession() as http:
            for address in ("198.51.100.7", "::ffff:198.51.100.8"):
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await Client.connect(http, relay.url, address)
    finally:
        relay.kill()


def test_a_huge_log_length_is_refused_plainly(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "relay.db").close()
    for lines in ("100000000000000000000", "-1"):
        done = relay_command("moderation", "--log", lines, "--data", str(tmp_path))
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert "--log" in done.stderr


@pytest.mark.process
def test_banning_a_linked_peer_relay_cuts_its_link(tmp_path: Path) -> None:
    """``ban ID`` of a peer relay means no link: one open already is closed, and the peer
    dialing again is refused, so nothing more is mirrored either way."""
    dialer_id = relay_id(tmp_path / "a")
    b = start_relay(tmp_path / "b", extra=["--accept-peer", dialer_id])
    a = start_relay(tmp_path / "a", extra=["--peer", f"{b.url}#{relay_id(b.data)}"])
    try:
        assert wait_until(lambda: metric(b, "hearth_relay_peer_links") == 1, 10)
        banned = relay_command("ban", dialer_id, "--data", str(b.data))
        assert banned.returncode == 0, banned.stderr
        applied(b, "ban")
        assert wait_until(lambda: metric(b, "hearth_relay_peer_links") == 0, 5), (
            "the banned peer relay is still linked"
        )
        time.sleep(1.5)  # it dials again within a second or two: and is refused
        assert metric(b, "hearth_relay_peer_links") == 0
    finally:
        a.kill()
        b.kill()


def _hello(core: RelayCore, client: int) -> None:
    assert core.admit(client, f"10.0.0.{client}")
    for out in core.receive(client, encode_frame(Hello(versions=[1], role="node", agent="t"))):
        assert isinstance(out, ToClient)
        core.encode(client, out.frame)


def test_a_dropped_topic_cannot_be_registered_again_before_the_relay_looks(
    tmp_path: Path,
) -> None:
    """``drop`` commits, and the relay reads the moderation lists again a second later (or
    on SIGHUP). A client registering the topic again in that second (a node does at once
    when told its topic is unknown) must not bring it back."""
    from hearth.protocol.bundle import registration_proof
    from hearth.protocol.frames import Register

    core = RelayCore(RelayConfig(), SqliteStore(tmp_path / "relay.db"), clock=time.monotonic)
    _hello(core, 1)
    register = encode_frame(
        Register(topic=KEYS.topic, relay_key=KEYS.relay_key.public, proof=registration_proof(KEYS))
    )
    assert core.receive(1, register) == []
    operator = SqliteStore(tmp_path / "relay.db")  # `hearth-relay drop`, another process
    assert operator.moderate("drop", KEYS.topic.hex(), "spam", time.time())
    answers = core.receive(1, register)
    assert [getattr(o.frame, "code", None) for o in answers if isinstance(o, ToClient)] == [
        "topic-refused"
    ]
    assert core.store.topic(KEYS.topic) is None
    operator.close()


@pytest.mark.process
def test_a_reload_sent_as_soon_as_the_relay_listens_does_not_stop_it(tmp_path: Path) -> None:
    """``systemctl reload`` (or a script) right after the relay says it listens: the
    SIGHUP handler must already be there, not SIGHUP's default, which ends the process
    (before it was, this ended the relay in most runs on a busy machine)."""
    relay = start_relay(tmp_path / "relay")
    try:
        for _ in range(3):
            relay.proc.send_signal(signal.SIGHUP)
        assert wait_until(
            lambda: "moderation lists reloaded" in (relay.data / "relay.log").read_text(), 10
        ), relay.proc.poll()
        assert relay.proc.poll() is None
    finally:
        relay.kill()


def test_a_config_file_that_is_not_text_is_refused_plainly(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_bytes(b"[relay]\nmax_connections = 5  # caf\xe9 (Latin-1)\n")
    for command in (["check-config", str(config)], ["--config", str(config), "id"]):
        done = relay_command(*command)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        assert "UTF-8" in done.stderr


def test_a_host_that_is_no_address_is_refused_by_check_config(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\nhost = "0.0.0.0\\u0000"\n')
    with pytest.raises(ConfigError, match="host"):
        load_config(config)


@pytest.mark.process
async def test_an_ipv6_client_gains_nothing_by_moving_within_its_own_network(
    tmp_path: Path,
) -> None:
    """An IPv6 client has a whole /64 to itself (its provider routes it all to it) and can
    take a fresh address in it for each connection: per-address limits count its /64,
    and a ban of one of its addresses bans the /64."""
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\ntrusted_proxies = ["127.0.0.1"]\nmax_connections_per_ip = 2\n')
    relay = start_relay(tmp_path / "relay", config=config)
    sockets = []
    try:
        statuses = []
        for n in range(1, 5):
            status, writer = await handshake_status(
                relay.url, [f"X-Forwarded-For: 2001:db8:1:1::{n}"]
            )
            statuses.append(status)
            sockets.append(writer)
        assert statuses == [101, 101, 503, 503]
        banned = relay_command("ban", "2001:db8:2:2::7", "--data", str(relay.data))
        assert banned.returncode == 0, banned.stderr
        assert "2001:db8:2:2::/64" in banned.stdout
        applied(relay, "ban")
        status, writer = await handshake_status(relay.url, ["X-Forwarded-For: 2001:db8:2:2::8"])
        sockets.append(writer)
        assert status == 503
    finally:
        for writer in sockets:
            writer.close()
        relay.kill()


def test_the_door_counts_an_ipv6_client_by_its_network_before_its_request_is_read() -> None:
    """Without a proxy, a socket's own address is all there is before the handshake: the
    door's per-address limit counts an IPv6 client's /64 too."""
    door = Door(
        max_sockets=100, per_address=2, timeout_s=10, clock=time.monotonic, counted_as=counted_as
    )
    answers = [door.enter(n, f"2001:db8:5:5::{n}")[0] for n in range(1, 4)]
    assert answers == [None, None, "connection_limit"]
    assert door.enter(9, "2001:db8:5:6::1")[0] is None
    door.left(1)
    assert door.enter(10, "2001:db8:5:5::99")[0] is None


def test_a_restore_says_where_it_put_the_relay_key(tmp_path: Path) -> None:
    """With PostgreSQL the store goes into the database, but the key into the data
    directory: ``data`` defaults to ``relay-data`` under wherever the command ran. A
    restore that does not say where the key went leaves the relay (started on its real
    data directory) to make a new id, silently."""
    import subprocess

    from tests.test_relay_backup import a_relay_data_directory, relay_script

    old_id = a_relay_data_directory(tmp_path / "old")
    made = relay_command("backup", str(tmp_path / "b.db"), "--data", str(tmp_path / "old"))
    assert made.returncode == 0, made.stderr
    done = subprocess.run(
        [*relay_script(), "restore", str(tmp_path / "b.db"), "--data", "relay-data"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert old_id in done.stdout
    assert str(tmp_path / "relay-data" / "relay.key") in done.stdout


def test_what_check_config_prints_is_a_config_it_takes(tmp_path: Path) -> None:
    """``check-config --print`` is the settings in effect; saved as a file (to edit), it
    must be taken back as the same settings, whatever characters a path holds."""
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\ndata = "/srv/hearth \\"relay\\" \U0001f525 caf\u00e9\\t"\n')
    printed = relay_command("check-config", str(config), "--print")
    assert printed.returncode == 0, printed.stderr
    again = tmp_path / "printed.toml"
    again.write_text(printed.stdout)
    assert load_config(again) == load_config(config)


@pytest.mark.parametrize("setting", ["heartbeat_s", "handshake_timeout_s", "send_stall_s"])
def test_check_config_refuses_timeouts_no_client_on_the_internet_can_meet(
    tmp_path: Path, setting: str
) -> None:
    """``heartbeat_s = 0.01`` is not 0, but it cannot work either: a pong must come back
    within half of it (5 ms), and clients are told a heartbeat of 0 s (``/info``'s whole
    seconds); a handshake or a stalled send given less than a second cuts off any client
    further away than the next room."""
    config = tmp_path / "relay.toml"
    config.write_text(f"[relay]\n{setting} = 0.01\n")
    with pytest.raises(ConfigError, match=setting):
        load_config(config)
    config.write_text(f"[relay]\n{setting} = 1\n")
    load_config(config)


@pytest.mark.process
def test_a_peer_taken_out_of_accept_peers_is_unlinked_at_the_reload(tmp_path: Path) -> None:
    """The docs say a reload applies the peers a relay accepts: a peer relay no longer
    listed must not keep the link it made before (nor make a new one)."""
    dialer_id = relay_id(tmp_path / "a")
    config = tmp_path / "b.toml"
    config.write_text(f'[relay]\naccept_peers = ["{dialer_id}"]\n')
    b = start_relay(tmp_path / "b", config=config)
    a = start_relay(tmp_path / "a", extra=["--peer", f"{b.url}#{relay_id(b.data)}"])
    try:
        assert wait_until(lambda: metric(b, "hearth_relay_peer_links") == 1, 10)
        config.write_text("[relay]\naccept_peers = []\n")
        b.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: metric(b, "hearth_relay_peer_links") == 0, 5)
        time.sleep(1.5)  # it dials again within a second or two: and is refused
        assert metric(b, "hearth_relay_peer_links") == 0
    finally:
        a.kill()
        b.kill()


def test_check_config_refuses_an_outbound_buffer_smaller_than_one_bundle(tmp_path: Path) -> None:
    """A live delivery that does not fit in a client's outbound buffer cuts the client off
    as a slow reader: with ``outbound_buffer_bytes`` under ``max_frame_bytes``, a member
    who reads promptly is cut off by any big bundle that finds its socket busy, again at
    each reconnect."""
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\noutbound_buffer_bytes = 65536\n")
    with pytest.raises(ConfigError, match="outbound_buffer_bytes"):
        load_config(config)


@pytest.mark.process
async def test_an_allowed_key_admits_its_own_group_not_a_members_side_store(
    tmp_path: Path, relay_store: list[str]
) -> None:
    """Every member holds the group's relay key, so a hostile member can sign a
    registration for any topic under it. A key admits one epoch of one group, which has
    one topic: more topics under an allowed key would be storage without end (each with
    its own quota) for whoever holds it, until the relay is full for everyone."""
    from hearth.protocol.bundle import _REGISTER_SIGNED
    from hearth.protocol.frames import Register

    key = KEYS.relay_key
    config = tmp_path / "relay.toml"
    config.write_text(f'[relay]\nadmission = "allow-list"\nallowed_keys = ["{key.public.hex()}"]\n')
    relay = start_relay(tmp_path / "relay", config=config, extra=relay_store)
    try:
        async with aiohttp.ClientSession() as http:
            member = await Client.connect(http, relay.url, "127.0.0.1")
            await member.register(KEYS)
            assert await answer(member, BUNDLES[0]) == "ack"
            for n in range(3):
                side = bytes([n + 1]) * 32
                proof = key.sign(_REGISTER_SIGNED + side + key.public)
                await member.send(Register(topic=side, relay_key=key.public, proof=proof))
                assert await refusal(member) == "key-has-topic"
            await member.register(KEYS)  # its own topic, as each time it connects
            assert await answer(member, BUNDLES[1]) == "ack"
            await member.ws.close()
    finally:
        relay.kill()


@pytest.mark.process
async def test_one_invite_admits_a_group_not_any_number_of_them(tmp_path: Path) -> None:
    """An invite is for one group: its topic, and the new topic after each member
    removal. Whoever holds the code (every member, a removed one too: it is in the
    relay address the ledger lists) must not be able to register groups without end from
    as many addresses as they have; an invite should take some tens of topics at most."""
    import json

    from hearth.crypto import SigningKey
    from hearth.protocol.bundle import _REGISTER_SIGNED
    from hearth.protocol.frames import Register

    config = tmp_path / "relay.toml"
    config.write_text('[relay]\nadmission = "allow-list"\ntrusted_proxies = ["127.0.0.1"]\n')
    relay = start_relay(tmp_path / "relay", config=config)
    try:
        made = relay_command("invite", "--data", str(relay.data))
        code = made.stdout.split()[0]
        applied(relay, "invite")
        async with aiohttp.ClientSession() as http:
            for address in range(4):  # 16 new topics a connection, 20 an address at once
                holder = await Client.connect(
                    http, f"{relay.url}?admit={code}", f"203.0.113.{address}"
                )
                for _ in range(16):
                    key, topic = SigningKey.generate(), SigningKey.generate().public
                    proof = key.sign(_REGISTER_SIGNED + topic + key.public)
                    await holder.send(Register(topic=topic, relay_key=key.public, proof=proof))
                await holder.send(Register(topic=topic, relay_key=b"", proof=b""))
                while getattr(await holder.receive(timeout=5), "code", "") != (
                    "bad-registration"  # the last one: all before it were read
                ):
                    pass
                await holder.ws.close()
        listed = relay_command("topics", "--json", "--data", str(relay.data)).stdout
        assert len([json.loads(line) for line in listed.splitlines()]) == 16
    finally:
        relay.kill()
