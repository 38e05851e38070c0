"""Prometheus metrics for the relay, in the text exposition format, without a library.

Counters and gauges with optional labels, and a latency summary (count and sum). No
label ever holds a key, a topic id or an address.
"""

from __future__ import annotations

from collections import defaultdict

__all__ = ["Metrics"]


def _key(name: str, labels: dict[str, str]) -> tuple[str, str]:
    rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return name, rendered


class Metrics:
    """The relay's counters, gauges and summaries."""

    def __init__(self) -> None:
        self._counters: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._gauges: dict[tuple[str, str], float] = {}
        self._summaries: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add to a counter."""
        # Unlabelled counters are bumped once per delivered bundle: skip rendering a key.
        self._counters[_key(name, labels) if labels else (name, "")] += amount

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

    def render(self) -> str:
        """Everything, as Prometheus text."""
        lines: list[str] = []
        seen: set[str] = set()
        for kind, table in (("counter", self._counters), ("gauge", self._gauges)):
            for (name, labels), value in sorted(table.items()):
                if name not in seen:
                    lines.append(f"# TYPE {name} {kind}")
                    seen.add(name)
                lines.append(f"{name}{{{labels}}} {value:g}" if labels else f"{name} {value:g}")
        for name, (count, total) in sorted(self._summaries.items()):
            lines += [
                f"# TYPE {name} summary",
                f"{name}_count {count:g}",
                f"{name}_sum {total:.6f}",
            ]
        return "\n".join(lines) + "\n"
