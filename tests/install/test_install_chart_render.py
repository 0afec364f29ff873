"""The Helm chart rendered with helm itself (no cluster): lint, objects, CRDs, RBAC modes, schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from install_kit import CHART, CRDS, KUBE_VERSION, by_kind, crd_files, helm, render
from install_options import OPTIONS

pytestmark = pytest.mark.usefixtures("helm_bin")

HELM_ANNOTATIONS = {"helm.sh/resource-policy"}


def _leaf_keys(values: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        keys |= _leaf_keys(value, f"{path}.") if isinstance(value, dict) and value else {path}
    return keys


def test_every_documented_value_has_an_option_case() -> None:
    documented = _leaf_keys(yaml.safe_load((CHART / "values.yaml").read_text()))
    covered = set().union(*(_leaf_keys(case) for case in OPTIONS.values()))
    missing = {d for d in documented if not any(c == d or c.startswith(f"{d}.") for c in covered)}
    assert missing == set()


def test_helm_lint_is_clean() -> None:
    out = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in out.stdout


def test_chart_refuses_clusters_older_than_kube_version() -> None:
    out = helm("template", "r", str(CHART), "--kube-version", "1.29.0", check=False)
    assert out.returncode != 0
    assert "requires kubeVersion" in out.stderr


def test_defaults_render_two_restricted_replicas_that_elect_a_leader() -> None:
    objs = render()
    (deployment,) = by_kind(objs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    name = deployment["metadata"]["name"]
    (budget,) = by_kind(objs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    (role,) = [r for r in by_kind(objs, "Role") if r["metadata"]["name"] == f"{name}-leader-election"]
    assert role["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert {(tuple(r.get("resourceNames", [])), tuple(r["verbs"])) for r in role["rules"]} == {
        ((name,), ("get", "update")), ((), ("create",))}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["command"] == ["mta-operator", "run"]
    assert not any(a.startswith("--namespace") for a in container["args"])
    assert f"--leader-election-namespace={deployment['metadata']['namespace']}" in container["args"]
    assert f"--leader-election-name={name}" in container["args"]
    assert f"--relay-image={container['image']}" in container["args"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["port"] == "health"
    assert any(a.endswith(f":8080{probe['path']}") for a in container["args"] if a.startswith("--liveness="))
    assert pod["serviceAccountName"] == by_kind(objs, "ServiceAccount")[0]["metadata"]["name"]
    assert by_kind(objs, "ClusterRole")
    assert by_kind(objs, "ClusterRoleBinding")
    assert [r["metadata"]["name"] for r in by_kind(objs, "Role")] == [f"{name}-leader-election"]
    assert not by_kind(objs, "PodMonitor")


def _without_helm_metadata(crd: dict) -> dict:
    crd = yaml.safe_load(yaml.safe_dump(crd))
    meta = crd["metadata"]
    for key in HELM_ANNOTATIONS:
        meta.get("annotations", {}).pop(key, None)
    if not meta.get("annotations"):
        meta.pop("annotations", None)
    meta["labels"] = {k: v for k, v in meta.get("labels", {}).items()
                      if k == "app.kubernetes.io/part-of"
                      or not k.startswith(("app.kubernetes.io/", "helm.sh/"))}
    return crd


def test_chart_crds_are_identical_to_crds_dir_and_kept_on_uninstall() -> None:
    rendered = {c["metadata"]["name"]: c for c in by_kind(render(), "CustomResourceDefinition")}
    expected = crd_files()
    assert set(rendered) == set(expected)
    for name, crd in rendered.items():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert _without_helm_metadata(crd) == expected[name], name


def test_chart_crd_files_match_crds_dir_byte_for_byte() -> None:
    """files/crds is a copy (Argo CD and helm package refuse links out of the chart): refresh it with
    `cp crds/*.yaml helm/mta-operator/files/crds/` after regenerating crds/."""
    copies = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert copies == {p.name: p.read_bytes() for p in CRDS.glob("*.yaml")}


def test_crds_install_false_leaves_them_out() -> None:
    assert not by_kind(render({"crds": {"install": False}}), "CustomResourceDefinition")


def _rules(obj: dict) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in obj["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_namespaced_mode_grants_namespaced_rules_only_in_watched_namespaces() -> None:
    cluster_wide = render()
    namespaced = render({"watchNamespaces": ["mail", "ops"]})
    (all_rules,) = [_rules(o) for o in by_kind(cluster_wide, "ClusterRole")]
    roles = [r for r in by_kind(namespaced, "Role") if not r["metadata"]["name"].endswith("-leader-election")]
    assert [r["metadata"]["namespace"] for r in roles] == ["mail", "ops"]
    bindings = [b for b in by_kind(namespaced, "RoleBinding")
                if not b["metadata"]["name"].endswith("-leader-election")]
    assert [b["metadata"]["namespace"] for b in bindings] == ["mail", "ops"]
    (cluster_rules,) = [_rules(o) for o in by_kind(namespaced, "ClusterRole")]
    role_rules = _rules(roles[0])
    assert ("", "secrets", "get") in role_rules
    assert not any(resource == "secrets" for _, resource, _ in cluster_rules)
    assert cluster_rules | role_rules == all_rules
    (container,) = by_kind(namespaced, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert "--namespace=mail" in container["args"]
    assert "--namespace=ops" in container["args"]


def test_podmonitor_only_when_the_prometheus_operator_api_is_served() -> None:
    assert not by_kind(render({"podMonitor": {"enabled": True}}), "PodMonitor")
    with_api = render({"podMonitor": {"enabled": True, "interval": "15s"}}, "mta", "mta-system",
                      "--api-versions", "monitoring.coreos.com/v1/PodMonitor")
    monitor, operator = by_kind(with_api, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "mta-relay"
    # the rules select these job names, whatever the Prometheus Operator would name the jobs
    assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": monitor["metadata"]["name"]}]
    (deployment,) = by_kind(with_api, "Deployment")
    assert operator["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    (op_endpoint,) = operator["spec"]["podMetricsEndpoints"]
    assert (op_endpoint["port"], op_endpoint["scheme"]) == ("metrics", "http")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert "--metrics-port=8081" in container["args"]
    assert not by_kind(render({"podMonitor": {"enabled": False}}, "mta", "mta-system", "--api-versions",
                              "monitoring.coreos.com/v1/PodMonitor"), "PodMonitor")


def test_prometheus_rules_only_when_enabled_and_the_api_is_served() -> None:
    api = ("--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
    assert not by_kind(render({"prometheusRules": {"enabled": True}}), "PrometheusRule")
    assert not by_kind(render({}, "mta", "mta-system", *api), "PrometheusRule")
    (rule,) = by_kind(render(OPTIONS["prometheusRules"], "mta", "mta-system", *api), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    exprs = {r["alert"]: (r["expr"], r["for"]) for g in rule["spec"]["groups"] for r in g["rules"]}
    assert exprs["MTANotReady"][1] == "10m"
    assert exprs["MTAOperatorDown"][1] == "15m"
    assert exprs["MTADestinationSuspended"][1] == "45m"
    for alert, threshold in [("MTAQueueMessageOld", "> 7200"), ("MTADeliveryFailureRate", "> 0.5"),
                             ("MTAAuthFailureSpike", "> 5"), ("MTASpoolNearlyFull", "< 0.2"),
                             ("MTACertificateExpiresSoon", "< 21 * 86400")]:
        assert threshold in exprs[alert][0], alert


def test_grafana_dashboard_configmap_only_when_enabled() -> None:
    assert not by_kind(render(), "ConfigMap")
    (config_map,) = by_kind(render(OPTIONS["grafanaDashboard"]), "ConfigMap")
    assert config_map["metadata"]["namespace"] == "mail"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Mail"}
    dashboard = json.loads(config_map["data"]["mta-operator.json"])
    assert dashboard["uid"] == "mta-operator"
    assert json.loads((CHART / "files" / "dashboards" / "mta.json").read_text()) == dashboard


def test_helm_test_pod_sends_with_the_credentials_connection_secret() -> None:
    assert not by_kind(render(), "Pod")
    (pod,) = by_kind(render(OPTIONS["test"]), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["namespace"] == "mail"
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "-m", "mta_operator.kubectl_plugin.smoke_test"]
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert {ref["name"] for ref in secret_refs.values()} == {"billing-smtp"}
    assert secret_refs["MTA_HOST"]["key"] == "serviceHost"
    assert secret_refs["MTA_TLS_SERVER_NAME"]["key"] == "host"
    assert pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 0}, "/replicas"),
    ({"operatorReplicas": 2}, "additional properties 'operatorReplicas' not allowed"),
    ({"image": {"repository": "x", "tag": "", "pullPolicy": "IfNotPresent", "digest": "sha256:0"}},
     "additional properties 'digest' not allowed"),
    ({"crds": {"install": "yes"}}, "/crds/install"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
    ({"logLevel": "TRACE"}, "logLevel"),
    ({"podMonitor": {"enabled": True, "scrapeInterval": "1m"}}, "additional properties 'scrapeInterval'"),
    ({"test": {"to": "not an address"}}, "/test/to"),
])
def test_schema_refuses_bad_values_naming_the_key(values: dict, message: str, tmp_path: Path) -> None:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    out = helm("template", "r", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(file), check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert message in out.stderr, out.stderr
