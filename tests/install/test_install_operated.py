"""The operator as the chart runs it (its ServiceAccount's token, namespaced mode) reconciles the examples;
then `kubectl mta` reads what it made: status, credentials, DNS records, and sends through STARTTLS + AUTH."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.zone
import pytest
import yaml
from install_kit import by_kind, render
from install_kstatus import compute
from install_operated import Operated, operate
from support.smtp_receiver import SmtpReceiver
from support.tls import make_ca
from support.waiting import wait_until
from test_install_gitops_health import argocd_health
from testbed import images

pytestmark = pytest.mark.testbed

KUBECTL_MTA = str(Path(sys.executable).parent / "kubectl-mta")
CREDENTIALS = ("billing", "newsletter", "helpdesk", "scanner-3rd-floor", "crm")


@pytest.fixture(scope="module")
def operated(kube: Any, relay_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operated]:
    namespace = f"inst-op-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    try:
        release = f"mta-{uuid.uuid4().hex[:6]}"
        yield from operate(kube, namespace, release, tmp_path_factory.mktemp("operated"), relay_image)
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _get(kube: Any, namespace: str, resource: str, name: str) -> dict[str, Any]:
    out = kube.kubectl("get", resource, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def _ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and \
        obj["status"].get("observedGeneration") == obj["metadata"]["generation"]


@pytest.fixture(scope="module")
def converged(kube: Any, operated: Operated) -> Operated:
    ns = operated.namespace
    try:
        wait_until(lambda: _ready(_get(kube, ns, "clusters.mta-operator.io", "main")), 90, "Cluster Ready")
        for name in ("example-com", "notify-example-org"):
            wait_until(lambda n=name: _ready(_get(kube, ns, "sendingdomains.mta-operator.io", n)), 60, name)
        for name in CREDENTIALS:
            wait_until(lambda n=name: _ready(_get(kube, ns, "smtpcredentials.mta-operator.io", n)), 60, name)
        pods = json.loads(kube.kubectl("get", "pods", "-n", ns, "-l", "mta-operator.io/cluster=main",
                                       "-o", "json").stdout)["items"]
        assert pods, "no MTA pods"
        assert all(images.running(Path(kube.testbed.dir), pod, "relay") for pod in pods), \
            "the MTAs run from the checkout, not from the loaded image"
    except AssertionError:
        print(operated.operator_log.read_text(errors="replace")[-6000:])
        raise
    return operated


def test_operator_as_the_charts_service_account_reconciles_examples(kube: Any, converged: Operated) -> None:
    ns = converged.namespace
    mtas = lambda: _get(kube, ns, "clusters.mta-operator.io", "main")["status"]["mtas"]["summary"]  # noqa: E731
    wait_until(lambda: mtas() == "3/3", 60, "3/3 MTAs")  # a rollout briefly counts old and new pods
    for kind, name in [("statefulset", "main-mta"), ("service", "main-mta"), ("secret", "billing-smtp"),
                       ("role", "main-mta"), ("rolebinding", "main-mta")]:
        assert _get(kube, ns, kind, name), f"{kind} {name} missing"
    log = converged.operator_log.read_text(errors="replace")
    denied = [line for line in log.splitlines() if '" 403 ' in line or "forbidden" in line.lower()]
    assert denied == []


def _kubectl_mta(op: Operated, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    async def run() -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL_MTA, "--kubeconfig", str(op.admin_kubeconfig), *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()
    return asyncio.run(run())


def _secret(kube: Any, namespace: str, name: str) -> dict[str, str]:
    data = _get(kube, namespace, "secret", name)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_kubectl_mta_status_shows_clusters_domains_credentials(converged: Operated) -> None:
    code, out, _ = _kubectl_mta(converged, "-n", converged.namespace, "status")
    assert code == 0
    clusters, domains, credentials = out.split("\n\n")
    assert clusters.splitlines()[2].split()[:3] == ["main", "smtp.example.com", "3/3"]
    assert {line.split()[1] for line in domains.splitlines()[2:]} == {"example.com", "notify.example.org"}
    rows = {line.split()[0]: line for line in credentials.splitlines()[2:]}
    assert set(rows) == set(CREDENTIALS)
    assert "newsletter@example.com" in rows["newsletter"]
    assert "True" in rows["billing"]


def test_kubectl_mta_uses_the_contexts_namespace(converged: Operated, tmp_path: Path) -> None:
    config = yaml.safe_load(converged.admin_kubeconfig.read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = converged.namespace
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    op = Operated(converged.namespace, converged.release, path, converged.operator_log)
    code, out, _ = _kubectl_mta(op, "status")
    assert code == 0
    assert "smtp.example.com" in out


def test_kubectl_mta_credential_show_prints_the_password_when_asked(kube: Any, converged: Operated) -> None:
    ns = converged.namespace
    password = _secret(kube, ns, "billing-smtp")["password"]
    code, hidden, _ = _kubectl_mta(converged, "-n", ns, "credential", "show", "billing")
    assert code == 0
    assert password not in hidden  # stdout is a pipe here, not a terminal
    assert "--reveal" in hidden
    code, shown, _ = _kubectl_mta(converged, "-n", ns, "credential", "show", "billing", "--reveal")
    assert f"Password:       {password}" in shown.splitlines()
    assert "Username:       billing" in shown.splitlines()
    assert "Host:           smtp.example.com" in shown.splitlines()
    own = _secret(kube, ns, "crm-smtp-password")["password"]
    _, crm, _ = _kubectl_mta(converged, "-n", ns, "credential", "show", "crm", "--reveal")
    assert f"Password:       {own}" in crm.splitlines()
    _, scanner, _ = _kubectl_mta(converged, "-n", ns, "credential", "show", "scanner-3rd-floor", "--reveal")
    assert "SourceIP" in scanner
    code, _, err = _kubectl_mta(converged, "-n", ns, "credential", "show", "nobody")
    assert code == 1
    assert "nobody" in err


def test_kubectl_mta_dns_prints_a_zone_that_parses(kube: Any, converged: Operated) -> None:
    ns = converged.namespace
    code, out, _ = _kubectl_mta(converged, "-n", ns, "dns", "example.com")
    assert code == 0
    zone = dns.zone.from_text(out, origin="example.com.", relativize=False, check_origin=False)
    published = {(str(name).rstrip("."), b"".join(rdata.strings).decode())
                 for name, rdataset in zone.iterate_rdatasets("TXT") for rdata in rdataset}
    records = _get(kube, ns, "sendingdomains.mta-operator.io", "example-com")["status"]["dnsRecords"]
    assert published == {(r["name"], r["value"]) for r in records}
    assert any(r["purpose"] == "DKIM" and len(r["value"]) > 255 for r in records)  # split into strings


async def test_kubectl_mta_send_authenticates_over_starttls(kube: Any, converged: Operated, tmp_path: Path,
                                                             ) -> None:
    """A real SMTP server with the cluster's operator-issued certificate: the plugin trusts the cluster's
    CA by default and checks the certificate against the cluster's hostname."""
    ns = converged.namespace
    password = _secret(kube, ns, "billing-smtp")["password"]
    serving = _secret(kube, ns, "main-mta-tls")
    (tmp_path / "tls.crt").write_text(serving["tls.crt"])
    (tmp_path / "tls.key").write_text(serving["tls.key"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    async with SmtpReceiver(tls=context, require_tls=True, users={"billing": password}) as receiver:
        args = ["-n", ns, "send", "--credential", "billing", "--to", "ops@example.net",
                "--server", f"127.0.0.1:{receiver.port}"]
        code, out, err = await asyncio.to_thread(_kubectl_mta, converged, *args)
        assert code == 0, err
        (transaction,) = await receiver.wait_for(1)
    assert (transaction.mail_from, transaction.rcpt_tos) == ("mta-test@example.com", ("ops@example.net",))
    assert transaction.tls
    assert transaction.login == "billing"
    assert "sent from mta-test@example.com to ops@example.net" in out

    async with SmtpReceiver(tls=context, require_tls=True, users={"billing": "another"}) as refusing:
        args[-1] = f"127.0.0.1:{refusing.port}"
        code, out, err = await asyncio.to_thread(_kubectl_mta, converged, *args)
    assert code == 1
    assert "535" in err
    assert password not in err + out


async def test_kubectl_mta_send_refuses_a_certificate_from_another_ca(converged: Operated) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    make_ca().issue_cert("smtp.example.com").configure_cert(context)
    async with SmtpReceiver(tls=context, require_tls=True, users={"billing": "x"}) as impostor:
        args = ["-n", converged.namespace, "send", "--credential", "billing", "--to", "ops@example.net",
                "--server", f"127.0.0.1:{impostor.port}"]
        code, _, err = await asyncio.to_thread(_kubectl_mta, converged, *args)
        assert impostor.transactions == []
    assert code == 1
    assert "CERTIFICATE_VERIFY_FAILED" in err


def test_health_checks_read_the_operators_live_states(kube: Any, converged: Operated) -> None:
    """Argo CD's Lua and kstatus on what the operator really wrote: Healthy/Current when Ready, Degraded for a
    username conflict (terminal), Progressing/InProgress while the Cluster it names does not exist."""
    ns = converged.namespace
    ready = [("clusters", "main"), ("sendingdomains", "example-com"), ("smtpcredentials", "crm")]
    for resource, name in ready:
        live = _get(kube, ns, f"{resource}.mta-operator.io", name)
        assert (argocd_health(live)["status"], compute(live)) == ("Healthy", "Current")
    claims = [{"apiVersion": "mta-operator.io/v1alpha1", "kind": "SmtpCredential",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"clusterRef": {"name": cluster}, "username": "billing",
                        "domains": {"mode": "Specific", "names": ["example.com"]}}}
              for name, cluster in [("billing-again", "main"), ("orphan", "nowhere")]]
    kube.kubectl("apply", "--server-side", "-f", "-", stdin="\n---\n".join(json.dumps(c) for c in claims))

    def settled(name: str) -> dict[str, Any]:
        live = _get(kube, ns, "smtpcredentials.mta-operator.io", name)
        ready = [c for c in (live.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
        return live if ready and ready[0]["status"] == "False" else {}

    conflict = wait_until(lambda: settled("billing-again"), 30, "UsernameConflict")
    assert (argocd_health(conflict)["status"], compute(conflict)) == ("Degraded", "InProgress")
    assert argocd_health(conflict)["message"].startswith("UsernameConflict: ")
    orphan = wait_until(lambda: settled("orphan"), 30, "ClusterNotFound")
    assert (argocd_health(orphan)["status"], compute(orphan)) == ("Progressing", "InProgress")


async def test_helm_test_pod_command_sends_with_the_connection_secret(kube: Any, converged: Operated,
                                                                    tmp_path: Path) -> None:
    """The chart's test pod, run here: its env resolved from the real connection Secret the way the kubelet
    would, only the in-cluster address swapped for a loopback server with the cluster's certificate."""
    ns = converged.namespace
    values = {"test": {"namespace": ns, "credential": "billing", "from": "billing@example.com",
                       "to": "ops@example.net", "caSecret": "main-mta-tls"}}
    (pod,) = by_kind(render(values, converged.release, ns), "Pod")
    (container,) = pod["spec"]["containers"]
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = _secret(kube, ns, ref["name"])[ref["key"]]
    serving = _secret(kube, ns, "main-mta-tls")
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / key).write_text(serving[key])
    env["MTA_CA_FILE"] = str(tmp_path / "ca.crt")  # where the pod mounts the Secret's ca.crt
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    async with SmtpReceiver(tls=context, require_tls=True, users={"billing": env["MTA_PASSWORD"]}) as rx:
        assert env["MTA_HOST"] == f"main-mta.{ns}.svc"
        env.update(MTA_HOST="127.0.0.1", MTA_PORT=str(rx.port))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *container["command"][1:], env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        (transaction,) = await rx.wait_for(1)
    assert (transaction.mail_from, transaction.login) == ("billing@example.com", "billing")
    assert env["MTA_PASSWORD"] not in out.decode() + err.decode()
