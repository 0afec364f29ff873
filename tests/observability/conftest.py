"""The observability that ships with the chart: the Grafana dashboard's queries and the alerting rules
checked against the metric names the relay and the operator register (unit), the rules checked and
unit-tested by promtool (every alert fires and stays quiet). The real Prometheus scraping the chain while
mail flows is tests/e2e/test_e2e_observability.py, beside the chain fixture it needs. promtool and helm come
from the test bed's cache (``make testbed-build``): with CI=true a missing one fails the test, elsewhere it
skips."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.observability import required_binary


@pytest.fixture(scope="session")
def promtool() -> Path:
    return required_binary("promtool")


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return required_binary("helm")
