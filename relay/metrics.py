"""Prometheus metrics for the relay: counters, gauges with optional labels, and a latency
summary (count and sum), written out by ``prometheus-client``.

Values are kept in plain dicts, cheap to bump on every delivered bundle; at each scrape a
collector hands them to ``prometheus-client`` as metric families, which writes the text
format with HELP and TYPE lines, exact numbers (``rate()`` over the byte counters needs
every digit) and escaped labels. No label ever holds a key, a topic id or an address.

Every family is declared in :data:`FAMILIES` with its help text, and is there from the
first scrape: counters at 0, and those labelled by reason or action with each known
reason at 0, so an alert on ``increase(...)`` works before the first event. No two
families share a name once ``_total`` is taken off (OpenMetrics would refuse them). The
process's own CPU, memory and descriptors come as ``process_*``, and the version as
``hearth_relay_build_info``.
"""

from __future__ import annotations

import platform
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from hearth import __version__
from hearth.protocol.frames import PROTOCOL_VERSION
from relay.moderation import ACTIONS

__all__ = ["CONTENT_TYPE", "FAMILIES", "REJECTION_REASONS", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Content-Type of :meth:`Metrics.render`'s text."""

FAMILIES = {
    "hearth_relay_bundles_in_total": "Bundles newly stored, from clients and peer relays.",
    "hearth_relay_bundles_out_total": "Bundles sent to subscribers and peer relays.",
    "hearth_relay_bundles_stored": "Bundles stored now.",
    "hearth_relay_bytes_in_total": "Bytes of WebSocket messages read from clients.",
    "hearth_relay_bytes_out_total": "Bytes of frames sent to clients.",
    "hearth_relay_connections": "Connections open now.",
    "hearth_relay_connections_admitted_total": "Connections admitted.",
    "hearth_relay_mailboxes_total": "Invite mailboxes opened.",
    "hearth_relay_moderation_actions_total": "Moderation actions taken by the operator, by kind.",
    "hearth_relay_peer_bundles_in_total": "Bundles newly stored that came from peer relays.",
    "hearth_relay_peer_duplicates_total": "Bundles from peer relays stored here already.",
    "hearth_relay_peer_lag_bundles": "Stored bundles a linked peer relay has not been sent.",
    "hearth_relay_peer_links": "Links with peer relays up now.",
    "hearth_relay_peer_links_made_total": "Links with peer relays made.",
    "hearth_relay_peer_outbox_bytes": "Bytes waiting to go to a linked peer relay.",
    "hearth_relay_pruned_total": "Snapshots deleted because newer ones supersede them.",
    "hearth_relay_rate_limited_total": "Publishes refused or slowed for their rate.",
    "hearth_relay_rejections_total": "Things refused, by reason.",
    "hearth_relay_reloads_total": "Times the settings and moderation lists were reloaded.",
    "hearth_relay_topic_quota_used_max": "The fullest topic's share of its quota.",
    "hearth_relay_topics": "Topics registered now.",
    "hearth_relay_topics_by_size": "Topics by how much they hold.",
    "hearth_relay_topics_expired_total": "Topics deleted after going unused.",
    "hearth_relay_write_seconds": "Time to make a batch of bundles durable.",
}
"""Every family the relay writes, with its help text."""

REJECTION_REASONS = (
    "bad-freeze",
    "bad-registration",
    "bad-signature",
    "bad_envelope",
    "bad_frame",
    "banned",
    "blocked",
    "connection_limit",
    "disk-full",
    "frame_too_big",
    "gone_early",
    "handshake_evicted",
    "handshake_timeout",
    "invite-used-up",
    "key-banned",
    "key-has-topic",
    "mailbox-full",
    "mailbox-taken",
    "no-such-mailbox",
    "not-a-node",
    "not-admitted",
    "peer_bad_proof",
    "peer_mirror_again",
    "peer_refused",
    "peer_relinking",
    "peer_unproven",
    "peer_wrong_id",
    "quota-exceeded",
    "rate-limited",
    "relay-full",
    "slow_consumer",
    "store-failed",
    "too-many-guesses",
    "too-many-mailboxes",
    "too-many-registrations",
    "too-many-topics",
    "topic-frozen",
    "topic-held",
    "topic-refused",
    "topic-taken",
    "unknown-topic",
    "ws_error",
)
"""The reasons ``hearth_relay_rejections_total`` shows from the start (others may come)."""

_Key = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, labels: dict[str, str]) -> _Key:
    return name, tuple(sorted(labels.items()))


class Metrics:
    """The relay's counters, gauges and summaries."""

    def __init__(self, *, process: bool = False) -> None:
        """``process``: also write the process's own metrics (``process_*``; a relay
        process, not a simulation)."""
        self._counters: defaultdict[_Key, float] = defaultdict(float)
        self._gauges: dict[_Key, float] = {}
        self._summaries: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for name in FAMILIES:
            if name.endswith("_total"):
                self._counters[(name, ())] = 0.0
        del self._counters[("hearth_relay_rejections_total", ())]
        del self._counters[("hearth_relay_moderation_actions_total", ())]
        for reason in REJECTION_REASONS:
            self._counters[_key("hearth_relay_rejections_total", {"reason": reason})] = 0.0
        for action in ACTIONS:
            self._counters[_key("hearth_relay_moderation_actions_total", {"action": action})] = 0.0
        self._summaries["hearth_relay_write_seconds"] = [0.0, 0.0]
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        if process:
            ProcessCollector(registry=self.registry)

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add to a counter (its name ends in ``_total``)."""
        # Unlabelled counters are bumped once per delivered bundle: no sorting for them.
        self._counters[_key(name, labels) if labels else (name, ())] += amount

    def set_counter(self, name: str, value: float, **labels: str) -> None:
        """Set a counter kept elsewhere (the store's moderation log) to its total."""
        self._counters[_key(name, labels)] = value

    def gauge(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        self._gauges[_key(name, labels)] = value

    def clear(self, name: str) -> None:
        """Forget every labelled value of a gauge (for those whose label sets come and go)."""
        for key in [k for k in self._gauges if k[0] == name]:
            del self._gauges[key]

    def observe(self, name: str, seconds: float) -> None:
        """Record one duration."""
        summary = self._summaries[name]
        summary[0] += 1
        summary[1] += seconds

    def value(self, name: str, **labels: str) -> float:
        """A counter's current value (for tests and /info)."""
        return self._counters.get(_key(name, labels), 0.0)

    def render(self) -> bytes:
        """Everything, in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def families(self) -> Iterator[Metric]:
        """The values as ``prometheus-client`` metric families, one per name."""
        build = GaugeMetricFamily(
            "hearth_relay_build_info",
            "The relay's version (always 1; the labels say which).",
            labels=["version", "protocol", "python"],
        )
        build.add_metric([__version__, str(PROTOCOL_VERSION), platform.python_version()], 1)
        yield build
        for kind, table in (("counter", self._counters), ("gauge", self._gauges)):
            by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
            for (name, labels), value in sorted(table.items()):
                by_name.setdefault(name, []).append((labels, value))
            for name, values in by_name.items():
                names = [k for k, _ in values[0][0]]
                helps = FAMILIES.get(name, name.replace("_", " "))
                family: CounterMetricFamily | GaugeMetricFamily
                if kind == "counter":
                    family = CounterMetricFamily(name, helps, labels=names)
                else:
                    family = GaugeMetricFamily(name, helps, labels=names)
                for labels, value in values:
                    family.add_metric([v for _, v in labels], value)
                yield family
        for name, (count, total) in sorted(self._summaries.items()):
            yield SummaryMetricFamily(
                name, FAMILIES.get(name, name), count_value=int(count), sum_value=total
            )


class _Collector:
    """What ``prometheus-client`` asks at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.families()
