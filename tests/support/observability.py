"""What the observability tests (tests/observability, the e2e Prometheus test) share: the metric names the
relay and operator register (built from their own registries, never a list kept here), the metric names a
PromQL expression uses, the chart's dashboard queries, its PodMonitors and its rendered alerting rules."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from mta_operator.metrics import OperatorMetrics
from mta_relay import handoff
from mta_relay.delivery.handoff import HandoffSender
from mta_relay.delivery.metrics import DeliveryMetrics, QueueSnapshot
from mta_relay.events.webhooks import WebhookSender
from mta_relay.metrics import Metrics
from prometheus_client import CollectorRegistry
from testbed import versions

CHART = Path(__file__).resolve().parents[2] / "helm" / "mta-operator"

DASHBOARD = CHART / "files" / "dashboards" / "mta.json"
RULES_API = "monitoring.coreos.com/v1/PrometheusRule"
PODMONITOR_API = "monitoring.coreos.com/v1/PodMonitor"
RELEASE, RELEASE_NS = "mta", "mta-system"
# Series Prometheus itself adds to every scrape, not registered by any process of ours.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "gauge": ("",), "summary": ("_sum", "_count", "_created", ""), "info": ("_info",)}


def required_binary(name: str) -> Path:
    """A test bed binary (promtool, prometheus, helm): with CI=true a missing one fails the test, elsewhere
    it skips (``make testbed-build`` builds it)."""
    path = versions.binary(name)
    if not path.exists():
        reason = f"{name} not built at {path} (run `make testbed-build`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} required in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def registries(tmp: Path) -> list[CollectorRegistry]:
    """Every registry an MTA's /metrics or the operator's serves, built as the processes build them: the
    front door's (``Metrics``), the delivery process's (delivery, queue, webhooks, hand-off sender), the
    operator's."""
    delivery = CollectorRegistry()
    DeliveryMetrics(delivery).watch_queue(lambda: QueueSnapshot({}, 0.0))
    WebhookSender(tmp / "events.db", delivery)
    HandoffSender(None, None, tmp, None, delivery)  # type: ignore[arg-type]  # only its counters are used
    front = Metrics().registry
    handoff.received_counter(front)  # the relay adds it to the front door's registry
    return [front, delivery, OperatorMetrics(lambda: True).registry]


def registered_names(tmp: Path) -> set[str]:
    """Sample names (with _total, _bucket ... as exposed) of every metric the relay and operator register."""
    names: set[str] = set()
    for registry in registries(tmp):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring",
             "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers left once strings, label matchers, ranges and
    grouping clauses are gone, that are not function or aggregation calls, keywords or numbers."""
    bare = _GROUPING.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub('""', expr))))
    return {m.group(1) for m in _IDENT.finditer(bare)
            if not m.group(2) and m.group(1).lower() not in _KEYWORDS and not m.group(1).startswith("$")}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard, its template variables' queries included."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", query["query"])
            assert found, f"variable {var['name']}: only label_values(EXPR, label) is checked"
            out.append((f"${var['name']}", found.group(1)))
    return out


def render(values: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    """`helm template` of the chart with these values (--set-json per top-level key)."""
    sets = [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]
    out = subprocess.run([str(versions.binary("helm")), "template", RELEASE, str(CHART), "--namespace",
                          RELEASE_NS, "--kube-version", versions.kube_version().lstrip("v"), *sets, *extra],
                         capture_output=True, text=True, check=True, timeout=120)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def rendered_rules(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The PrometheusRule's spec (``groups``) as `helm template` renders it, as a promtool rule file."""
    objs = render({"prometheusRules": {"enabled": True, **(values or {})}}, "--api-versions", RULES_API)
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    return dict(rule["spec"])


def alert_exprs(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["alert"], r["expr"]) for g in spec["groups"] for r in g["rules"] if "alert" in r]


def write_rules(spec: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def podmonitors(values: dict[str, Any] | None = None,
                watch_namespaces: list[str] | None = None) -> list[dict[str, Any]]:
    """The chart's PodMonitors (MTAs, operator) as `helm template` renders them; ``watch_namespaces``: the
    chart's ``watchNamespaces`` (the MTAs' PodMonitor selects only those namespaces)."""
    chart: dict[str, Any] = {"podMonitor": {"enabled": True, **(values or {})}}
    if watch_namespaces:
        chart["watchNamespaces"] = watch_namespaces
    objs = render(chart, "--api-versions", PODMONITOR_API)
    return [o for o in objs if o["kind"] == "PodMonitor"]
