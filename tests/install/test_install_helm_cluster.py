"""The chart against the test bed's real API server: every option accepted by a server-side dry run;
install, upgrade and uninstall as documented; the operator's ServiceAccount can do exactly what the chart
grants and, in namespaced mode, nothing outside its namespaces."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from install_kit import CHART, by_kind, crd_files, helm, render, set_args
from install_options import OPTIONS
from support.namespaces import temporary_namespace

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("helm_bin")]

PODMONITOR_API = "monitoring.coreos.com/v1/PodMonitor"
PROMETHEUSRULE_API = "monitoring.coreos.com/v1/PrometheusRule"
_CAN_I_ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


@pytest.fixture(scope="module")
def release_ns(kube: Any) -> Iterator[str]:
    yield from temporary_namespace(kube, "inst")


@pytest.fixture(scope="module")
def other_ns(kube: Any) -> Iterator[str]:
    yield from temporary_namespace(kube, "inst")


@pytest.fixture(scope="module")
def podmonitor_api(kube: Any) -> Iterator[None]:
    """Stand-in PodMonitor and PrometheusRule CRDs (schema left open) so the server can dry-run the chart's
    PodMonitors and PrometheusRule."""
    open_schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    created = []
    for kind, plural in (("PodMonitor", "podmonitors"), ("PrometheusRule", "prometheusrules")):
        crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": f"{plural}.monitoring.coreos.com"},
               "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                        "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                                  "listKind": f"{kind}List"},
                        "versions": [{"name": "v1", "served": True, "storage": True, "schema": open_schema}]}}
        if kube.kubectl("get", "crd", crd["metadata"]["name"], check=False).returncode != 0:
            kube.kubectl("create", "-f", "-", stdin=json.dumps(crd))
            kube.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                         f"crd/{crd['metadata']['name']}")
            created.append(crd["metadata"]["name"])
    yield
    for name in created:
        kube.kubectl("delete", "crd", name, "--wait=false", check=False)


def _helm(kube: Any, *args: str, check: bool = True) -> Any:
    return helm(*args, "--kubeconfig", str(kube.kubeconfig), check=check, timeout=180)


def _dry_run(kube: Any, objs: list[dict[str, Any]]) -> Any:
    return kube.kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                        stdin="\n---\n".join(yaml.safe_dump(o) for o in objs))


@pytest.mark.usefixtures("podmonitor_api")
@pytest.mark.parametrize("option", ["defaults", *OPTIONS])
def test_rendered_chart_is_accepted_by_the_api_server(kube: Any, release_ns: str, option: str) -> None:
    values = json.loads(json.dumps(OPTIONS.get(option, {})).replace('"mail"', json.dumps(release_ns)))
    objs = render(values, f"dry-{option.lower()}", release_ns, "--api-versions", PODMONITOR_API,
                  "--api-versions", PROMETHEUSRULE_API)
    if option == "podMonitor":
        assert by_kind(objs, "PodMonitor")
    if option == "prometheusRules":
        assert by_kind(objs, "PrometheusRule")
    if option == "grafanaDashboard":
        assert by_kind(objs, "ConfigMap")
    out = _dry_run(kube, objs)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("(server dry run)") == len(objs)


def _can_i(kube: Any, namespace: str, user: str) -> set[tuple[str, str, str]]:
    """(resource, resourceNames, verb) rows of `kubectl auth can-i --list --as user -n namespace`."""
    out = kube.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace)
    rows = set()
    for line in out.stdout.splitlines()[1:]:
        match = _CAN_I_ROW.match(line)
        assert match is not None, line
        resource, _, names, verbs = match.groups()
        if resource:  # non-resource URLs (/api, /healthz, ...) are every authenticated user's
            rows |= {(resource, names, verb) for verb in verbs.split()}
    return rows


def _granted(objs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """What the chart's Roles/ClusterRoles grant, in can-i's notation (resource.group)."""
    rows = set()
    for role in by_kind(objs, "ClusterRole") + by_kind(objs, "Role"):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    base, _, sub = resource.partition("/")
                    name = (f"{base}.{group}" if group else base) + (f"/{sub}" if sub else "")
                    rows |= {(name, " ".join(rule.get("resourceNames", [])), v) for v in rule["verbs"]}
    return rows


def _install(kube: Any, release: str, namespace: str, values: dict[str, Any]) -> Any:
    return _helm(kube, "install", release, str(CHART), "--namespace", namespace, "--take-ownership",
                 *set_args(values))


def test_install_upgrade_uninstall_cluster_wide(kube: Any, release_ns: str) -> None:
    release = f"mta-{uuid.uuid4().hex[:6]}"
    installed = _install(kube, release, release_ns, {})
    assert "kubectl mta status" in installed.stdout  # NOTES: the next step
    name = f"{release}-mta-operator"
    deployment = json.loads(kube.kubectl("get", "deployment", name, "-n", release_ns, "-o", "json").stdout)
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"  # replicas elect a leader
    kube.kubectl("get", "serviceaccount", name, "-n", release_ns)
    kube.kubectl("get", "clusterrole", name)
    kube.kubectl("get", "clusterrolebinding", name)
    for crd in crd_files():
        got = json.loads(kube.kubectl("get", "crd", crd, "-o", "json").stdout)
        assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    # The ServiceAccount can do exactly what the chart grants, beyond what every authenticated user can.
    sa = f"system:serviceaccount:{release_ns}:{name}"
    baseline = _can_i(kube, release_ns, f"system:serviceaccount:{release_ns}:default")
    rendered = render({}, release, release_ns)
    assert _can_i(kube, release_ns, sa) - baseline == _granted(rendered) - baseline

    # User data: a Cluster created while the release is installed.
    cluster = {"apiVersion": "mta-operator.io/v1alpha1", "kind": "Cluster",
               "metadata": {"name": "keep-me", "namespace": release_ns},
               "spec": {"hostname": "smtp.example.com"}}
    kube.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(cluster))

    _helm(kube, "upgrade", release, str(CHART), "--namespace", release_ns, *set_args({"logLevel": "DEBUG"}))
    upgraded = json.loads(kube.kubectl("get", "deployment", name, "-n", release_ns, "-o", "json").stdout)
    (container,) = upgraded["spec"]["template"]["spec"]["containers"]
    assert "--log-level=DEBUG" in container["args"]
    assert upgraded["metadata"]["generation"] > deployment["metadata"]["generation"]

    out = _helm(kube, "uninstall", release, "--namespace", release_ns, "--wait", "--timeout", "60s")
    assert "kept due to the resource policy" in out.stdout
    assert kube.kubectl("get", "deployment", name, "-n", release_ns, check=False).returncode != 0
    assert kube.kubectl("get", "clusterrole", name, check=False).returncode != 0
    for crd in crd_files():
        kube.kubectl("get", "crd", crd)
    kube.kubectl("get", "clusters.mta-operator.io", "keep-me", "-n", release_ns)


def test_namespaced_mode_cannot_read_secrets_elsewhere(kube: Any, release_ns: str, other_ns: str) -> None:
    release = f"mta-{uuid.uuid4().hex[:6]}"
    watched = f"{release_ns}"
    _install(kube, release, release_ns, {"watchNamespaces": [watched], "crds": {"install": False}})
    try:
        sa = f"system:serviceaccount:{release_ns}:{release}-mta-operator"
        allowed = kube.kubectl("auth", "can-i", "get", "secrets", "-n", watched, f"--as={sa}")
        assert allowed.stdout.strip() == "yes"
        for namespace in (other_ns, "default", "kube-system"):
            denied = kube.kubectl("auth", "can-i", "get", "secrets", "-n", namespace, f"--as={sa}",
                                  check=False)
            assert denied.stdout.strip() == "no"
        forbidden = kube.kubectl("get", "secrets", "-n", other_ns, f"--as={sa}", check=False)
        assert "Forbidden" in forbidden.stderr
        cluster_wide = kube.kubectl("auth", "can-i", "list", "secrets", "--all-namespaces", f"--as={sa}",
                                    check=False)
        assert cluster_wide.stdout.strip() == "no"
        rendered = render({"watchNamespaces": [watched], "crds": {"install": False}}, release, release_ns)
        baseline = _can_i(kube, other_ns, f"system:serviceaccount:{release_ns}:default")
        assert _can_i(kube, watched, sa) - baseline == _granted(rendered) - baseline
        cluster_only = _granted(by_kind(rendered, "ClusterRole"))
        assert _can_i(kube, other_ns, sa) - baseline == cluster_only - baseline
    finally:
        _helm(kube, "uninstall", release, "--namespace", release_ns, check=False)

