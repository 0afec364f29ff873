"""Routes on a Cluster, in process: a route smarthost whose credentials Secret is missing is left out (its
route holds mail) and DeliveryReady names the field, until the Secret exists; the watcher follows the
Secret as an optional source; a smarthost that is the cluster's own Service is refused as a loop and
Ready says so."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from mta_operator import naming
from mta_operator.reconcile import cluster as reconcile_cluster
from operator_core.conftest import NAMESPACE, Core, cluster_and_domains, wait_for
from support.objects import condition

pytestmark = pytest.mark.unit
ROUTE = {"name": "partners", "recipientDomains": ["partner.example"], "smarthosts": [
    {"host": "relay.partner.example", "credentialsSecretRef": {"name": "partner-relay"}}]}


def _with_routes(docs: list[dict[str, Any]], *routes: dict[str, Any]) -> list[dict[str, Any]]:
    for doc in docs:
        if doc["kind"] == "Cluster":
            doc["spec"]["delivery"] = {"routes": list(routes)}
    return docs


def _delivery(core: Core) -> dict[str, Any]:
    return condition(core.cr("Cluster", "main"), "DeliveryReady")


def _settings(core: Core) -> dict[str, Any]:
    return yaml.safe_load(core.kube.stored("v1", "ConfigMap", NAMESPACE, naming.settings("main"))
                          ["data"]["relay.yaml"])


async def test_a_missing_route_secret_holds_the_route_until_it_exists(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile_cluster, "DELIVERY_CHECK_SECONDS", 0.05)
    core.apply(*_with_routes(cluster_and_domains(), ROUTE))
    await core.start()
    missing = await wait_for(lambda: (c := _delivery(core)).get("status") == "False" and c,
                             "DeliveryReady=False")
    assert missing["reason"] == "SmarthostSecretNotFound"
    assert "spec.delivery.routes[0].smarthosts[0].credentialsSecretRef" in missing["message"]
    (route,) = _settings(core)["delivery"]["routes"]
    assert (route["name"], route["mode"]) == ("partners", "Hold")
    sts = core.kube.stored("apps/v1", "StatefulSet", NAMESPACE, naming.mta("main"))
    (watcher,) = sts["spec"]["template"]["spec"]["initContainers"]
    assert "secret/partner-relay=smarthost-partner-relay?" in watcher["command"]

    core.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "partner-relay",
                                                                   "namespace": NAMESPACE},
                "data": {k: base64.b64encode(b"x").decode() for k in ("username", "password")}})
    ready = await wait_for(lambda: (c := _delivery(core)).get("status") == "True" and c, "DeliveryReady")
    assert ready["reason"] == "RoutesAccepted"
    (route,) = _settings(core)["delivery"]["routes"]
    assert route["mode"] == "Smarthost"
    assert route["smarthosts"][0]["usernameFile"] == "smarthost-partner-relay/username"


async def test_a_smarthost_that_is_the_clusters_own_service_is_refused(core: Core) -> None:
    own = f"{naming.mta('main')}.{NAMESPACE}.svc.cluster.local"
    core.apply(*_with_routes(cluster_and_domains(), {
        "name": "loop", "recipientDomains": ["a.example"], "smarthosts": [{"host": own}]}))
    await core.start()
    loop = await wait_for(lambda: (c := _delivery(core)).get("status") == "False" and c,
                          "DeliveryReady=False")
    assert loop["reason"] == "SmarthostLoop"
    assert "spec.delivery.routes[0].smarthosts[0].host" in loop["message"]
    ready = await wait_for(lambda: (c := condition(core.cr("Cluster", "main"), "Ready")).get("reason")
                           == "SmarthostLoop" and c, "Ready=False SmarthostLoop")
    assert ready["status"] == "False"
    (route,) = _settings(core)["delivery"]["routes"]
    assert route["mode"] == "Hold"
