"""The relay's decisions, without I/O: bytes from a client in, frames for clients out.

:class:`RelayCore` owns each client's :class:`~hearth.protocol.connection.Connection`, the
topic registrations, subscriptions, rate limits and quotas. The aiohttp adapter
(``relay/server.py``) and the deterministic simulator (``tests/simulation.py``) both drive
this same code; the clock and the disk gauge are passed in.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Union

from hearth.crypto import RandomBytes, SigningKey
from hearth.errors import FrameTooBig, ProtocolError, StorageError
from hearth.protocol.bundle import (
    Envelope,
    freeze_valid,
    parse_envelope,
    registration_valid,
)
from hearth.protocol.connection import (
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    Connection,
    Role,
    State,
)
from hearth.protocol.frames import (
    DELIVERIES,
    PROTOCOL_VERSION,
    VERSIONS,
    Ack,
    CaughtUp,
    Deliver,
    Deliveries,
    DeviceProof,
    Error,
    Frame,
    Freeze,
    Hello,
    Mailbox,
    MailboxClose,
    Mirror,
    Peer,
    Publish,
    Register,
    Subscribe,
    Welcome,
    encode_frame,
)
from hearth.protocol.mailbox import Mailboxes
from relay.config import RelayConfig
from relay.forwarded import counted_as
from relay.identity import acceptor_proof, acceptor_proof_valid, peer_proof, peer_proof_valid
from relay.logs import ClientTags, LogLimit, shown
from relay.metrics import Metrics
from relay.moderation import ACTIONS, Decisions, invite_digest
from relay.storage import Registered, Store, Stored, TopicChecks

__all__ = [
    "ALL_TOPICS",
    "CatchUp",
    "CloseClient",
    "MirrorCatchUp",
    "Output",
    "Pause",
    "RelayCore",
    "ToClient",
]

ALL_TOPICS = bytes(32)
"""The topic a peer relay's :class:`CaughtUp` names: the catch-up covered every topic."""

log = logging.getLogger(__name__)

_ENCODED_BYTES = 4 * 1024 * 1024  # live deliveries' bytes kept for their other subscribers
_KEYS_KEPT = 100_000  # topics' relay keys kept for storing their bundles the short way
# Links a peer relay may make with this one in a row, then one more every so often: each
# link begins a catch-up of the whole store and costs two signatures. A dialing relay
# waits a second, then twice as long each time, and never comes near this.
_RELINKS_AT_ONCE = 5
_RELINK_BACK_S = 5.0

_REFUSALS = {
    "unknown-topic": "Register the topic before publishing to it.",
    "changed-meanwhile": "The group's topic changed here while this was stored; send it again.",
    "topic-frozen": "This group has a newer key; its old one takes no more changes here.",
    "bad-signature": "The bundle's admission signature is not valid.",
    "quota-exceeded": (
        "This group's storage quota at this relay is full; ask the operator or use another relay."
    ),
    "relay-full": "This relay is full; ask its operator, or use another relay.",
    "topic-held": (
        "This relay's operator has frozen this group's topic here; ask them, or use another relay."
    ),
    "key-banned": "This relay's operator does not take this group here; use another relay.",
    "not-admitted": (
        "This relay takes only the groups its operator lists: give them the group's key "
        "(`hearth relay key`), or use another relay."
    ),
    "topic-refused": "This relay's operator dropped this topic; use another relay.",
    "invite-used-up": (
        "This relay's admission invite has admitted all the topics it may; ask the "
        "operator for another."
    ),
    "key-has-topic": (
        "This relay takes one topic for each key its operator lists, and this key has its "
        "topic here already."
    ),
}


@dataclass(slots=True)  # not frozen: one is made per subscriber per bundle, and a frozen
class ToClient:  # dataclass's __init__ costs twice as much; nothing changes one once made
    """Send this frame to this client."""

    client: int
    frame: Frame


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Send this client the topic's stored bundles after a cursor (or from its newest
    snapshot), as :meth:`RelayCore.catch_up` yields them, then :class:`CaughtUp`."""

    client: int
    topic: bytes
    after: int
    from_snapshot: bool = False


@dataclass(frozen=True, slots=True)
class MirrorCatchUp:
    """Send this peer relay every stored bundle after a cursor, except those it sent us,
    as :meth:`RelayCore.mirror_catch_up` yields them, then ``CaughtUp`` for
    :data:`ALL_TOPICS`; from then on it gets new bundles live."""

    client: int
    after: int


@dataclass(frozen=True, slots=True)
class Pause:
    """Read nothing more from this client for a while (a peer relay over its rate)."""

    client: int
    seconds: float


@dataclass(frozen=True, slots=True)
class CloseClient:
    """Close this client's connection with a WebSocket close code and a reason."""

    client: int
    code: int
    reason: str


Output = Union[ToClient, CatchUp, MirrorCatchUp, Pause, CloseClient]  # noqa: UP007

DELIVERIES_BYTES = 128 * 1024
"""Bundle bytes a catch-up puts in one ``deliveries`` frame: about a hundred of the usual
size — a few hundred frames for a ledger of ten thousand entries instead of ten thousand,
each well inside the frame limit, and few enough that a node taking them in one by one
gives its event loop back often."""


@dataclass
class _Client:
    ip: str
    # Who the client is for per-address limits: its address, or an IPv6 address's /64
    # (relay/forwarded.py: a client may take a fresh address in it for every connection).
    block: str = ""
    conn: Connection = field(default_factory=lambda: Connection(Role.ACCEPTING))
    topics: set[bytes] = field(default_factory=set)
    tokens: float = 0.0
    refilled: float = 0.0
    counted: bool = True  # against the connection limits (links this relay dials are not)
    # A link with a peer relay: the challenge it must sign, its id once proven, and the
    # topics already announced to it. A link this relay dialed: the id that must answer,
    # and the nonce the answer must sign.
    challenge: bytes = b""
    peer: bytes = b""
    expected: bytes = b""
    nonce: bytes = b""
    announced: set[bytes] = field(default_factory=set)
    registered: int = 0  # new topics this connection registered
    # The digest of the admission invite its address carried (allow-list mode), judged
    # at each decision: an invite revoked while the connection lives admits no more.
    invite: str = ""


class RelayCore:
    """Everything the relay decides, for any number of clients."""

    def __init__(
        self,
        config: RelayConfig,
        store: Store,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = lambda: 0.0,
        disk_fraction: Callable[[], float] = lambda: 0.0,
        metrics: Metrics | None = None,
        identity: SigningKey | None = None,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock  # monotonic: rates and timeouts
        self.wall_clock = wall_clock  # seconds since the epoch: what outlives a restart
        self.disk_fraction = disk_fraction
        self.metrics = metrics or Metrics()
        self.random_bytes = random_bytes
        self.identity = identity or SigningKey.generate(random_bytes)
        self.clients: dict[int, _Client] = {}
        self.per_ip: defaultdict[str, int] = defaultdict(int)
        self.subscribers: defaultdict[bytes, set[int]] = defaultdict(set)
        self._mirrors: set[int] = set()  # peer relays that take every bundle
        # Recent live deliveries' bytes, oldest first, and how many bytes that is.
        self._encoded: OrderedDict[int, tuple[Deliver, bytes]] = OrderedDict()
        self._encoded_bytes = 0
        self._staged: list[tuple[int, bytes]] = []  # (client, bundle id) awaiting commit
        self._staged_peers: set[int] = set()  # peer links with bundles awaiting commit
        self._held: list[Output] = []  # their acks and deliveries, released by flush()
        self._own: list[int] = []  # cursors of the bundles newly stored in that batch
        # With a store other relay processes write too: the newest cursor this process has
        # passed on; what the others commit after it is passed on here in cursor order.
        self._passed_through = store.newest_overall() if store.shared else 0
        self._bad_signatures: defaultdict[str, list[float]] = defaultdict(list)
        self._blocked: dict[str, tuple[float, float]] = {}  # ip -> (until, next block length)
        self.mailboxes = Mailboxes(config.mailbox_limits(), clock)
        self.tag = ClientTags(random_bytes, wall_clock)  # client addresses as logs show them
        # New registrations left per address, and when counted (a token bucket each).
        self._registrations: dict[str, tuple[float, float]] = {}
        # A peer relay's rate bucket (tokens, when counted) from its last link: its rate is
        # its own, so dropping a link and making it again buys no new burst.
        self._peer_buckets: dict[bytes, tuple[float, float]] = {}
        self._relinks: dict[bytes, tuple[float, float]] = {}  # links left, when counted
        self._stored_bytes = store.stored_bytes()  # kept up to date as bundles are stored
        self._relay_keys: dict[bytes, bytes] = {}  # topic -> relay key, as last read
        self._last_verdict: tuple[Envelope, bytes, bool] | None = None  # _signature_valid
        self.log_limit = LogLimit(clock)
        self.decisions = Decisions()  # the operator's moderation lists (relay/moderation.py)
        self._moderation_seen = -1  # how many moderation actions the lists reflect
        self.reload_moderation()

    # --- moderation (relay/moderation.py) --------------------------------------------------

    def reload_moderation(self, *, if_changed: bool = False) -> list[Output]:
        """Read the moderation lists from the store again (``if_changed``: only if an
        action was taken since they were last read); close the connections of clients
        whose address is now banned, and links with peer relays now banned (or, after a
        reload, no longer accepted)."""
        counts = self.store.moderation_counts()
        seen = sum(counts.values())
        if if_changed and seen == self._moderation_seen:
            return []
        lists = self.store.moderation_lists()
        self.decisions = Decisions.of((kind, value) for kind, value, _, _ in lists)
        for action in ACTIONS:
            before = self.metrics.value("hearth_relay_moderation_actions_total", action=action)
            now = counts.get(action, 0)
            if self._moderation_seen >= 0 and now > before:
                log.info("moderation applied: %s (%d)", action, now - before)
            self.metrics.set_counter("hearth_relay_moderation_actions_total", now, action=action)
        self._moderation_seen = seen
        return [
            CloseClient(client, CLOSE_POLICY, "banned by this relay's operator")
            for client, state in self.clients.items()
            if (state.counted and self.decisions.address_banned(state.ip, self.tag))
            or not self._still_peered(state)
        ]

    def _still_peered(self, state: _Client) -> bool:
        """Whether a link with a peer relay may go on (any other client: yes): its id is
        not banned, and one that dialed in is still among ``accept_peers`` (a reload)."""
        if not state.peer:
            return True
        if state.peer in self.decisions.banned_keys:
            return False
        dialed_in = state.conn.role is Role.ACCEPTING
        return not dialed_in or state.peer.hex() in self.config.accept_peers

    def _admitted(self, relay_key: bytes, topic: bytes, invited: bool = False) -> str | None:
        """Why the operator's lists refuse a topic with this key (a code of
        :data:`_REFUSALS`), or ``None``."""
        decisions = self.decisions
        if topic in decisions.dropped:
            return "topic-refused"
        if relay_key in decisions.banned_keys:
            return "key-banned"
        if self.config.admission == "allow-list" and not (
            invited
            or relay_key in decisions.allowed_keys
            or relay_key.hex() in self.config.allowed_keys
        ):
            return "not-admitted"
        return None

    def _second_topic(self, relay_key: bytes, invited: bool) -> bool:
        """Whether a new topic would be a second one under a key the allow-list admits.

        A relay key is one epoch of one group, which has one topic; but every member holds
        the key and can sign a registration for any topic with it. Admitted by the list,
        a key registers its one topic: more would be storage without end for whoever
        holds it (each topic with a quota of its own). An invite admits any key.
        """
        return (
            self.config.admission == "allow-list"
            and not invited
            and self.store.topics_with_key(relay_key) > 0
        )

    def _by_invite(self, relay_key: bytes, state: _Client) -> bool:
        """Whether the client's invite is what admits this key (allow-list mode, and the
        key not listed itself): a new topic then counts against the invite."""
        return (
            self.config.admission == "allow-list"
            and self._invited(state)
            and relay_key not in self.decisions.allowed_keys
            and relay_key.hex() not in self.config.allowed_keys
        )

    def _invited(self, state: _Client) -> bool:
        """Whether the client came with an admission invite that is still live."""
        return bool(state.invite) and state.invite in self.decisions.invites

    # --- connections ----------------------------------------------------------------

    def admit(self, client: int, ip: str, invite: str = "") -> bool:
        """Whether a new connection from ``ip`` fits under the connection limits (and is
        not banned); ``invite``: the admission code its address carried, if any."""
        if self.decisions.address_banned(ip, self.tag):
            self.reject("banned", ip)
            return False
        block = counted_as(ip)
        if (
            len(self.clients) >= self.config.max_connections
            or self.per_ip[block] >= self.config.max_connections_per_ip
        ):
            self.reject("connection_limit", ip)
            return False
        self.clients[client] = _Client(
            ip=ip,
            block=block,
            tokens=float(self.config.publish_burst),
            refilled=self.clock(),
            invite=invite_digest(invite) if invite else "",
        )
        self.per_ip[block] += 1
        self.metrics.count("hearth_relay_connections_admitted_total")
        return True

    def gone(self, client: int) -> list[Output]:
        """A connection closed; what to tell others because of it."""
        state = self.clients.pop(client, None)
        if state is None:
            return []
        if state.counted:
            self.per_ip[state.block] -= 1
            if self.per_ip[state.block] <= 0:
                del self.per_ip[state.block]
        for topic in state.topics:
            self.subscribers[topic].discard(client)
        self._mirrors.discard(client)
        if state.peer:
            self._peer_buckets[state.peer] = (state.tokens, state.refilled)
        # A side that goes away ends its invite: the other side is told.
        return [ToClient(c, f) for c, f in self.mailboxes.gone(client)]

    def handshaken(self, client: int) -> bool:
        """Whether the client has finished the hello/welcome exchange (a peer relay: and
        proven who it is)."""
        state = self.clients.get(client)
        # A client's hello is answered with welcome as soon as it is read (``agreed``): the
        # handshake ends there, not when the writer gets round to sending the welcome.
        return (
            state is not None
            and (state.conn.version is not None or state.conn.agreed is not None)
            and (not state.conn.between_relays or bool(state.peer))
        )

    def dial(self, client: int, label: str, relay_id: bytes) -> list[Output]:
        """A link this relay opened to the peer relay ``relay_id``: the frames to start it
        with (a fresh nonce, which the relay that answers must sign to prove that id)."""
        nonce = self.random_bytes(32)
        self.clients[client] = _Client(
            ip=label,
            block=label,
            conn=Connection(Role.CONNECTING),
            refilled=self.clock(),
            counted=False,
            expected=relay_id,
            nonce=nonce,
        )
        hello = Hello(versions=list(VERSIONS), role="relay", agent="hearth-relay", nonce=nonce)
        return [ToClient(client, hello)]

    def peer_of(self, client: int) -> bytes:
        """The relay id of a peer link once proven (empty for any other client)."""
        state = self.clients.get(client)
        return state.peer if state else b""

    def announce(self, client: int, topic: bytes) -> Register | None:
        """The registration a peer link needs before its first bundle of ``topic``."""
        state = self.clients.get(client)
        if state is None or not state.peer or topic in state.announced:
            return None
        state.announced.add(topic)
        registration = self.store.registration(topic)
        if registration is None:
            return None
        relay_key, proof = registration
        return Register(topic=topic, relay_key=relay_key, proof=proof)

    def encode(self, client: int, frame: Frame, *, fan_out: bool = True) -> bytes:
        """The bytes of a frame for one client, through its connection's state machine.

        A live delivery goes to every subscriber as the same frame object: it is encoded
        once, and its bytes kept while they are among the newest few MiB encoded. A
        catch-up's frames go to one client only (``fan_out=False``): they are not kept.
        """
        if isinstance(frame, Deliver) and fan_out:
            data = self.clients[client].conn.send(frame, self.encoded(frame))
        else:
            data = self.clients[client].conn.send(frame)
        self.metrics.count("hearth_relay_bytes_out_total", amount=len(data))
        return data

    def encoded(self, frame: Deliver) -> bytes:
        """A live delivery's bytes, encoded once for all its subscribers (kept while they
        are among the newest few MiB encoded)."""
        cached = self._encoded.get(id(frame))
        if cached is None or cached[0] is not frame:
            cached = (frame, encode_frame(frame))
            self._encoded[id(frame)] = cached
            self._encoded_bytes += len(cached[1])
            while len(self._encoded) > 1 and (
                len(self._encoded) > 256 or self._encoded_bytes > _ENCODED_BYTES
            ):
                _, (_, dropped) = self._encoded.popitem(last=False)
                self._encoded_bytes -= len(dropped)
        return cached[1]

    def plain_subscriber(self, client: int) -> bool:
        """Whether a live delivery may be written to ``client`` as its bytes alone: an
        open connection (where a delivery is always allowed and changes no state, so its
        state machine has nothing to say) of a client, not a peer relay (which may need a
        topic's registration first). The one check a fan-out makes per subscriber;
        anything else goes through :meth:`encode`."""
        state = self.clients.get(client)
        return state is not None and state.conn.state is State.OPEN and not state.peer

    def delivered(self, count: int, size: int) -> None:
        """Count ``count`` live deliveries of ``size`` bytes in all, sent without
        :meth:`encode` (see :meth:`plain_subscriber`)."""
        self.metrics.count("hearth_relay_bundles_out_total", amount=count)
        self.metrics.count("hearth_relay_bytes_out_total", amount=size)

    # --- frames -----------------------------------------------------------------------

    def receive(self, client: int, data: bytes) -> list[Output]:
        """What follows from one message from a client."""
        state = self.clients[client]
        self.metrics.count("hearth_relay_bytes_in_total", amount=len(data))
        try:
            frame = state.conn.receive(data)
            return self._handle(client, state, frame)
        except ProtocolError as exc:
            self.reject("bad_frame", state.ip)
            code = CLOSE_TOO_BIG if isinstance(exc, FrameTooBig) else CLOSE_PROTOCOL
            return [CloseClient(client, code, str(exc))]
        except StorageError as exc:
            # The store rolled back its open batch: every bundle staged in it is refused
            # (peer links closed, to send again), and this connection closed too.
            log.warning("store failed: %s", exc)
            out = self._fail_batch()
            if not any(isinstance(o, CloseClient) and o.client == client for o in out):
                out.append(CloseClient(client, CLOSE_POLICY, "the relay could not go on; retry"))
            return out

    def _handle(self, client: int, state: _Client, frame: Frame) -> list[Output]:
        config = self.config
        if isinstance(frame, Hello):
            proof = b""
            if frame.role == "relay":
                state.challenge = self.random_bytes(32)
                if frame.nonce:  # the dialer asks us to prove our id too
                    proof = acceptor_proof(self.identity, frame.nonce, state.challenge)
            welcome = Welcome(
                version=state.conn.agreed or PROTOCOL_VERSION,
                limits=config.limits(),
                challenge=state.challenge,
                relay_id=self.identity.public,
                proof=proof,
            )
            return [ToClient(client, welcome)]
        if state.conn.between_relays:
            return self._from_peer(client, state, frame)
        if isinstance(frame, Register):
            return self._register(client, frame)
        if isinstance(frame, Subscribe):
            if frame.topic not in state.topics and (
                len(state.topics) >= config.max_topics_per_connection
            ):
                return self._error(
                    client,
                    "too-many-topics",
                    f"At most {config.max_topics_per_connection} topics per connection.",
                )
            state.topics.add(frame.topic)
            self.subscribers[frame.topic].add(client)
            return [CatchUp(client, frame.topic, frame.after, frame.from_snapshot)]
        if isinstance(frame, Publish):
            return self._publish(client, state, frame)
        if isinstance(frame, (Mailbox, MailboxClose)):
            return self._mailbox(client, state, frame)
        if isinstance(frame, Freeze):
            topic = self.store.topic(frame.topic)
            if topic is None or not freeze_valid(frame.topic, topic.relay_key, frame.proof):
                return self._error(client, "bad-freeze", "The freeze request does not verify.")
            self.store.freeze(frame.topic, self.wall_clock() + config.freeze_grace_s)
            return []
        if isinstance(frame, DeviceProof):
            message = "A relay serves any holder of a topic's key; it takes no device proof."
            return self._error(client, "not-a-node", message)
        if isinstance(frame, Error):
            self.say(
                "a client reported", state.ip, f"{shown(frame.code, 40)} {shown(frame.message)}"
            )
        return []

    def _register(self, client: int, frame: Register) -> list[Output]:
        if not registration_valid(frame.topic, frame.relay_key, frame.proof):
            return self._error(
                client, "bad-registration", "The registration proof does not verify."
            )
        state = self.clients[client]
        new = self.store.topic(frame.topic) is None
        # A topic new here is judged on the operator's newest lists, not those of up to a
        # second ago: a topic just dropped must not come straight back (and registering
        # new topics is rare and limited, so the look costs little).
        out = self.reload_moderation(if_changed=True) if new else []
        admission = self._admitted(frame.relay_key, frame.topic, self._invited(state))
        if admission is not None:
            return out + self._error(client, admission, _REFUSALS[admission])
        by_invite = self._by_invite(frame.relay_key, state)
        if new and self._second_topic(frame.relay_key, self._invited(state)):
            return out + self._error(client, "key-has-topic", _REFUSALS["key-has-topic"])
        if (
            new
            and by_invite
            and (self.store.topics_with_invite(state.invite) >= self.config.topics_per_invite)
        ):
            return out + self._error(client, "invite-used-up", _REFUSALS["invite-used-up"])
        if new:
            refusal = self._full() or self._registration_limited(state)
            if refusal is not None:
                return out + self._error(client, *refusal)
        registered = self.store.register(
            frame.topic,
            frame.relay_key,
            frame.proof,
            now=self.wall_clock(),
            invite=state.invite if by_invite else "",
        )
        if registered is Registered.TAKEN:
            return out + self._error(
                client, "topic-taken", "That topic is registered to another key."
            )
        if registered is Registered.NEW:
            state.registered += 1
        return out

    def _full(self) -> tuple[str, str] | None:
        """Why the relay takes no new topic now (it has all it may hold), or ``None``."""
        config = self.config
        if self._stored_bytes >= config.max_stored_bytes or (
            self.store.counts()[0] >= config.max_topics
        ):
            return "relay-full", _REFUSALS["relay-full"]
        return None

    def _registration_limited(self, state: _Client) -> tuple[str, str] | None:
        """Why this client may register no new topic now, or ``None`` (and one is spent)."""
        config, now = self.config, self.clock()
        size = float(config.registrations_per_ip)
        tokens, counted = self._registrations.get(state.block, (size, now))
        tokens = min(size, tokens + (now - counted) / max(config.registration_back_per_ip_s, 1e-9))
        if state.registered >= config.registrations_per_connection or tokens < 1:
            return (
                "too-many-registrations",
                "Too many new topics from this connection or address; try again later.",
            )
        self._registrations[state.block] = (tokens - 1, now)
        if len(self._registrations) > 10_000:  # forget addresses whose bucket is full again
            back = config.registration_back_per_ip_s
            for ip, (left, at) in list(self._registrations.items()):
                if left + (now - at) / max(back, 1e-9) >= size:
                    del self._registrations[ip]
        return None

    def reject(self, reason: str, ip: str, amount: int = 1) -> None:
        """Count a rejection and log its reason, with the client as a tag (a few lines a
        minute per client and reason at most; the rest summarised by :meth:`summarise`)."""
        self.metrics.count("hearth_relay_rejections_total", amount=amount, reason=reason)
        tag = self.tag(ip)
        if self.log_limit.allow(reason, tag):
            log.info("rejected", extra={"reason": reason, "client": tag})

    def say(self, event: str, ip: str, detail: str) -> None:
        """Log something about a client (``detail``: already cut short), as :meth:`reject`
        does: a few lines a minute per client and event at most."""
        tag = self.tag(ip)
        if self.log_limit.allow(event, tag):
            log.info("%s: %s", event, detail, extra={"client": tag})

    def summarise(self) -> None:
        """Log what was held back over the last minute, a line per kind (call it often)."""
        for what, tag, times in self.log_limit.roll():
            log.info(
                "%s: %d more times in the last minute",
                what,
                times,
                extra={"client": tag or "many", "times": times},
            )

    def _error(self, client: int, code: str, message: str, bundle_id: bytes = b"") -> list[Output]:
        state = self.clients.get(client)
        self.reject(code, state.ip if state else "")
        return [ToClient(client, Error(code=code, message=message, id=bundle_id))]

    def _take_token(self, state: _Client) -> bool:
        """Take one publish from the client's bucket (a peer relay's is bigger)."""
        now = self.clock()
        config = self.config
        rate, burst = (
            (config.peer_publish_per_s, config.peer_publish_burst)
            if state.peer
            else (config.publish_per_s, config.publish_burst)
        )
        state.tokens = min(float(burst), state.tokens + (now - state.refilled) * rate)
        state.refilled = now
        if state.tokens < 1:
            return False
        state.tokens -= 1
        return True

    def _publish(self, client: int, state: _Client, frame: Publish) -> list[Output]:
        config = self.config
        envelope = parse_envelope(frame.envelope)  # a malformed envelope closes the connection
        bundle_id = envelope.id
        if not self._take_token(state):
            self.metrics.count("hearth_relay_rate_limited_total")
            return self._error(
                client, "rate-limited", "Publishing too fast; slow down and retry.", bundle_id
            )
        blocked = self._blocked.get(state.block)
        if blocked and blocked[0] > self.clock():
            return self._error(
                client, "blocked", "Too many bad signatures from this address; wait.", bundle_id
            )
        invited = self._invited(state)
        try:
            stored = self._store_checked(envelope, frame.envelope, invited)
        except StorageError as exc:
            return self._store_failed(exc, client, bundle_id)
        if stored is None:  # the full way: each check on its own, each refusal named
            refusal = self._refusal(envelope, len(frame.envelope), invited)
            if refusal is not None:
                if refusal == "bad-signature":
                    self._note_bad_signature(state.block)
                return self._error(client, refusal, _REFUSALS[refusal], bundle_id)
            if self.disk_fraction() > config.disk_high_water:
                return self._error(
                    client,
                    "disk-full",
                    "The relay's disk is nearly full; try another relay.",
                    bundle_id,
                )
        try:
            if stored is None:
                full_way = self._store_the_full_way(envelope, frame.envelope, invited)
                if isinstance(full_way, str):
                    return self._error(client, full_way, _REFUSALS[full_way], bundle_id)
                stored = full_way
            if frame.covers and stored.new and frame.covers < stored.cursor:
                self.store.add_snapshot(
                    envelope.topic, stored.cursor, frame.covers, self.wall_clock()
                )
        except StorageError as exc:
            return self._store_failed(exc, client, bundle_id)
        self.metrics.count("hearth_relay_bundles_in_total")
        if stored.new:
            self._stored_bytes += len(frame.envelope)
        # Held until flush() has made the batch durable: nothing is acknowledged before.
        self._staged.append((client, bundle_id))
        self._held.append(ToClient(client, Ack(id=bundle_id, cursor=stored.cursor)))
        if stored.new:
            self._pass_on(envelope.topic, stored.cursor, frame.envelope, came_from=client)
        return []

    def _store_the_full_way(
        self, envelope: Envelope, data: bytes, invited: bool, origin: bytes | None = None
    ) -> Stored | str:
        """A bundle the full way found nothing against, stored (or found stored already),
        or the code of why it cannot be after all; ``origin``: the peer relay it came from.

        The topic's row was read above without the store's write lock: another relay
        process's batch, or a freeze committed since, would not count if the bundle were
        stored now without looking again (a bundle past the quota or the freeze). So it is
        stored by the statement that checks the row (:meth:`_store_checked`; the row's key
        is known now)."""
        if self.store.cursor_of(envelope.id) is None:
            stored = self._store_checked(envelope, data, invited, origin)
            if stored is not None:
                return stored
            if self.store.cursor_of(envelope.id) is None:  # not another process's doing
                # What changed is named from the row read again (if it changed back
                # meanwhile, nothing is stored: the node sends it again at its next sync).
                return self._refusal(envelope, len(data), invited) or "changed-meanwhile"
        return self.store.add(envelope.topic, envelope.id, data, origin)  # stored already

    def _store_failed(self, exc: StorageError, client: int, bundle_id: bytes) -> list[Output]:
        """The store rolled its batch back while taking a client's bundle: it and every
        bundle staged with it are refused."""
        log.warning("store failed: %s", exc)
        self._staged.append((client, bundle_id))
        return self._fail_batch()

    def _store_checked(
        self, envelope: Envelope, data: bytes, invited: bool, origin: bytes | None = None
    ) -> Stored | None:
        """A client's bundle stored the short way, if everything lets it in: the checks
        this process decides (the operator's lists, the signature, the relay's total, the
        disk) made here against the topic's relay key as last read, and those the topic's
        row decides (the key still that one, not held, not frozen, under its quota) made by
        the statement that stores it — no read of the row before each bundle. ``None``,
        with nothing stored, if any check fails or the bundle is stored already: the
        caller then goes the full way, which names the refusal as it always has."""
        relay_key = self._relay_keys.get(envelope.topic)
        config = self.config
        if (
            relay_key is None
            or self._admitted(relay_key, envelope.topic, invited) is not None
            or self._stored_bytes + len(data) > config.max_stored_bytes
            or self.disk_fraction() > config.disk_high_water
            or not self._signature_valid(envelope, relay_key)
        ):
            return None
        checks = TopicChecks(
            relay_key=relay_key,
            now=self.wall_clock(),
            max_bytes=config.topic_quota_bytes,
            max_bundles=config.topic_quota_bundles,
        )
        return self.store.add_checked(envelope.topic, envelope.id, data, checks, origin)

    def _pass_on(self, topic: bytes, cursor: int, envelope: bytes, came_from: int) -> None:
        """Hold a newly stored bundle for its receivers (released by :meth:`flush`)."""
        self._own.append(cursor)
        self._held += self._deliveries(topic, cursor, envelope, came_from)

    def _deliveries(
        self, topic: bytes, cursor: int, envelope: bytes, came_from: int | None
    ) -> list[Output]:
        """A stored bundle for every subscriber of its topic and every mirroring peer relay
        but the client or peer it came from."""
        deliver = Deliver(topic=topic, cursor=cursor, envelope=envelope)
        receivers = (self.subscribers.get(topic, set()) | self._mirrors) - {came_from}
        return [ToClient(other, deliver) for other in sorted(receivers)]

    def committed_elsewhere(self) -> list[Output]:
        """Live fan-out across relay processes sharing one store: what the others have
        committed since this process last looked, for this one's subscribers and links."""
        if not self.store.shared or self.pending():
            return []  # a staged batch holds the store's write lock; flush() looks then
        return self._others_through(None)

    def _others_through(self, through: int | None) -> list[Output]:
        """Deliveries of the bundles other processes stored after what this one passed on
        (up to ``through``), oldest first."""
        peer_links = {state.peer: c for c, state in self.clients.items() if state.peer}
        out: list[Output] = []
        while rows := self.store.committed_after(
            self._passed_through, through, max_bytes=self.config.catch_up_page_bytes
        ):
            for row in rows:
                came_from = peer_links.get(row.origin) if row.origin else None
                out += self._deliveries(row.topic, row.cursor, row.data, came_from)
            self._passed_through = rows[-1].cursor
        return out

    # --- peer relays (DESIGN §6): each side of a link mirrors the other ------------------

    def _from_peer(self, client: int, state: _Client, frame: Frame) -> list[Output]:
        """A frame on a link with a peer relay, either side of it."""
        if isinstance(frame, Welcome):  # we dialed: prove who we are, ask for their bundles
            if frame.relay_id != state.expected or not acceptor_proof_valid(
                frame.relay_id, state.nonce, frame.challenge, frame.proof
            ):
                return self._wrong_relay(client, state, frame)
            if not self._may_link(frame.relay_id):
                return self._close(client, "peer_refused", "that relay is this one, or linked")
            self._linked(state, frame.relay_id)
            proof = peer_proof(self.identity, frame.challenge, frame.relay_id)
            return [
                ToClient(client, Peer(relay_id=self.identity.public, proof=proof)),
                ToClient(client, Mirror(after=self.store.peer_cursor(state.peer))),
            ]
        if isinstance(frame, Peer):  # they dialed us
            if state.peer or state.conn.role is not Role.ACCEPTING:
                return self._close(client, "peer_refused", "a peer link proves itself once")
            if frame.relay_id.hex() not in self.config.accept_peers or not peer_proof_valid(
                frame.relay_id, state.challenge, self.identity.public, frame.proof
            ):
                return self._close(client, "peer_refused", "this relay does not peer with you")
            if not self._may_link(frame.relay_id):
                return self._close(client, "peer_refused", "already linked with that relay")
            if not self._may_link_again(frame.relay_id):
                return self._close(client, "peer_relinking", "linking again too often; wait")
            self._linked(state, frame.relay_id)
            return [ToClient(client, Mirror(after=self.store.peer_cursor(state.peer)))]
        if not state.peer:
            return self._close(client, "peer_refused", "a peer relay must prove who it is first")
        if isinstance(frame, Mirror):
            if client in self._mirrors:  # each catch-up reads the whole store: once a link
                self.reject("peer_mirror_again", state.ip)
                return [CloseClient(client, CLOSE_PROTOCOL, "mirror is asked once per link")]
            self._mirrors.add(client)
            return [MirrorCatchUp(client, frame.after)]
        if isinstance(frame, Register):
            out: list[Output] = []
            if not self._take_token(state):  # a register costs what a bundle does
                self.metrics.count("hearth_relay_rate_limited_total")
                out.append(Pause(client, 1.0 / max(self.config.peer_publish_per_s, 1e-3)))
            if not registration_valid(frame.topic, frame.relay_key, frame.proof):
                self.reject("bad-registration", state.ip)
            elif (admission := self._admitted(frame.relay_key, frame.topic)) is not None:
                self.reject(admission, state.ip)  # its bundles are skipped as unknown
            elif self.store.topic(frame.topic) is None and self._full() is not None:
                self.reject("relay-full", state.ip)  # its bundles are skipped as unknown
            elif self.store.topic(frame.topic) is None and self._second_topic(
                frame.relay_key, invited=False
            ):
                self.reject("key-has-topic", state.ip)
            elif self.store.register(
                frame.topic, frame.relay_key, frame.proof, now=self.wall_clock()
            ) is (Registered.TAKEN):
                self.reject("topic-taken", state.ip)
            return out
        if isinstance(frame, Deliver):
            return self._mirrored(client, state, frame)
        if isinstance(frame, CaughtUp):
            if self.log_limit.allow("caught up with a peer relay", self.tag(state.ip)):
                log.info("caught up with a peer relay", extra={"peer": state.peer.hex()[:16]})
        elif isinstance(frame, Error):
            self.say(
                "a peer relay reported", state.ip, f"{shown(frame.code, 40)} {shown(frame.message)}"
            )
        return []

    def _wrong_relay(self, client: int, state: _Client, frame: Welcome) -> list[Output]:
        """The relay we dialed is not the one agreed on, or cannot prove it is: refused, and
        said at warning level, since either the operator's settings or the address is wrong
        (or someone answers there in the peer's place)."""
        expected = state.expected.hex()[:16]
        if frame.relay_id != state.expected:
            reason = "peer_wrong_id"
            problem = f"answers as relay {frame.relay_id.hex()[:16]}…, not {expected}…"
        elif not frame.proof:
            reason = "peer_unproven"
            problem = f"gave no proof that it is relay {expected}… (an older hearth-relay?)"
        else:
            reason = "peer_bad_proof"
            problem = f"claims to be relay {expected}… with a proof that does not verify"
        self.metrics.count("hearth_relay_rejections_total", reason=reason)
        log.warning("peer relay refused: %s %s", shown(state.ip), problem)
        return [CloseClient(client, CLOSE_POLICY, "you are not the relay this one peers with")]

    def _linked(self, state: _Client, relay_id: bytes) -> None:
        state.peer = relay_id
        # A peer's bucket carries over from its last link (only configured peers link, so
        # there are few): it refills with time, not by linking again.
        state.tokens, state.refilled = self._peer_buckets.get(
            relay_id, (float(self.config.peer_publish_burst), self.clock())
        )
        self.metrics.count("hearth_relay_peer_links_made_total")
        self.metrics.count("hearth_relay_peer_duplicates_total", 0)  # shown from the start
        log.info("peer relay linked", extra={"peer": relay_id.hex()[:16]})

    def _may_link(self, relay_id: bytes) -> bool:
        return (
            relay_id != self.identity.public
            and relay_id not in self.decisions.banned_keys
            and not any(s.peer == relay_id for s in self.clients.values())
        )

    def _may_link_again(self, relay_id: bytes) -> bool:
        """Whether a peer that dialed us may link now (and a link is spent): a few links in
        a row, then one every :data:`_RELINK_BACK_S`."""
        now = self.clock()
        left, counted = self._relinks.get(relay_id, (float(_RELINKS_AT_ONCE), now))
        left = min(float(_RELINKS_AT_ONCE), left + (now - counted) / _RELINK_BACK_S)
        if left < 1:
            self._relinks[relay_id] = (left, now)
            return False
        self._relinks[relay_id] = (left - 1, now)
        return True

    def _close(self, client: int, reason: str, message: str) -> list[Output]:
        self.reject(reason, self.clients[client].ip)
        return [CloseClient(client, CLOSE_POLICY, message)]

    def _mirrored(self, client: int, state: _Client, frame: Deliver) -> list[Output]:
        """A bundle from a peer relay: checked like any other, stored once, passed on.

        A bundle refused for what it is (malformed, unknown topic, bad signature, over
        quota) will never be good: it is counted, skipped and the peer's cursor moves past
        it. A full disk or a failed write closes the link instead, so the peer sends it
        again later.
        """
        out: list[Output] = []
        if not self._take_token(state):
            self.metrics.count("hearth_relay_rate_limited_total")
            out.append(Pause(client, 1.0 / max(self.config.peer_publish_per_s, 1e-3)))
        if self.disk_fraction() > self.config.disk_high_water:
            return out + self._close(client, "disk-full", "the relay's disk is nearly full")
        envelope: Envelope | None = None
        try:
            envelope = parse_envelope(frame.envelope)
            reason = (
                self._refusal(envelope, len(frame.envelope))
                if envelope.topic == frame.topic
                else "unknown-topic"
            )
        except ProtocolError:
            reason = "bad_envelope"
        try:
            if reason is not None:
                self.reject(reason, state.ip)
            elif envelope is not None:
                # Stored by the statement that checks the topic's row, as a client's is:
                # the row read above may be stale (another relay process on the store).
                stored = self._store_the_full_way(envelope, frame.envelope, False, state.peer)
                if stored == "changed-meanwhile":  # sent again later, as a failed write is
                    self._staged_peers.add(client)
                    return out + self._fail_batch()
                if isinstance(stored, str):
                    self.reject(stored, state.ip)
                elif stored.new:
                    self._stored_bytes += len(frame.envelope)
                    self.metrics.count("hearth_relay_bundles_in_total")
                    self.metrics.count("hearth_relay_peer_bundles_in_total")
                    self._pass_on(frame.topic, stored.cursor, frame.envelope, came_from=client)
                else:  # it came another way first (a ring of peers, or a node's upload)
                    self.metrics.count("hearth_relay_peer_duplicates_total")
            self.store.set_peer_cursor(state.peer, frame.cursor)
        except StorageError as exc:
            log.warning("store failed: %s", exc)
            self._staged_peers.add(client)
            return out + self._fail_batch()
        self._staged_peers.add(client)
        return out

    def _refusal(self, envelope: Envelope, size: int, invited: bool = False) -> str | None:
        """Why a bundle, from a client or a peer relay, cannot be stored here (a code of
        :data:`_REFUSALS`), or ``None``; ``invited``: the client came with an admission
        invite. A bundle stored already takes no more of the quota: sent again, it is
        acknowledged again."""
        topic = self.store.topic(envelope.topic)
        if topic is None:
            return "unknown-topic"
        self._remember_key(envelope.topic, topic.relay_key)
        if topic.frozen_at and self.wall_clock() >= topic.frozen_at:
            return "topic-frozen"
        if topic.held:
            return "topic-held"
        admission = self._admitted(topic.relay_key, envelope.topic, invited)
        if admission is not None:
            return admission
        if not self._signature_valid(envelope, topic.relay_key):
            return "bad-signature"
        over = (
            topic.bytes + size > self.config.topic_quota_bytes
            or topic.bundles + 1 > self.config.topic_quota_bundles
        )
        full = self._stored_bytes + size > self.config.max_stored_bytes
        if (over or full) and self.store.cursor_of(envelope.id) is None:
            return "quota-exceeded" if over else "relay-full"
        return None

    def _signature_valid(self, envelope: Envelope, relay_key: bytes) -> bool:
        """Whether a bundle's admission signature is by ``relay_key``: checked once, though
        a bundle the short way refused is asked about again the full way."""
        last = self._last_verdict
        if last is not None and last[0] is envelope and last[1] == relay_key:
            return last[2]
        valid = envelope.relay_signature_valid(relay_key)
        self._last_verdict = (envelope, relay_key, valid)
        return valid

    def _remember_key(self, topic: bytes, relay_key: bytes) -> None:
        """Keep a topic's relay key as read from its row, for :meth:`_store_checked`. Kept
        stale it only costs the full way: the statement that stores a bundle checks it."""
        if len(self._relay_keys) >= _KEYS_KEPT and topic not in self._relay_keys:
            self._relay_keys.clear()  # rarely: the busy topics are read again at once
        self._relay_keys[topic] = relay_key

    def mirror_catch_up(self, item: MirrorCatchUp) -> Iterator[Deliver]:
        """Every stored bundle a peer relay may lack, oldest first, read page by page."""
        for page in self.mirror_catch_up_pages(item):
            yield from page

    def mirror_catch_up_start(self, item: MirrorCatchUp) -> int:
        """The cursor a peer relay's catch-up starts after: where it asked, or the newest
        stored if that is beyond (a relay restored from an older backup)."""
        return min(item.after, self.store.newest_overall())

    def mirror_catch_up_pages(self, item: MirrorCatchUp) -> Iterator[list[Deliver]]:
        """:meth:`mirror_catch_up` a page at a time, each at most ``catch_up_page_bytes``
        of bundles (or one bigger bundle)."""
        peer = self.peer_of(item.client)
        after = self.mirror_catch_up_start(item)
        page_bytes = self.config.catch_up_page_bytes
        while rows := self.store.all_after(after, not_from=peer, max_bytes=page_bytes):
            yield [
                Deliver(topic=topic, cursor=cursor, envelope=data) for cursor, topic, data in rows
            ]
            after = rows[-1][0]

    # --- invite mailboxes (SECURITY.md §5): the relay passes messages it cannot read ----

    def _mailbox(self, client: int, state: _Client, frame: Mailbox | MailboxClose) -> list[Output]:
        out: list[Output] = []
        for to, answer in self.mailboxes.handle(client, state.block, frame):
            if isinstance(answer, Error):
                self.reject(answer.code, state.ip)
            elif isinstance(answer, Mailbox) and answer.create:
                self.metrics.count("hearth_relay_mailboxes_total")
            out.append(ToClient(to, answer))
        return out

    def pending(self) -> bool:
        """Whether published or mirrored bundles wait for :meth:`flush`."""
        return bool(self._staged or self._staged_peers)

    def staged(self) -> int:
        """How many published bundles wait for :meth:`flush` (mirrored ones not counted)."""
        return len(self._staged)

    def flush(self) -> list[Output]:
        """Commit the staged bundles in one transaction; release their acks and deliveries."""
        if not self.pending():
            return []
        started = self.clock()
        try:
            self.store.commit()
        except StorageError as exc:
            log.warning("store failed: %s", exc)
            return self._fail_batch()
        self.metrics.observe("hearth_relay_write_seconds", self.clock() - started)
        out, self._held, self._staged = self._held, [], []
        self._staged_peers.clear()
        if self.store.shared:
            # The batch held the store's write lock from its first bundle: every cursor
            # from there to its last is its own, and what others stored before comes first,
            # so each subscriber sees cursors in order (a node resumes after the newest).
            through = self._own[0] - 1 if self._own else None
            out = self._others_through(through) + out
            self._passed_through = max([self._passed_through, *self._own])
        self._own.clear()
        return out

    def _fail_batch(self) -> list[Output]:
        self.metrics.count(
            "hearth_relay_rejections_total", amount=len(self._staged), reason="store-failed"
        )
        out: list[Output] = [
            ToClient(
                client,
                Error(
                    code="store-failed",
                    message="The relay could not store the bundle.",
                    id=bundle_id,
                ),
            )
            for client, bundle_id in self._staged
        ]
        # A peer link's cursor went back with the batch: it must start over from there.
        out += [
            CloseClient(client, CLOSE_POLICY, "the relay could not store your bundles")
            for client in sorted(self._staged_peers)
        ]
        self._held, self._staged = [], []
        self._staged_peers.clear()
        self._own.clear()
        return out

    def _note_bad_signature(self, ip: str) -> None:
        now = self.clock()
        recent = [t for t in self._bad_signatures[ip] if now - t < 60] + [now]
        self._bad_signatures[ip] = recent
        if len(recent) > self.config.bad_signatures_per_minute:
            length = self._blocked.get(ip, (0.0, 30.0))[1]
            self._blocked[ip] = (now + length, length * 2)

    def prune(self) -> int:
        """Delete the snapshots that one older than the retention period supersedes (the
        bundles they cover stay: R13), and topics nobody used for a long time.

        Never while published bundles wait for :meth:`flush`: they share the store's one
        open transaction, and pruning must not commit or roll back what is not yet
        acknowledged. The next round catches up.
        """
        if self.pending():
            return 0
        removed = self.store.prune(self.wall_clock() - self.config.snapshot_retention_s)
        if removed:
            self.metrics.count("hearth_relay_pruned_total", amount=removed)
            log.info("deleted %d snapshots that newer ones supersede", removed)
        expired = self.store.expire(self.wall_clock() - self.config.topic_expiry_s)
        if expired:
            self.metrics.count("hearth_relay_topics_expired_total", amount=expired)
            log.info("deleted %d topics nobody has registered for a long time", expired)
        # Counted afresh: what was deleted, and what other processes sharing the store added.
        self._stored_bytes = self.store.stored_bytes()
        return removed

    # --- catching a subscriber up -----------------------------------------------------

    def catch_up(self, item: CatchUp) -> Iterator[Deliver]:
        """The stored bundles a subscriber is missing, oldest first, read page by page.

        A fresh subscriber asking for it gets the newest snapshot first and then every
        bundle, those the snapshot covers too: a node takes a snapshot only with the signed
        bundles it covers, checked against them (R13). One that was away for longer than
        what it missed was kept (pruned) gets the snapshot and then what came after what
        it covers. A cursor beyond what is stored (a relay restored from an older backup)
        is treated as the newest stored one.
        """
        for page in self.catch_up_pages(item):
            yield from page

    def catch_up_start(self, item: CatchUp) -> int:
        """The cursor a subscriber's catch-up starts after: where it asked, or the newest
        stored in its topic if that is beyond (a relay restored from an older backup)."""
        return min(item.after, self.store.newest(item.topic))

    def catch_up_pages(self, item: CatchUp) -> Iterator[list[Deliver]]:
        """:meth:`catch_up` a page at a time: each page at most ``catch_up_page_bytes`` of
        bundles (or one bigger bundle), so what a catch-up holds in memory is bounded by
        bytes, whatever the bundles' sizes."""
        after = self.catch_up_start(item)
        behind_pruning = after < self.store.pruned_through(item.topic)
        wanted = item.from_snapshot or behind_pruning
        snapshot = self.store.latest_snapshot(item.topic) if wanted else None
        if snapshot is not None and (after == 0 or behind_pruning):
            cursor, covers = snapshot
            data = self.store.at(cursor)
            if data is not None:
                yield [Deliver(topic=item.topic, cursor=cursor, envelope=data)]
                if behind_pruning:
                    after = covers
        page_bytes = self.config.catch_up_page_bytes
        while rows := self.store.after(item.topic, after, max_bytes=page_bytes):
            yield [
                Deliver(topic=item.topic, cursor=cursor, envelope=data)
                for cursor, data in rows
                if snapshot is None or cursor != snapshot[0]
            ]
            after = rows[-1][0]

    def catch_up_frames(self, client: int, page: list[Deliver]) -> list[Deliver | Deliveries]:
        """A catch-up page as the frames to send it in: to a node that speaks version 3,
        the bundles of a topic many to a frame, at most :data:`DELIVERIES_BYTES` of them
        each (a bundle that big goes alone); to anyone else, one frame each."""
        state = self.clients.get(client)
        if state is None or state.conn.between_relays or (state.conn.version or 0) < DELIVERIES:
            return list(page)
        frames: list[Deliver | Deliveries] = []
        run: list[Deliver] = []
        size = 0

        def close_run() -> None:
            if len(run) == 1:
                frames.append(run[0])
            elif run:
                frames.append(
                    Deliveries(
                        topic=run[0].topic,
                        cursors=[d.cursor for d in run],
                        envelopes=[d.envelope for d in run],
                    )
                )
            run.clear()

        for delivery in page:
            if run and (
                run[0].topic != delivery.topic or size + len(delivery.envelope) > DELIVERIES_BYTES
            ):
                close_run()
                size = 0
            run.append(delivery)
            size += len(delivery.envelope)
        close_run()
        return frames

    @staticmethod
    def caught_up(topic: bytes, cursor: int) -> CaughtUp:
        """The frame that ends a catch-up."""
        return CaughtUp(topic=topic, cursor=cursor)
