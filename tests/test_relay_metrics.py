"""The relay's metrics an operator alerts on (relay/metrics.py): every family has its
help, no two clash under OpenMetrics, and every series is there from the first scrape."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from relay.metrics import FAMILIES, REJECTION_REASONS, Metrics

RELAY = Path(__file__).parent.parent / "relay"


def test_every_metric_the_relay_writes_is_declared_with_its_help() -> None:
    used = set()
    for source in RELAY.glob("*.py"):
        calls = r'\.(?:count|gauge|observe|set_counter|clear)\(\s*"(hearth_relay_[a-z_]+)"'
        used |= set(re.findall(calls, source.read_text()))
    assert "hearth_relay_rejections_total" in used
    assert used - set(FAMILIES) == set()
    for name, text in FAMILIES.items():
        assert text.endswith("."), name


def test_no_two_families_clash_once_total_is_taken_off() -> None:
    metrics = Metrics(process=True)
    for name in FAMILIES:  # every family at once, as at a scrape of a busy relay
        if not name.endswith("_total") and name != "hearth_relay_write_seconds":
            metrics.gauge(name, 1)
    text = openmetrics(metrics.registry).decode()
    names = [family.name for family in text_string_to_metric_families(text)]  # or ValueError
    assert len(names) == len(set(names))
    assert "process_resident_memory_bytes" in names
    assert "hearth_relay_build_info" in names


def test_every_series_is_there_before_its_first_event() -> None:
    families = {
        f.name: f for f in text_string_to_metric_families(openmetrics(Metrics().registry).decode())
    }
    for name in FAMILIES:
        if name.endswith("_total"):
            assert name.removesuffix("_total") in families, name
    reasons = {
        s.labels["reason"]: s.value
        for s in families["hearth_relay_rejections"].samples
        if s.name.endswith("_total")
    }
    assert reasons == dict.fromkeys(REJECTION_REASONS, 0.0)
    actions = {s.labels["action"] for s in families["hearth_relay_moderation_actions"].samples}
    assert {"ban", "freeze", "drop"} <= actions
