"""Catch-up beside the automerge-repo sync server, same run; writes a JSON result to
bench/results/.

    python bench/repo_server_bench.py [--entries 10000] [--rounds 3]

A fresh Hearth device catches up a ledger of ``--entries`` entries through a real
``hearth-relay`` (bench/sync_bench.py's catch-up, with its floor: loading the same saved
document and decrypting its bytes). Then the same saved Automerge document is put in the
store of ``@automerge/automerge-repo-sync-server`` from npm, and a fresh Python
``automerge.repo`` with its WebSocket client fetches it, ``--rounds`` times: from opening
the connection until the document's heads are the saved ones (the first fetch has the
server load it from disk, later ones find it in its memory: both are reported). Wire
bytes are what each server sent (the relay's /metrics; the bytes the client received).

The sync server listens on every interface; it is started with a preload module that
makes it bind 127.0.0.1 only. Needs Node.js and npm (the server is installed into
bench/.repo-server on first use) and the ``websockets`` package (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from sync_bench import catch_up, save_result, start_relay

SERVER_PACKAGE = "@automerge/automerge-repo-sync-server@0.2.8"
SERVER_HOME = Path(__file__).parent / ".repo-server"
SERVER_MAIN = SERVER_HOME / "node_modules/@automerge/automerge-repo-sync-server/src/index.js"
# Every listen() in the server's process binds 127.0.0.1, whatever it asks for.
LOOPBACK_ONLY = """
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" || (typeof args[0] === "string" && /^\\d+$/.test(args[0]))) {
    if (typeof args[1] !== "string") args.splice(1, 0, "127.0.0.1");
  } else if (args[0] && typeof args[0] === "object" && args[0].path === undefined) {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
"""
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def program(name: str) -> str:
    """The full path of a program this benchmark needs."""
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"This benchmark needs {name} (Node.js and npm, and ss).")
    return found


def install_server() -> None:
    """The sync server from npm, once, into bench/.repo-server (not committed)."""
    if not SERVER_MAIN.exists():
        SERVER_HOME.mkdir(exist_ok=True)
        subprocess.run(
            [
                program("npm"),
                *("install", "--no-audit", "--no-fund", "--prefix", str(SERVER_HOME)),
                SERVER_PACKAGE,
            ],
            check=True,
        )
    (SERVER_HOME / "loopback-only.cjs").write_text(LOOPBACK_ONLY)


def document_id(raw: bytes) -> str:
    """An automerge-repo document id: base58check of a UUID's 16 bytes (the server ignores
    a request for an id that is not a valid UUID, and the client waits for ever)."""
    data = raw + hashlib.sha256(hashlib.sha256(raw).digest()).digest()[:4]
    number = int.from_bytes(data, "big")
    text = ""
    while number:
        number, digit = divmod(number, 58)
        text = _BASE58[digit] + text
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(store: Path) -> tuple[subprocess.Popen[str], str]:
    """The sync server on a free loopback port, serving what ``store`` holds."""
    port = free_port()
    proc = subprocess.Popen(
        [program("node"), "--require", str(SERVER_HOME / "loopback-only.cjs"), str(SERVER_MAIN)],
        cwd=SERVER_HOME,
        env={**os.environ, "PORT": str(port), "DATA_DIR": str(store)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "Listening" in line, line
    listening = subprocess.run(
        [program("ss"), "-ltnH", f"sport = :{port}"], capture_output=True, text=True
    )
    assert all("127.0.0.1:" in row for row in listening.stdout.splitlines()), listening.stdout
    return proc, f"ws://127.0.0.1:{port}"


async def fetch(url: str, doc_id: str, heads: list[bytes]) -> tuple[float, int]:
    """Seconds and bytes received for a fresh repo to hold the document at ``heads``."""
    from automerge.repo import InMemoryStorage, Repo
    from automerge.transports.websocket import WebSocketClientTransport

    received = 0

    class Counting(WebSocketClientTransport):
        async def recv(self) -> bytes:
            nonlocal received
            message = await super().recv()
            received += len(message)
            return message

    started = time.perf_counter()
    async with await Repo.load(InMemoryStorage()) as repo:
        transport = await Counting.connect(url)
        link = asyncio.create_task(repo.connect(transport))
        handle = None
        for _ in range(2000):  # the peer handshake first; bounded
            handle = await repo.find(f"automerge:{doc_id}")
            if handle is not None:
                break
            await asyncio.sleep(0.005)
        assert handle is not None, "the server never served the document"
        actor = repo._doc_actors[handle._actor_id]
        for _ in range(60_000):
            if sorted(actor.get_document().get_heads()) == heads:
                break
            await asyncio.sleep(0.001)
        else:
            raise AssertionError("the document never arrived whole")
        elapsed = time.perf_counter() - started
        await transport.close()
        link.cancel()
    return elapsed, received


def fetch_in_new_process(url: str, doc_id: str, saved: Path) -> tuple[float, int]:
    """:func:`fetch` in a Python process of its own, as a new client would be."""
    done = subprocess.run(
        [sys.executable, __file__, "--fetch", url, doc_id, str(saved)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(done.stdout.splitlines()[-1])
    return float(result["seconds"]), int(result["bytes"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--fetch", nargs=3, metavar=("URL", "DOC_ID", "SAVED"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    from automerge import core

    if args.fetch:
        url, doc_id, saved_path = args.fetch
        heads = sorted(core.Document.load(Path(saved_path).read_bytes()).get_heads())
        seconds, received = asyncio.run(fetch(url, doc_id, heads))
        print(json.dumps({"seconds": seconds, "bytes": received}))
        return 0

    install_server()
    root = Path(tempfile.mkdtemp(prefix="hearth-repo-server-bench-"))
    config = root / "relay.toml"  # the writer uploads its 10,000 bundles at once
    config.write_text("[relay]\npublish_burst = 100000\npublish_per_s = 100000.0\n")
    relay, url = start_relay(root / "relay", config)
    try:
        hearth = catch_up(args.entries, url, root)
    finally:
        relay.terminate()
        relay.wait()
    saved_path = root / "ledger.automerge"
    saved = saved_path.read_bytes()
    heads = sorted(core.Document.load(saved).get_heads())
    doc_id = document_id(uuid.uuid4().bytes)
    store = root / "repo-server"
    chunk = store / doc_id[:2] / doc_id[2:] / "snapshot"
    chunk.mkdir(parents=True)
    (chunk / hashlib.sha256(b"".join(heads)).hexdigest()).write_bytes(saved)
    server, server_url = start_server(store)
    try:
        runs = [fetch_in_new_process(server_url, doc_id, saved_path) for _ in range(args.rounds)]
    finally:
        server.terminate()
        server.wait()
    shutil.rmtree(root, ignore_errors=True)
    # The first fetch has the server load the document from its disk; later ones find it
    # in the server's memory.
    cold = runs[0][0]
    warm = statistics.median(s for s, _ in runs[1:]) if len(runs) > 1 else cold
    wire = statistics.median(b for _, b in runs)
    save_result(
        "repo-server",
        {
            "benchmark": "catch-up beside the automerge-repo sync server",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count()},
            "entries": args.entries,
            "saved_document_bytes": len(saved),
            "hearth": hearth,
            "automerge_repo_sync_server": {
                "package": SERVER_PACKAGE,
                "catch_up_s_runs": [round(s, 3) for s, _ in runs],
                "catch_up_s_first": round(cold, 3),
                "catch_up_s_again": round(warm, 3),
                "wire_bytes": wire,
                "wire_to_saved": round(wire / len(saved), 2),
            },
            "hearth_to_repo_server_first": round(float(str(hearth["catch_up_s"])) / cold, 2),
            "hearth_to_repo_server_again": round(float(str(hearth["catch_up_s"])) / warm, 2),
            "hearth_to_floor": hearth["ratio_to_floor"],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
