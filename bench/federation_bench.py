"""Federation costs: relays peered with each other; writes a JSON result to bench/results/.

    python bench/federation_bench.py [--offers 40] [--bundles 20000]

Two measurements, with real ``hearth-relay`` processes on 127.0.0.1:

- **offer_two_hops**: relays A–B–C peered in a line; a group whose node knows only A and
  a group whose node knows only C share a neighbourhood. Cy's node stays connected to C
  (as ``hearth serve`` does). Each round Ada offers something and syncs once with A; the
  time is from the offer being made until Cy's node holds it (polled every 2 ms): p50/p99.
- **throughput**: relay A holds ``--bundles`` bundles of one topic; it is then started
  peered with an empty relay B. Bundles per second from A being up (it then dials B)
  until B has stored them all — at the default peer rate limit (2,000/s, burst 20,000)
  and with the limit lifted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

import aiohttp
from sync_bench import make_bundles, percentile, registered_publisher, save_result
from sync_bench import start_relay as relay

from hearth.crypto import SigningKey
from hearth.neighbourhood import participation
from hearth.net.sync_client import stay_connected, sync_relays
from hearth.node.identity import create_identity
from hearth.node.node import open_node
from hearth.protocol.bundle import EpochKeys
from hearth.protocol.frames import Publish, decode_frame, encode_frame


def relay_id(data: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "id", "--data", str(data)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=15)


def peer_bundles_in(url: str) -> int:
    address = url.replace("ws://", "http://") + "/metrics"
    with urllib.request.urlopen(address, timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    found = re.findall(r"^hearth_relay_peer_bundles_in_total ([0-9.e+]+)$", text, re.M)
    return int(float(found[0])) if found else 0


async def offer_two_hops(root: Path, offers: int) -> dict[str, object]:
    ids = {name: relay_id(root / name) for name in "abc"}
    b, b_url = relay(root / "b", None, "--accept-peer", ids["a"], "--accept-peer", ids["c"])
    a, a_url = relay(root / "a", None, "--peer", f"{b_url}#{relay_id(root / 'b')}")
    c, c_url = relay(root / "c", None, "--peer", f"{b_url}#{relay_id(root / 'b')}")
    try:
        create_identity(root / "ada", name="Ada")
        create_identity(root / "cy", name="Cy")
        ada, cy = open_node(root / "ada"), open_node(root / "cy")
        ada_group = ada.create_group("Elm Street").id
        cy_group = cy.create_group("Riverside").id
        with ada.change() as ledger:
            ledger.add_relay(a_url)
            ledger.add_resource("Compost", quantity=Decimal(10_000), shareable=True)
        with cy.change() as ledger:
            ledger.add_relay(c_url)
        hood = participation.create(ada, ada_group, "Eastside")
        key = SigningKey.generate()
        participation.admit(ada, hood, key.public, "Riverside")
        participation.join(cy, cy_group, participation.encode_token(hood), key)
        await sync_relays(ada, [a_url], [ada_group], timeout=20)
        await sync_relays(cy, [c_url], [cy_group], timeout=20)
        listening = asyncio.create_task(stay_connected(cy, c_url, [cy_group]))
        await asyncio.sleep(1.0)
        samples, ada_syncs = [], []
        for _ in range(offers):
            started = time.perf_counter()
            offer = participation.add_offer(ada, ada_group, "Compost", Decimal(1))
            await sync_relays(ada, [a_url], [ada_group], timeout=20)
            ada_syncs.append(time.perf_counter() - started)
            deadline = started + 30
            while offer.id not in participation.state(cy, hood).offers:
                if time.perf_counter() > deadline:
                    raise RuntimeError("an offer did not arrive within 30 s")
                await asyncio.sleep(0.002)
            samples.append(time.perf_counter() - started)
        listening.cancel()
        ada.close()
        cy.close()
    finally:
        for proc in (a, b, c):
            stop(proc)
    return {
        "offers": offers,
        "p50_s": round(statistics.median(samples), 4),
        "p99_s": round(percentile(samples, 0.99), 4),
        "max_s": round(max(samples), 4),
        "ada_one_shot_sync_p50_s": round(statistics.median(ada_syncs), 4),
    }


async def fill(url: str, bundles: list[bytes], keys: EpochKeys) -> None:
    async with aiohttp.ClientSession() as http:
        publisher = await registered_publisher(http, url, keys)
        sent = acked = 0
        while acked < len(bundles):
            while sent < len(bundles) and sent - acked < 64:
                await publisher.send_bytes(encode_frame(Publish(envelope=bundles[sent])))
                sent += 1
            if decode_frame((await publisher.receive()).data).TYPE == "ack":
                acked += 1
        await publisher.close()


def throughput(root: Path, count: int, lifted: bool) -> dict[str, object]:
    keys = EpochKeys(group_id=os.urandom(32), epoch_id=os.urandom(32), secret=os.urandom(32))
    bundles = make_bundles(keys, SigningKey.generate(), count)
    config = root / "relay.toml"
    limits = "peer_publish_per_s = 1000000.0\npeer_publish_burst = 1000000\n" if lifted else ""
    config.write_text(f"[relay]\npublish_burst = 1000000\npublish_per_s = 100000.0\n{limits}")
    a_data, b_data = root / "a", root / "b"
    a, a_url = relay(a_data, config)
    asyncio.run(fill(a_url, bundles, keys))
    stop(a)
    b, b_url = relay(b_data, config, "--accept-peer", relay_id(a_data))
    a, _ = relay(a_data, config, "--peer", f"{b_url}#{relay_id(b_data)}")
    started = time.perf_counter()  # A is listening; it dials B now
    try:
        while peer_bundles_in(b_url) < count:
            if time.perf_counter() - started > 600:
                raise RuntimeError("the mirror did not finish within 10 minutes")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        stop(a)
        stop(b)
    return {
        "bundles": count,
        "peer_limit": "lifted" if lifted else "default 2000/s, burst 20000",
        "seconds": round(elapsed, 2),
        "bundles_per_s": round(count / elapsed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--offers", type=int, default=40)
    parser.add_argument("--bundles", type=int, default=20_000)
    args = parser.parse_args()
    result: dict[str, object] = {"machine_cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        result["offer_two_hops"] = asyncio.run(offer_two_hops(Path(tmp) / "hops", args.offers))
    for lifted in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            key = "throughput_lifted" if lifted else "throughput_default"
            result[key] = throughput(Path(tmp), args.bundles, lifted)
    save_result("federation", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
