"""The operator's own metrics: the leader gauge follows the elector's flag at scrape time."""

from __future__ import annotations

import pytest
from mta_operator.metrics import OperatorMetrics
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.unit


def _value(metrics: OperatorMetrics, name: str) -> float:
    text = generate_latest(metrics.registry).decode()
    [sample] = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
    return sample.value


def test_leader_gauge_reads_the_flag_when_scraped() -> None:
    leading = [False]
    metrics = OperatorMetrics(lambda: leading[0])
    assert _value(metrics, "mta_operator_leader") == 0
    leading[0] = True
    assert _value(metrics, "mta_operator_leader") == 1
