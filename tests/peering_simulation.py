"""A deterministic simulation of peered relays (SECURITY.md §8, DESIGN §6).

Production :class:`~relay.core.RelayCore` on every relay, with the clock, the randomness,
the transport and the stores injected. Relays are peered in a line, sometimes closed into
a ring; clients publish bundles of a few groups to any relay (the same bundle to several,
as nodes that list several relays do); links carry frames in order but drop at random,
losing what was in flight; relays restart from their stores; one relay may be dishonest:
it forwards bundles that were never admitted, sends its peers frames no relay would (a
cursor no store holds, a second ``mirror``) and answers dials in another relay's name.
Every run is fixed by its seed.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from hearth.crypto import SigningKey
from hearth.errors import ProtocolError
from hearth.protocol.bundle import EpochKeys, Inner, registration_proof, seal_bundle
from hearth.protocol.frames import (
    PROTOCOL_VERSION,
    Deliver,
    Error,
    Frame,
    Hello,
    Mirror,
    Publish,
    Register,
    Welcome,
    decode_frame,
    encode_frame,
)
from hearth.testing import seeded_bytes
from relay.config import RelayConfig
from relay.core import ALL_TOPICS, CloseClient, MirrorCatchUp, Output, Pause, RelayCore, ToClient
from relay.identity import acceptor_proof
from relay.sqlite_store import SqliteStore


def make_pool(
    groups: int = 3, per_group: int = 30, extra_bytes: int = 0, seed: int = 0
) -> list[tuple[EpochKeys, list[bytes]]]:
    """Sealed bundles of a few groups, made once: sealing is the slow part (each bundle
    ``extra_bytes`` bigger, with random bytes no padding bucket can hide)."""
    rng = random.Random(seed)
    device = SigningKey(rng.randbytes(32))
    pool = []
    for g in range(groups):
        keys = EpochKeys(
            group_id=rng.randbytes(32), epoch_id=rng.randbytes(32), secret=rng.randbytes(32)
        )
        envelopes = []
        for seq in range(1, per_group + 1):
            inner = Inner(
                kind="content",
                group_id=keys.group_id,
                epoch_id=keys.epoch_id,
                author=device.public,
                seq=seq,
                prev=b"",
                auth_heads=(),
                created_at=0,
                payload=f"group {g} bundle {seq}".encode()
                + (rng.randbytes(extra_bytes) if extra_bytes else b""),
            )
            envelope = seal_bundle(inner, keys=keys, device=device, salt=rng.randbytes(32))
            envelopes.append(envelope.encode())
        pool.append((keys, envelopes))
    return pool


def forged(envelope: bytes) -> bytes:
    """A bundle no relay should admit: one bit of its ciphertext flipped."""
    data = bytearray(envelope)
    data[-100] ^= 1
    return bytes(data)


@dataclass
class PeerLink:
    """One simulated WebSocket between a dialing relay and the relay it dials."""

    dialer: int
    acceptor: int
    client_at_dialer: int
    client_at_acceptor: int
    to_acceptor: deque[bytes] = field(default_factory=deque)
    to_dialer: deque[bytes] = field(default_factory=deque)
    sent_through: dict[int, int] = field(default_factory=dict)  # sending relay -> cursor


class PeeringSimulation:
    """Relays peered in a line (or a ring), driven step by step from a seed."""

    def __init__(self, root: Path, seed: int, pool: list[tuple[EpochKeys, list[bytes]]]) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.pool = pool
        self.trace: list[str] = []
        count = self.rng.randint(3, 5)
        self.identities = [SigningKey(seeded_bytes(seed * 10 + i)(32)) for i in range(count)]
        self.config = RelayConfig(
            publish_burst=100_000,
            accept_peers=tuple(key.public.hex() for key in self.identities),
        )
        self.stores = [SqliteStore(Path(":memory:")) for _ in range(count)]
        self.relays = [self._core(i) for i in range(count)]
        self.edges = [(i, i + 1) for i in range(count - 1)]
        if self.rng.random() < 0.5:
            self.edges.append((count - 1, 0))  # a ring: bundles could loop, and must not
        self.dishonest = 0 if self.rng.random() < 0.3 else None
        self.forged: set[bytes] = set()
        self.links: dict[tuple[int, int], PeerLink] = {}
        self.publishers: dict[tuple[int, int], int] = {}  # (relay, group) -> client
        self.received: Counter[tuple[int, int, bytes]] = Counter()  # (from, to, bundle)
        self.echoes: list[str] = []
        self.lies = 0  # lies the dishonest relay told
        self.believed: list[str] = []  # ... that an honest relay took for the truth
        self._next_client = 0

    def _core(self, i: int) -> RelayCore:
        return RelayCore(
            self.config,
            self.stores[i],
            clock=lambda: self.now,
            identity=self.identities[i],
            random_bytes=seeded_bytes(self.rng.randrange(2**32)),
        )

    def _client(self) -> int:
        self._next_client += 1
        return self._next_client

    # --- the moves ------------------------------------------------------------------

    def publish(self) -> None:
        """A node publishes one bundle to one relay, or the same one to two."""
        group = self.rng.randrange(len(self.pool))
        keys, envelopes = self.pool[group]
        envelope = self.rng.choice(envelopes)
        targets = self.rng.sample(range(len(self.relays)), self.rng.choice((1, 1, 1, 2)))
        for relay in targets:
            client = self.publishers.get((relay, group))
            if client is None:
                client = self.publishers[(relay, group)] = self._client()
                core = self.relays[relay]
                assert core.admit(client, f"10.0.{relay}.{group}")
                hello = Hello(versions=[PROTOCOL_VERSION], role="node", agent="sim")
                proof = registration_proof(keys)
                register = Register(topic=keys.topic, relay_key=keys.relay_key.public, proof=proof)
                for frame in (hello, register):
                    self._carry(relay, core.receive(client, encode_frame(frame)))
            self._carry(
                relay, self.relays[relay].receive(client, encode_frame(Publish(envelope=envelope)))
            )
            self._carry(relay, self.relays[relay].flush())
        self.trace.append(f"publish g{group} at {targets}")

    def forge(self) -> None:
        """The dishonest relay stores a bundle it never admitted, to pass on."""
        if self.dishonest is None:
            return
        keys, envelopes = self.pool[self.rng.randrange(len(self.pool))]
        bad = forged(self.rng.choice(envelopes))
        store = self.stores[self.dishonest]
        store.register(keys.topic, keys.relay_key.public, registration_proof(keys))
        store.add(keys.topic, bad[:32], bad)  # any id: the dishonest relay makes one up
        self.forged.add(bad)
        self.relays[self.dishonest]._pass_on(
            keys.topic, store.newest(keys.topic), bad, came_from=-1
        )
        self._carry(self.dishonest, self.relays[self.dishonest].flush())
        self.trace.append("forge")

    def lie(self) -> None:
        """The dishonest relay lies: on one of its links, a cursor no store holds or a
        second ``mirror`` (the honest side must close that link), or it answers an honest
        relay's dial in another honest relay's name (it must be refused)."""
        liar = self.dishonest
        if liar is None:
            return
        self.lies += 1
        edges = [e for e in self.links if liar in e]
        if not edges or self.rng.random() < 0.3:
            honest = [i for i in range(len(self.relays)) if i != liar]
            dialer, claimed = self.rng.choice(honest), self.rng.choice(honest)
            core, client = self.relays[dialer], self._client()
            [hello] = core.dial(client, "an impostor", self.identities[claimed].public)
            assert isinstance(hello, ToClient)
            assert isinstance(hello.frame, Hello)
            core.encode(client, hello.frame)
            challenge = bytes(32)
            welcome = Welcome(
                version=PROTOCOL_VERSION,
                limits={},
                challenge=challenge,
                relay_id=self.identities[claimed].public,
                proof=acceptor_proof(self.identities[liar], hello.frame.nonce, challenge),
            )
            answer = core.receive(client, encode_frame(welcome))
            if core.peer_of(client) or not any(isinstance(o, CloseClient) for o in answer):
                self.believed.append(f"r{dialer} linked with r{liar} as r{claimed}")
            core.gone(client)
            self.trace.append(f"r{liar} answers r{dialer} as r{claimed}")
            return
        edge = self.rng.choice(edges)
        link = self.links[edge]
        victim = link.acceptor if link.dialer == liar else link.dialer
        keys, envelopes = self.pool[0]
        lies: list[Frame] = [
            Deliver(topic=keys.topic, cursor=2**63, envelope=envelopes[0]),
            Mirror(after=0),
        ]
        frame = self.rng.choice(lies)
        queue = link.to_acceptor if link.dialer == liar else link.to_dialer
        queue.append(encode_frame(frame))  # in order after what it sent before
        self.trace.append(f"r{liar} lies to r{victim}: {frame.TYPE}")

    def link_up(self, edge: tuple[int, int]) -> None:
        if edge in self.links:
            return
        dialer, acceptor = edge
        link = PeerLink(dialer, acceptor, self._client(), self._client())
        self.links[edge] = link
        assert self.relays[acceptor].admit(link.client_at_acceptor, f"10.1.{dialer}.1")
        self._carry(
            dialer,
            self.relays[dialer].dial(
                link.client_at_dialer, f"relay {acceptor}", self.identities[acceptor].public
            ),
        )
        self.trace.append(f"link {edge}")

    def link_down(self, edge: tuple[int, int]) -> None:
        link = self.links.pop(edge, None)
        if link is None:
            return
        for relay, client in (
            (link.dialer, link.client_at_dialer),
            (link.acceptor, link.client_at_acceptor),
        ):
            self._carry(relay, self.relays[relay].gone(client))
        self.trace.append(f"unlink {edge} ({len(link.to_acceptor)}+{len(link.to_dialer)} lost)")

    def restart(self, relay: int) -> None:
        for edge in [e for e in self.links if relay in e]:
            self.link_down(edge)
        for key in [k for k in self.publishers if k[0] == relay]:
            del self.publishers[key]
        self.relays[relay] = self._core(relay)
        self.trace.append(f"restart r{relay}")

    def pump(self, edge: tuple[int, int]) -> bool:
        """Move one frame along a link, either way; ``False`` if it is idle."""
        link = self.links.get(edge)
        if link is None:
            return False
        ways = [w for w, q in (("up", link.to_acceptor), ("down", link.to_dialer)) if q]
        if not ways:
            return False
        if self.rng.choice(ways) == "up":
            sender, receiver, client, data = (
                link.dialer,
                link.acceptor,
                link.client_at_acceptor,
                link.to_acceptor.popleft(),
            )
        else:
            sender, receiver, client, data = (
                link.acceptor,
                link.dialer,
                link.client_at_dialer,
                link.to_dialer.popleft(),
            )
        try:
            frame: Frame | None = decode_frame(data)
        except ProtocolError:
            frame = None  # a lie no relay may take: the receiver closes the link
        if isinstance(frame, Deliver):
            self.received[(sender, receiver, frame.envelope)] += 1
            if self._origin(sender, frame.envelope) == self.identities[receiver].public:
                self.echoes.append(f"r{sender} sent r{receiver} a bundle it had from r{receiver}")
        core = self.relays[receiver]
        self._carry(receiver, core.receive(client, data) + core.flush())
        return True

    def _origin(self, relay: int, envelope: bytes) -> bytes:
        """The peer a relay stored a bundle from (the store keeps it for this alone)."""
        row = (
            self.stores[relay]
            ._db.execute("SELECT origin FROM envelopes WHERE data = ?", (envelope,))
            .fetchone()
        )
        return bytes(row[0]) if row and row[0] is not None else b""

    # --- carrying outputs --------------------------------------------------------------

    def _carry(self, relay: int, outputs: list[Output]) -> None:
        ends = {}
        for link in self.links.values():
            if link.dialer == relay:
                ends[link.client_at_dialer] = (link, link.to_acceptor)
            if link.acceptor == relay:
                ends[link.client_at_acceptor] = (link, link.to_dialer)
        core = self.relays[relay]
        for output in outputs:
            if output.client not in ends:  # a publisher: it must never be refused
                if isinstance(output, CloseClient) or (
                    isinstance(output, ToClient) and isinstance(output.frame, Error)
                ):
                    raise AssertionError(f"r{relay} refused a publisher: {output}")
                if isinstance(output, ToClient) and output.client in core.clients:
                    core.encode(output.client, output.frame)  # moves its connection along
                continue
            link, queue = ends[output.client]
            if isinstance(output, CloseClient):
                if self.dishonest in (link.dialer, link.acceptor):
                    self.link_down((link.dialer, link.acceptor))  # a lie closes the link
                    continue
                raise AssertionError(f"r{relay} closed a peer link: {output.reason}")
            if isinstance(output, Pause):
                self.now += output.seconds
            elif isinstance(output, MirrorCatchUp):
                cursor = min(output.after, core.store.newest_overall())
                for deliver in core.mirror_catch_up(output):
                    self._send(core, output.client, queue, deliver)
                    cursor = max(cursor, deliver.cursor)
                link.sent_through[relay] = max(cursor, link.sent_through.get(relay, 0))
                queue.append(core.encode(output.client, core.caught_up(ALL_TOPICS, cursor)))
            elif isinstance(output, ToClient) and isinstance(output.frame, Deliver):
                if output.frame.cursor > link.sent_through.get(relay, 0):
                    link.sent_through[relay] = output.frame.cursor
                    self._send(core, output.client, queue, output.frame)
            else:
                queue.append(core.encode(output.client, output.frame))

    @staticmethod
    def _send(core: RelayCore, client: int, queue: deque[bytes], frame: Frame) -> None:
        if isinstance(frame, Deliver):
            registration = core.announce(client, frame.topic)
            if registration is not None:
                queue.append(core.encode(client, registration))
        queue.append(core.encode(client, frame))

    # --- running ----------------------------------------------------------------------

    def step(self) -> None:
        """One random move."""
        self.now += self.rng.uniform(0.001, 5.0)
        move = self.rng.random()
        edge = self.rng.choice(self.edges)
        if move < 0.25:
            self.publish()
        elif move < 0.27:
            self.forge()
        elif move < 0.28:
            self.lie()
        elif move < 0.40:
            self.link_up(edge)
        elif move < 0.47:
            self.link_down(edge)
        elif move < 0.49:
            self.restart(self.rng.randrange(len(self.relays)))
        else:
            for _ in range(self.rng.randint(1, 10)):
                self.pump(edge)

    def settle(self, limit: int = 200_000) -> None:
        """Every link up, frames moved until nothing is left anywhere."""
        for edge in self.edges:
            self.link_up(edge)
        for _ in range(limit):
            moved = [self.pump(edge) for edge in self.edges]  # every link, each round
            if not any(moved):
                return
        raise AssertionError("the relays kept sending to each other")

    def bundles(self, relay: int) -> set[bytes]:
        """Every envelope a relay holds."""
        rows = self.stores[relay].all_after(0, 1_000_000)
        return {data for _, _, data in rows}

    def close(self) -> None:
        """Close every store."""
        for store in self.stores:
            store.close()
