"""Webhooks on a Cluster, in process: the settings the MTAs get, the watcher following the Secret (as an
optional source: a missing Secret never holds the MTAs' config back), and WebhooksReady saying which
field names a Secret that is not there, until it is."""

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
HOOK = {"name": "app-events", "url": "https://hooks.example.com/mta", "secretRef": {"name": "mta-webhook"},
        "types": ["Delivery", "Bounce"], "credentials": ["billing"]}


def _with_webhook(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for doc in docs:
        if doc["kind"] == "Cluster":
            doc["spec"]["events"] = {"retention": "24h", "webhooks": [HOOK]}
    return docs


def _webhooks(core: Core) -> dict[str, Any]:
    return condition(core.cr("Cluster", "main"), "WebhooksReady")


async def test_webhooks_reach_the_settings_and_a_missing_secret_is_named(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile_cluster, "EVENTS_CHECK_SECONDS", 0.05)
    core.apply(*_with_webhook(cluster_and_domains()))
    await core.start()
    missing = await wait_for(lambda: (c := _webhooks(core)).get("status") == "False" and c,
                             "WebhooksReady=False")
    assert missing["reason"] == "WebhookSecretNotFound"
    assert "spec.events.webhooks[0].secretRef" in missing["message"]
    assert "'mta-webhook' does not exist" in missing["message"]

    settings = yaml.safe_load(core.kube.stored("v1", "ConfigMap", NAMESPACE, naming.settings("main"))
                              ["data"]["relay.yaml"])
    (hook,) = settings["events"]["webhooks"]
    assert (hook["url"], hook["types"], hook["credentials"]) == (HOOK["url"], ["Delivery", "Bounce"],
                                                                 ["billing"])
    assert settings["events"]["retentionSeconds"] == 24 * 3600
    sts = core.kube.stored("apps/v1", "StatefulSet", NAMESPACE, naming.mta("main"))
    (watcher,) = sts["spec"]["template"]["spec"]["initContainers"]
    assert "secret/mta-webhook=webhook-app-events?" in watcher["command"]
    role = core.kube.stored("rbac.authorization.k8s.io/v1", "Role", NAMESPACE, naming.mta("main"))
    assert "mta-webhook" in role["rules"][0]["resourceNames"]

    core.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mta-webhook",
                                                                   "namespace": NAMESPACE},
                "data": {"wrong-key": base64.b64encode(b"whsec_x").decode()}})
    wrong = await wait_for(lambda: "has no key" in (c := _webhooks(core)).get("message", "") and c,
                           "the missing key named")
    assert "has no key 'secret'" in wrong["message"]
    core.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mta-webhook",
                                                                   "namespace": NAMESPACE},
                "data": {"secret": base64.b64encode(b"whsec_" + base64.b64encode(b"k" * 32)).decode()}})
    ready = await wait_for(lambda: (c := _webhooks(core)).get("status") == "True" and c, "WebhooksReady")
    assert ready["reason"] == "WebhooksDelivering"
    rows = core.cr("Cluster", "main")["status"]["events"]["webhooks"]
    assert rows == [{"name": "app-events", "pending": 0, "oldestPendingSeconds": 0, "dropped": 0}]
