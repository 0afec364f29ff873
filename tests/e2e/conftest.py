"""The whole chain on the test bed, once per module: CRDs, the operator as a process, the examples applied
(adapted to the test bed by ``e2ekit.examples_for_testbed``), MTA pods run by the test bed's pod runner,
and a real receiving SMTP server behind STARTTLS as the Cluster's smarthost."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import demo
import dns.resolver
import pytest
import trustme
from e2ekit import (
    CLUSTER,
    CRDS,
    FIGURES,
    OperatorProcess,
    client_tls,
    decoded,
    examples_for_testbed,
    figure,
    lookup,
    resolver,
)
from mta_operator import naming
from mta_operator.api import KINDS
from support.receiver_thread import ThreadedReceiver
from support.waiting import wait_until
from testbed import images, podrunner, storage

if TYPE_CHECKING:
    from conftest import ReachableCluster

FQDN = "svc.cluster.local"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("end-to-end figures")
        for name, value in FIGURES:
            terminalreporter.write_line(f"{name}: {value}")


@dataclass
class Chain:
    kube: ReachableCluster
    namespace: str
    receiver: ThreadedReceiver
    dns: dns.resolver.Resolver
    operator: OperatorProcess

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
                ) -> subprocess.CompletedProcess[str]:
        return self.kube.kubectl("-n", self.namespace, *args, stdin=stdin, check=check, timeout=timeout)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *filter(None, [kind, name]), "-o", "json").stdout)

    def list(self, kind: str) -> list[dict[str, Any]]:
        return json.loads(self.kubectl("get", kind, "-o", "json").stdout)["items"]

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "-f", "-",
                     stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))

    def secret(self, name: str) -> dict[str, str]:
        return decoded(self.get("secret", name))

    def connection(self, credential: str) -> dict[str, str]:
        """The app's view: the connection Secret the credential's status names."""
        name = wait_until(lambda: self.get("smtpcredential", credential).get("status", {})
                          .get("connectionSecretName"), what=f"{credential}'s connection Secret")
        return wait_until(lambda: self.secret(name), what=f"Secret {name}")

    @property
    def tls(self) -> ssl.SSLContext:
        return client_tls(self.secret(naming.tls(CLUSTER))["ca.crt"])

    @property
    def headless(self) -> str:
        return f"{naming.headless(CLUSTER)}.{self.namespace}.{FQDN}"

    def addresses(self) -> list[str]:
        """The MTAs cluster DNS hands out for the headless Service's name (Ready pods only)."""
        return lookup(self.dns, self.headless)

    def port(self, public: int) -> int:
        """The port behind a named Service port, from its SRV record (_smtp-587._tcp.NAME)."""
        name = "https" if public == 8443 else f"smtp-{public}"
        [srv] = {r.split()[2] for r in lookup(self.dns, f"_{name}._tcp.{self.headless}", "SRV")}
        return int(srv)

    def ready_pods(self) -> dict[str, str]:
        """Pod name -> IP of the Cluster's Ready pods."""
        pods = json.loads(self.kubectl("get", "pods", "-l", f"mta-operator.io/cluster={CLUSTER}",
                                       "-o", "json").stdout)["items"]
        return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods
                if not p["metadata"].get("deletionTimestamp")
                and any(c["type"] == "Ready" and c["status"] == "True"
                        for c in p["status"].get("conditions") or [])}

    def runs_from_image(self) -> bool:
        """Whether every Ready MTA's relay runs from the loaded image (a runc container), not the checkout."""
        state_dir = Path(self.kube.testbed.dir)  # type: ignore[union-attr]
        return all(images.running(state_dir, self.get("pod", name), "relay") for name in self.ready_pods())

    def pod_dir(self, pod: str) -> Path:
        """Where the test bed's pod runner keeps a pod's volumes and container logs."""
        [path] = (Path(self.kube.testbed.dir) / "pods").glob(f"{self.namespace}_{pod}_*")
        return path

    def spool_dir(self, pod: str) -> Path:
        """An MTA's spool volume as files: its claim's PersistentVolume, where the test bed keeps it."""
        claim = self.get("pvc", f"spool-{pod}")
        pv = self.get("pv", claim["spec"]["volumeName"])
        return storage.volume_dir(Path(self.kube.testbed.dir), pv["spec"]["hostPath"]["path"])

    def config_in_force(self, pod: str) -> bool:
        want = self.get("configmap", naming.settings(CLUSTER))["data"]["relay.yaml"]
        return demo.relay_config_in_force(self.pod_dir(pod), want)

    def scale(self, mtas: int) -> None:
        self.kubectl("scale", f"mtacluster/{CLUSTER}", f"--replicas={mtas}")
        self.settle(mtas)

    def settle(self, mtas: int) -> None:
        """Until the StatefulSet runs ``mtas`` replicas and cluster DNS answers with exactly them."""
        workload = f"statefulset/{naming.mta(CLUSTER)}"
        wait_until(lambda: self.get(workload, "").get("spec", {}).get("replicas") == mtas,
                   what=f"the operator sets {mtas} replicas")
        self.kubectl("rollout", "status", workload, "--timeout=150s", timeout=160)
        wait_until(lambda: len(pods := self.ready_pods()) == mtas
                   and sorted(self.addresses()) == sorted(pods.values()), timeout=60, interval=0.5,
                   what=f"{mtas} Ready MTAs, and only they, behind {self.headless}")


def _receiver_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def chain(kube: ReachableCluster, pod_network: str, relay_image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    if kube.testbed is None:
        pytest.skip("needs the test bed's pod runner and cluster DNS, not an existing cluster")
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *[f"crd/{kind.crd.name}" for kind in KINDS])
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", namespace)
    # The smarthost's private CA, as an image would carry it (see the pod runner's TRUST_DIR).
    ca = trustme.CA()
    trust = Path(kube.testbed.dir) / podrunner.TRUST_DIR / f"{namespace}.pem"
    trust.parent.mkdir(exist_ok=True)
    trust.write_bytes(ca.cert_pem.bytes())
    log_dir = tmp_path_factory.mktemp("e2e")
    with ThreadedReceiver(tls=_receiver_tls(ca), require_tls=True) as rx:
        operator = OperatorProcess(kube.kubeconfig, namespace, log_dir / "operator.log", relay_image).start()
        chain = Chain(kube, namespace, rx, resolver(kube.testbed.ports["dns"]), operator)
        try:
            _bring_up(chain, rx.port, log_dir / "operator.log")
            yield chain
        finally:
            operator.stop()
            kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
            trust.unlink(missing_ok=True)


def _bring_up(chain: Chain, smarthost_port: int, operator_log: Path) -> None:
    """Apply the examples and wait for the MTA; a failure carries the operator's last log lines."""
    try:
        chain.apply(*examples_for_testbed(chain.namespace, smarthost_port))
        chain.kubectl("wait", "--for=condition=Ready", "--timeout=120s", f"mtacluster/{CLUSTER}",
                      timeout=130)
        wait_until(lambda: len(chain.addresses()) == 1, timeout=60, what="the MTA in cluster DNS")
        assert chain.runs_from_image(), "the MTA runs from the checkout, not from the loaded image"
        # A domain is in the settings only with its DKIM key, and the watcher carries both within a second.
        started = time.monotonic()
        wait_until(lambda: all(chain.config_in_force(pod) for pod in chain.ready_pods())
                   and "dkim" in chain.get("configmap", naming.settings(CLUSTER))["data"]["relay.yaml"],
                   timeout=30, what="DKIM keys in force in the MTA")
        figure("Cluster Ready to DKIM keys in force in the MTA (s)", round(time.monotonic() - started, 1))
    except (AssertionError, subprocess.SubprocessError) as error:
        tail = "\n".join(operator_log.read_text(errors="replace").splitlines()[-30:])
        raise AssertionError(f"{error}\n--- operator log (last lines) ---\n{tail}") from error
