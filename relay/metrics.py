"""Prometheus metrics for the relay: counters, gauges with optional labels, and a latency
summary (count and sum), written out by ``prometheus-client``.

Values are kept in plain dicts, cheap to bump on every delivered bundle; at each scrape a
collector hands them to ``prometheus-client`` as metric families, which writes the text
format with HELP and TYPE lines, exact numbers (``rate()`` over the byte counters needs
every digit) and escaped labels. No label ever holds a key, a topic id or an address.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Content-Type of :meth:`Metrics.render`'s text."""

_HELP = {
    "hearth_relay_bundles_in_total": "Bundles newly stored, from clients and peer relays.",
    "hearth_relay_bundles_out_total": "Bundles sent to subscribers and peer relays.",
    "hearth_relay_bundles_stored": "Bundles stored now.",
    "hearth_relay_bytes_in_total": "Bytes of WebSocket messages read from clients.",
    "hearth_relay_bytes_out_total": "Bytes of frames sent to clients.",
    "hearth_relay_connections": "Connections open now.",
    "hearth_relay_connections_total": "Connections admitted.",
    "hearth_relay_mailboxes_total": "Invite mailboxes opened.",
    "hearth_relay_peer_bundles_in_total": "Bundles newly stored that came from peer relays.",
    "hearth_relay_peer_duplicates_total": "Bundles from peer relays stored here already.",
    "hearth_relay_peer_lag_bundles": "Stored bundles a linked peer relay has not been sent.",
    "hearth_relay_peer_links": "Links with peer relays up now.",
    "hearth_relay_peer_links_total": "Links with peer relays made.",
    "hearth_relay_peer_outbox_bytes": "Bytes waiting to go to a linked peer relay.",
    "hearth_relay_pruned_total": "Snapshots deleted because newer ones supersede them.",
    "hearth_relay_rate_limited_total": "Publishes refused or slowed for their rate.",
    "hearth_relay_rejections_total": "Things refused, by reason.",
    "hearth_relay_topic_quota_used_max": "The fullest topic's share of its quota.",
    "hearth_relay_topics": "Topics registered now.",
    "hearth_relay_topics_by_size": "Topics by how much they hold.",
    "hearth_relay_topics_expired_total": "Topics deleted after going unused.",
    "hearth_relay_write_seconds": "Time to make a batch of bundles durable.",
}

_Key = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, labels: dict[str, str]) -> _Key:
    return name, tuple(sorted(labels.items()))


class Metrics:
    """The relay's counters, gauges and summaries."""

    def __init__(self) -> None:
        self._counters: defaultdict[_Key, float] = defaultdict(float)
        self._gauges: dict[_Key, float] = {}
        self._summaries: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add to a counter (its name ends in ``_total``)."""
        # Unlabelled counters are bumped once per delivered bundle: no sorting for them.
        self._counters[_key(name, labels) if labels else (name, ())] += amount

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
        for kind, table in (("counter", self._counters), ("gauge", self._gauges)):
            by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
            for (name, labels), value in sorted(table.items()):
                by_name.setdefault(name, []).append((labels, value))
            for name, values in by_name.items():
                names = [k for k, _ in values[0][0]]
                helps = _HELP.get(name, name.replace("_", " "))
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
                name, _HELP.get(name, name), count_value=int(count), sum_value=total
            )


class _Collector:
    """What ``prometheus-client`` asks at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.families()
