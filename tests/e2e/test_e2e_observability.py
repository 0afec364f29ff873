"""The chart's observability against a real Prometheus on the test bed while mail flows through the chain.

Prometheus's scrape config is derived from the chart's own PodMonitors (``helm template``), as the
Prometheus Operator derives it: the MTAs' job discovers pods through the API server (kubernetes_sd, pod
role) and keeps them by the PodMonitor's selector labels and named port; the operator's job points at the
operator process the chain runs (the chart's operator Deployment is faked by kwok here), with the same path,
scheme and job relabeling. The chart's alerting rules are loaded as rendered. Every dashboard query and
every alert expression must evaluate; the queries of what this test exercises must return data; no alert
may be pending or firing on a healthy chain."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2ekit import auth_code, submit
from support.observability import (
    alert_exprs,
    dashboard_exprs,
    metric_names,
    podmonitors,
    rendered_rules,
    required_binary,
)
from support.prometheus import Prometheus, scrape_config
from support.waiting import wait_until

pytestmark = pytest.mark.testbed

SCRAPE = "2s"
RATE = "30s"  # $__rate_interval: several scrapes at SCRAPE
# Panels whose series exist only with what this test does not set up: webhooks, per-credential metrics
# (events.credentialMetrics), the rate limit, refused connections, bounce classes (a bounce).
MAY_BE_EMPTY = {"Connections refused at connect", "Deferred and bounced by class", "Rate limit waits",
                "Webhooks", "Delivery events per credential", "Bounce share per credential",
                "Throttle suspensions by rule"}  # a labelled counter: no series before the first throttle


@pytest.fixture(scope="module")
def prometheus(chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = required_binary("prometheus")
    required_binary("helm")
    state = tmp_path_factory.mktemp("prometheus")
    # As an install that watches this namespace: other tests' MTAs on the test bed are not this one's.
    mtas, operator = podmonitors({"interval": SCRAPE}, watch_namespaces=[chain.namespace])
    rules = state / "rules.yaml"
    rules.write_text(yaml.safe_dump(rendered_rules(), sort_keys=False))
    config = {
        "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
        "rule_files": [str(rules)],
        "scrape_configs": [
            scrape_config(mtas, SCRAPE, Path(chain.kube.kubeconfig)),
            scrape_config(operator, SCRAPE, None, static_target=f"127.0.0.1:{chain.operator.metrics_port}"),
        ]}
    prom = Prometheus(binary, state, config).start()
    try:
        yield prom
    finally:
        prom.stop()


def _instant(expr: str, namespace: str) -> str:
    """Grafana's variables filled in: a namespace name is letters, digits and '-', a regex of itself."""
    return expr.replace("$namespace", namespace).replace("$__rate_interval", RATE)


def test_dashboard_queries_and_alerts_on_a_real_prometheus(chain: Any, prometheus: Prometheus) -> None:
    creds = chain.connection("billing")
    [ip] = chain.addresses()
    port = chain.port(int(creds["port"]))
    for _ in range(3):
        reply = submit(ip, port, chain.tls, username=creds["username"], password=creds["password"],
                       mail_from="billing@example.com")
        assert reply.accepted, reply
    refused = submit(ip, port, chain.tls, username=creds["username"], password=creds["password"],
                     mail_from="someone@not-a-domain-of-billing.example")
    assert refused.code == 550, refused
    assert auth_code(ip, port, chain.tls, creds["username"], "not-the-password") == 535

    def has(expr: str) -> bool:
        answer = prometheus.query(expr)
        return answer["status"] == "success" and bool(answer["data"]["result"])

    ns = chain.namespace
    # both jobs up under the chart's job names, and the deliveries counted there
    wait_until(lambda: has(f'up{{job=~".*-mtas", namespace="{ns}"}} == 1')
               and has('up{job=~".*-operator"} == 1'), timeout=60,
               what="Prometheus scraping the MTA pod and the operator")
    wait_until(lambda: has(f'sum(mta_delivery_events_total{{namespace="{ns}", type="Delivery"}}) >= 3'),
               timeout=90, what="the three deliveries in Prometheus")
    time.sleep(8)  # a few more scrapes, so each rate() window holds increments

    errors, empty = {}, set()
    for title, expr in dashboard_exprs():
        answer = prometheus.query(_instant(expr, ns))
        if answer["status"] != "success":
            errors[title] = answer.get("error")
        elif not answer["data"]["result"]:
            empty.add(title)
    assert errors == {}
    assert empty <= MAY_BE_EMPTY, empty - MAY_BE_EMPTY

    for alert, expr in alert_exprs(rendered_rules()):
        answer = prometheus.query(expr)
        assert answer["status"] == "success", (alert, answer)
        # each series the alert selects exists under the chart's job names (a wrong job or label would make
        # the alert silently never fire, or MTAOperatorDown always fire)
        for name in metric_names(expr):
            assert has(f'{name}{{job=~".*-(mtas|operator)"}}'), (alert, name)

    def evaluated() -> list[dict[str, Any]]:
        groups = prometheus.api("rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("2") for r in rules) else []

    rules = wait_until(evaluated, timeout=30, what="every rule evaluated")
    assert {r["name"]: (r["health"], r.get("lastError", "")) for r in rules} == {
        r["name"]: ("ok", "") for r in rules}
    assert len(rules) == len(alert_exprs(rendered_rules()))
    assert prometheus.api("alerts")["data"]["alerts"] == []
