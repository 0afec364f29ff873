"""Pure renderer tests for Cluster.spec.delivery: routes, shaping, the Secrets the watcher publishes, and the
refusal of smarthosts that loop back into the cluster or lack their credentials Secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from mta_operator.api import Cluster
from mta_operator.api.reasons import Reason
from mta_operator.render import delivery, relay_config, workload
from mta_relay import config as rc
from mta_relay.delivery import from_config
from mta_relay.delivery.shaping import ShapingTable

pytestmark = pytest.mark.unit


def make(delivery_spec: dict[str, Any], name: str = "main", namespace: str = "mail") -> Cluster:
    return Cluster.model_validate({
        "apiVersion": "mta-operator.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": namespace, "uid": "u1"},
        "spec": {"hostname": "smtp.example.com", "delivery": delivery_spec}})


ROUTES = [
    {"name": "partners", "recipientDomains": ["partner.example"], "smarthosts": [
        {"host": "relay1.partner.example", "port": 2525, "tls": "Implicit",
         "credentialsSecretRef": {"name": "partner-relay"}},
        {"host": "relay2.partner.example"}]},
    {"name": "news", "senderDomains": ["news.example.com"], "mode": "MX"},
]
SHAPING = {"builtinTable": False,
           "default": {"maxConnections": 4, "connectTimeout": "20s"},
           "rules": [{"name": "google", "mxHosts": [".google.com"], "maxConnections": 3,
                      "messagesPerConnection": 40, "rate": {"messages": 100, "period": "Minute"},
                      "transactionTimeout": "5m"}],
           "throttleSuspension": {"first": "30s", "max": "2h"}}
OK_SECRETS = {"partner-relay": ["username", "password"], "default-relay": ["username", "password"]}


def settings(cluster: Cluster, refused: list[delivery.Refusal] | None = None) -> rc.RelaySettings:
    out = relay_config.relay_settings(cluster, [], refused=refused or [])
    # The relay reads what the operator writes: a round trip through the YAML the ConfigMap carries.
    return rc.RelaySettings.model_validate(yaml.safe_load(relay_config.settings_yaml(out)))


def test_routes_and_shaping_render_into_the_relay_settings() -> None:
    relay = settings(make({"mode": "Smarthost", "smarthost": {
        "host": "relay.example.net", "credentialsSecretRef": {"name": "default-relay"}},
        "routes": ROUTES, "shaping": SHAPING}))
    d = relay.delivery
    assert (d.mode, d.smarthost and d.smarthost.username_file) == ("Smarthost", "smarthost/username")
    partners, news = d.routes
    assert partners.mode == "Smarthost"
    assert partners.recipient_domains == ["partner.example"]
    assert [(h.host, h.port, h.tls, h.username_file) for h in partners.smarthosts] == [
        ("relay1.partner.example", 2525, "Implicit", "smarthost-partner-relay/username"),
        ("relay2.partner.example", 587, "STARTTLS", None)]
    assert (news.mode, news.sender_domains) == ("MX", ["news.example.com"])
    shaping = d.shaping
    assert not shaping.builtin
    assert (shaping.suspend_first_seconds, shaping.suspend_max_seconds) == (30, 7200)
    assert (shaping.default.max_connections, shaping.default.connect_timeout_seconds) == (4, 20)
    google = ShapingTable(shaping).match("corp.example", ["aspmx.l.google.com"]).limits
    assert (google.max_connections, google.messages_per_connection, google.rate) == (3, 40, (100, 60.0))
    assert (google.connect_timeout, google.transaction_timeout) == (20, 300)


def test_the_relay_builds_the_rendered_routes(tmp_path: Path) -> None:
    relay = settings(make({"routes": ROUTES}))
    (tmp_path / "smarthost-partner-relay").mkdir()
    for key in ("username", "password"):
        (tmp_path / "smarthost-partner-relay" / key).write_text(f"{key}-value")
    routes = from_config.routes(relay, tmp_path)
    assert routes.select("a@example.com", "x@partner.example").name == "partners"
    assert routes.select("a@news.example.com", "x@other.example").name == "news"
    assert routes.select("a@example.com", "x@other.example").name == "default"
    policy = routes.by_recipient["partner.example"].policy_at(0)
    assert policy.credentials is not None
    assert policy.credentials.username == "username-value"


def test_default_rendering_keeps_mx_and_the_builtin_table() -> None:
    d = settings(make({})).delivery
    assert (d.mode, d.routes, d.shaping.builtin) == ("MX", [], True)


def test_route_secrets_are_watched_optionally_and_the_default_smarthosts_as_before() -> None:
    cluster = make({"mode": "Smarthost", "smarthost": {
        "host": "relay.example.net", "credentialsSecretRef": {"name": "default-relay"}}, "routes": ROUTES})
    watched = workload.watched_secrets(cluster, "tls-secret")
    assert ("default-relay", "smarthost") in watched
    assert ("partner-relay", "smarthost-partner-relay") in watched
    role = workload.role(cluster, "tls-secret")
    assert {"default-relay", "partner-relay"} <= set(role["rules"][0]["resourceNames"])
    sts = workload.statefulset(cluster, "tls-secret", workload.Image("img"), 2)
    init = sts["spec"]["template"]["spec"]["initContainers"]
    [watcher] = [c for c in init if c["name"] == "config-watcher"]
    assert "secret/partner-relay=smarthost-partner-relay?" in watcher["command"]
    assert "secret/default-relay=smarthost" in watcher["command"]


@pytest.mark.parametrize("host", [
    "main-mta.mail", "main-mta.mail.svc", "main-mta.mail.svc.cluster.local",
    "main-mta-pods.mail.svc.cluster.local", "main-mta-0.main-mta-pods.mail.svc", "10.96.0.42",
])
def test_a_smarthost_that_is_the_cluster_itself_is_refused(host: str) -> None:
    cluster = make({"routes": [{"name": "loop", "recipientDomains": ["a.example"], "smarthosts": [
        {"host": host}, {"host": "relay.example.net"}]}]})
    [refusal] = delivery.refusals(cluster, {}, own_addresses=["10.96.0.42"])
    assert refusal.reason is Reason.SMARTHOST_LOOP
    assert refusal.field == "spec.delivery.routes[0].smarthosts[0].host"
    assert host in refusal.message
    # Left out; the route keeps its other smarthost.
    [route] = settings(cluster, [refusal]).delivery.routes
    assert [h.host for h in route.smarthosts] == ["relay.example.net"]


def test_a_route_left_without_smarthosts_holds_its_mail() -> None:
    cluster = make({"routes": [{"name": "loop", "recipientDomains": ["a.example"],
                                "smarthosts": [{"host": "main-mta.mail.svc"}]}]})
    refused = delivery.refusals(cluster, {})
    [route] = settings(cluster, refused).delivery.routes
    assert (route.mode, route.smarthosts) == ("Hold", [])


def test_a_default_smarthost_that_loops_holds_the_mail_rather_than_sending_it_elsewhere() -> None:
    cluster = make({"mode": "Smarthost", "smarthost": {"host": "main-mta-pods.mail.svc"}})
    refused = delivery.refusals(cluster, {})
    assert [r.field for r in refused] == ["spec.delivery.smarthost.host"]
    assert settings(cluster, refused).delivery.mode == "Hold"


def test_a_missing_or_incomplete_credentials_secret_is_refused_naming_the_field() -> None:
    cluster = make({"routes": ROUTES})
    [missing] = delivery.refusals(cluster, {"partner-relay": None})
    assert missing.reason is Reason.SMARTHOST_SECRET_NOT_FOUND
    assert missing.field == "spec.delivery.routes[0].smarthosts[0].credentialsSecretRef"
    assert "does not exist" in missing.message
    [partial] = delivery.refusals(cluster, {"partner-relay": ["username"]})
    assert "has no key password" in partial.message
    assert delivery.refusals(cluster, OK_SECRETS) == []
    [route, _news] = settings(cluster, [missing]).delivery.routes
    assert [h.host for h in route.smarthosts] == ["relay2.partner.example"]


def test_the_relay_config_refuses_an_unknown_route_mode_and_keeps_hold() -> None:
    assert rc.Delivery(mode="Hold").mode == "Hold"
    with pytest.raises(ValueError, match=r"needs delivery\.smarthost"):
        rc.Delivery(mode="Smarthost")
