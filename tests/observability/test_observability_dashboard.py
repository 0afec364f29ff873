"""The Grafana dashboard: valid JSON the sidecar can load, and every query names metrics that the relay or
the operator really registers (read from their registries)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.observability import SCRAPE_SERIES, dashboard_exprs, metric_names, registered_names

pytestmark = pytest.mark.unit


def test_metric_names_of_an_expression() -> None:
    expr = ('histogram_quantile(0.95, sum by (le) (rate(a_bucket{ns=~"$namespace", x="y{z}"}[5m])))'
            ' / on (pod) group_left b_total - time() and c offset 5m > bool 2')
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_every_dashboard_query_uses_registered_metrics(tmp_path: Path) -> None:
    known = registered_names(tmp_path) | SCRAPE_SERIES
    exprs = dashboard_exprs()
    unknown = {(title, name) for title, expr in exprs for name in metric_names(expr) if name not in known}
    assert unknown == set()
    assert all(metric_names(expr) for _, expr in exprs), "a query that selects no metric checks nothing"


def test_dashboard_covers_what_the_platform_team_asks_for(tmp_path: Path) -> None:
    used = set().union(*(metric_names(expr) for _, expr in dashboard_exprs()))
    assert {"mta_messages_accepted_total", "mta_messages_rejected_total", "mta_delivery_events_total",
            "mta_queue_messages", "mta_queue_oldest_message_age_seconds", "mta_auth_failures_total",
            "mta_credential_delivery_events_total", "mta_suppression_list_entries",
            "mta_tls_certificate_expiry_timestamp_seconds", "mta_spool_filesystem_avail_bytes",
            "mta_operator_leader"} <= used
    # What delivery control holds back, and each hop's TLS
    assert {"mta_queue_held_messages", "mta_delivery_destinations_suspended", "mta_queue_suspensions",
            "mta_delivery_throttle_suspensions_total", "mta_delivery_tls_total"} <= used
