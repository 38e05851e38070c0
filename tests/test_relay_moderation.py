"""Moderation of a public relay (relay/moderation.py): ``hearth-relay topics``, ``freeze``,
``drop``, ``ban`` and ``allow`` run beside a real relay process while it serves clients,
on each store; every action is logged and counted, and none shows content or keys."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from hearth.crypto import SigningKey
from hearth.protocol.frames import Ack, Error, Publish
from tests.conftest import Cli
from tests.peering_simulation import make_pool
from tests.test_relay_backup import relay_command
from tests.test_relay_limits import Client
from tests.test_sync_processes import Relay, start_relay

pytestmark = pytest.mark.process

[(KEYS, BUNDLES), (OTHER_KEYS, OTHER_BUNDLES)] = make_pool(groups=2, per_group=6, seed=25)


def metrics_text(relay: Relay) -> str:
    url = relay.url.replace("ws://", "http://") + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as got:  # noqa: S310 - loopback
        return str(got.read().decode())


def applied(relay: Relay, action: str, times: int = 1, *, hup: bool = True) -> None:
    """Wait (a bounded while) until the running relay has applied ``times`` ``action``s:
    told at once with SIGHUP, or (``hup=False``) when it looks by itself."""
    if hup:
        relay.proc.send_signal(signal.SIGHUP)
    line = f'hearth_relay_moderation_actions_total{{action="{action}"}} {float(times)}'
    deadline = time.monotonic() + 15
    while line not in metrics_text(relay):
        assert time.monotonic() < deadline, f"the relay never applied {action}"
        time.sleep(0.1)


async def answer(client: Client, envelope: bytes) -> str:
    await client.send(Publish(envelope=envelope))
    frame = await client.receive()
    return "ack" if isinstance(frame, Ack) else str(getattr(frame, "code", "?"))


async def test_an_operator_moderates_a_running_relay(
    tmp_path: Path, relay_store: list[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\ntrusted_proxies = ["127.0.0.1"]\n')
    relay = start_relay(tmp_path / "relay", config=config, extra=relay_store)
    on_store = ["--data", str(relay.data), *relay_store]

    def moderate(*args: str) -> str:
        done = relay_command(*args, *on_store)
        assert done.returncode == 0, done.stderr
        return done.stdout

    topic = KEYS.topic.hex()
    try:
        async with aiohttp.ClientSession() as http:
            member = await Client.connect(http, relay.url, "198.51.100.7")
            await member.register(KEYS)
            assert [await answer(member, b) for b in BUNDLES[:3]] == ["ack"] * 3

            listed = [json.loads(line) for line in moderate("topics", "--json").splitlines()]
            assert [row["topic"] for row in listed] == [topic]
            assert listed[0]["bundles"] == 3
            assert listed[0]["bytes"] == sum(len(b) for b in BUNDLES[:3])
            assert abs(listed[0]["first_seen"] - time.time()) < 120
            assert abs(listed[0]["last_write"] - time.time()) < 120
            assert listed[0]["state"] == "open"
            assert "Froze topic" in moderate("freeze", topic, "--reason", "spam")
            # At once: the insert itself checks the topic's row.
            assert await answer(member, BUNDLES[3]) == "topic-held"
            table = moderate("topics")
            assert f"{topic}  " in table
            assert "frozen (operator)" in table
            assert KEYS.relay_key.public.hex() not in table  # sizes and times, nothing more
            moderate("unfreeze", topic)
            assert await answer(member, BUNDLES[3]) == "ack"

            # A banned range is cut off within seconds and cannot come back; others can.
            assert "Banned 198.51.100.0/24" in moderate("ban", "198.51.100.0/24")
            applied(relay, "ban", hup=False)  # the relay looks every second by itself
            closed = await member.ws.receive(timeout=10)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            await member.ws.close()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await Client.connect(http, relay.url, "198.51.100.9")
            assert refused.value.status == 503
            other = await Client.connect(http, relay.url, "203.0.113.5")
            moderate("unban", "198.51.100.0/24")
            applied(relay, "unban")
            member = await Client.connect(http, relay.url, "198.51.100.7")

            # A banned relay key: its topics take nothing more, and no new ones register.
            key = KEYS.relay_key.public.hex()
            moderate("ban", key)
            applied(relay, "ban", 2)
            assert await answer(member, BUNDLES[4]) == "key-banned"
            moderate("unban", key)
            applied(relay, "unban", 2)

            # A client known only by its tag in the log (no address is ever logged).
            pest = await Client.connect(http, relay.url, "203.0.113.66")
            await pest.ws.send_bytes(b"not a frame")
            await pest.ws.receive(timeout=10)  # closed for it
            await pest.ws.close()
            lines = (relay.data / "relay.log").read_text().splitlines()
            tag = next(
                json.loads(line)["client"] for line in reversed(lines) if "bad_frame" in line
            )
            assert "until the tag changes" in moderate("ban", tag)
            applied(relay, "ban", 3)
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await Client.connect(http, relay.url, "203.0.113.66")
            neighbour = await Client.connect(http, relay.url, "203.0.113.67")
            await neighbour.ws.close()

            # Dropped: all it held is gone, and registering it again is refused.
            refused_drop = relay_command("drop", topic, *on_store)
            assert refused_drop.returncode == 1
            assert "--yes" in refused_drop.stderr
            moderate("drop", topic, "--yes", "--reason", "abandoned")
            applied(relay, "drop")
            assert moderate("topics", "--json") == ""
            await member.register(KEYS)
            frame = await member.receive()
            assert isinstance(frame, Error)
            assert frame.code == "topic-refused"
            await other.register(OTHER_KEYS)
            assert await answer(other, OTHER_BUNDLES[0]) == "ack"
            await member.ws.close()
            await other.ws.close()

        shown = moderate("moderation")
        for action in ("freeze", "unfreeze", "ban", "unban", "drop"):
            assert f"  {action} " in shown
        assert "(abandoned)" in shown
        text = metrics_text(relay)
        assert 'hearth_relay_rejections_total{reason="topic-held"} 1.0' in text
        assert 'hearth_relay_rejections_total{reason="banned"} 2.0' in text
        assert 'hearth_relay_rejections_total{reason="topic-refused"} 1.0' in text
        relay.kill(15)
        logged = (relay.data / "relay.log").read_text()
        assert "198.51.100" not in logged  # addresses never reach the log, bans included
    finally:
        relay.kill()


async def test_an_allow_list_relay_takes_only_the_keys_it_lists(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    listed = SigningKey(bytes(32)).public.hex()
    config.write_text(f'[relay]\nadmission = "allow-list"\nallowed_keys = ["{listed}"]\n')
    relay = start_relay(tmp_path / "relay", config=config)
    try:
        async with aiohttp.ClientSession() as http:
            member = await Client.connect(http, relay.url, "127.0.0.1")
            await member.register(KEYS)
            frame = await member.receive()
            assert isinstance(frame, Error)
            assert frame.code == "not-admitted"
            allowed = relay_command("allow", KEYS.relay_key.public.hex(), "--data", str(relay.data))
            assert allowed.returncode == 0, allowed.stderr
            applied(relay, "allow")
            await member.register(KEYS)
            assert await answer(member, BUNDLES[0]) == "ack"
            await member.ws.close()

            # Or the operator makes an invite, which a group adds to the relay's address.
            made = relay_command("invite", "--reason", "Elm Street", "--data", str(relay.data))
            assert made.returncode == 0, made.stderr
            code = made.stdout.split()[0]
            assert f"?admit={code}" in made.stdout
            applied(relay, "invite")
            stranger = await Client.connect(http, relay.url + "?admit=wrong", "127.0.0.1")
            await stranger.register(OTHER_KEYS)
            refused = await stranger.receive()
            assert isinstance(refused, Error)
            assert refused.code == "not-admitted"
            await stranger.ws.close()
            invited = await Client.connect(http, f"{relay.url}?admit={code}", "127.0.0.1")
            await invited.register(OTHER_KEYS)
            assert await answer(invited, OTHER_BUNDLES[0]) == "ack"
            await invited.ws.close()
            revoked = relay_command("uninvite", code, "--data", str(relay.data))
            assert "Revoked" in revoked.stdout
            applied(relay, "uninvite")
            late = await Client.connect(http, f"{relay.url}?admit={code}", "127.0.0.1")
            assert await answer(late, OTHER_BUNDLES[1]) == "not-admitted"
            await late.ws.close()
    finally:
        relay.kill()


def test_a_member_whose_group_an_allow_list_relay_refuses_is_told_why(tmp_path: Path) -> None:
    """`hearth sync` against a relay that will not keep the group fails there and says
    why, in the member's words (it said "Sent 0 bundles", exit 0, while the reason went
    to a log line), and `status` says so too; once the operator allows it, it syncs."""
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\nadmission = "allow-list"\n')
    relay = start_relay(tmp_path / "relay", config=config)
    try:
        cat = Cli(tmp_path / "cat")
        cat("init", "--name", "Cat")
        cat("group", "create", "Other", "--relay", relay.url)
        cat("resource", "add", "Saw", "--kind", "tool")
        refused = cat("sync", check=False)
        assert refused.code != 0
        assert "takes only the groups its operator lists" in refused.out + refused.err
        assert "takes only the groups its operator lists" in cat("status").out
        [key] = re.findall(r"\b[0-9a-f]{64}\b", cat("relay", "key").out)
        assert relay_command("allow", key, "--data", str(relay.data)).returncode == 0
        applied(relay, "allow")
        assert "Sent 3 bundles" in cat("sync").out
        listed = relay_command("topics", "--data", str(relay.data)).stdout
        [topic] = re.findall(r"\b[0-9a-f]{64}\b", listed)
        assert relay_command("freeze", topic, "--data", str(relay.data)).returncode == 0
        applied(relay, "freeze")
        cat("resource", "add", "Plane", "--kind", "tool")
        frozen = cat("sync", check=False)
        assert frozen.code != 0
        assert "operator has frozen this group's topic" in frozen.out + frozen.err
    finally:
        relay.kill()
