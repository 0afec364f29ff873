"""Accepted mail survives every pod lifecycle event, on the test bed with real relay processes, real
volumes and a real receiving server.

Each scenario: the smarthost is down while at least 100 messages are accepted (every one 250), the
disruption happens, then the smarthost comes back; every accepted message must arrive, none lost, and
duplicates are counted (none is expected: no delivery is in flight while the smarthost is down). The
figures (time, accepted, delivered, duplicated, lost) are printed in the terminal summary.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import legacy
import pytest
import trustme
from conftest import Chain, _receiver_tls
from durability import (
    QUEUE,
    SENDER,
    Smarthost,
    any_ip_tls,
    deliver_all,
    kill_relay,
    metric,
    pod_uids,
    send_batch,
    tokens_of,
    wait_ready,
)
from e2ekit import (
    CLUSTER,
    CRDS,
    OperatorProcess,
    client_tls,
    examples_for_testbed,
    figure,
    message,
    resolver,
    submit,
    submit_many,
)
from mta_operator import naming
from mta_operator.api import KINDS, Cluster, SmtpCredential
from mta_relay.spool import slot_files
from support.ports import free_port
from support.waiting import wait_until
from testbed import nodes, podrunner

if TYPE_CHECKING:
    from conftest import ReachableCluster

pytestmark = pytest.mark.testbed
MTAS = 3
BATCH = 120
# Retries every 1-2 s once the smarthost is back: the scenarios wait seconds, not the default minutes.
@pytest.fixture(scope="module")
def durable(kube: ReachableCluster, pod_network: str, relay_image: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chain, Smarthost]]:
    if kube.testbed is None:
        pytest.skip("needs the test bed's pod runner, volumes and cluster DNS, not an existing cluster")
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *[f"crd/{kind.crd.name}" for kind in KINDS])
    namespace = f"durable-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", namespace)
    ca = trustme.CA()
    trust = Path(kube.testbed.dir) / podrunner.TRUST_DIR / f"{namespace}.pem"
    trust.parent.mkdir(exist_ok=True)
    trust.write_bytes(ca.cert_pem.bytes())
    log = tmp_path_factory.mktemp("durable") / "operator.log"
    smarthost = Smarthost(free_port(), _receiver_tls(ca), ca.cert_pem.bytes())
    operator = OperatorProcess(kube.kubeconfig, namespace, log, relay_image).start()
    chain = Chain(kube, namespace, None, resolver(kube.testbed.ports["dns"]), operator)  # type: ignore[arg-type]
    try:
        docs = examples_for_testbed(namespace, smarthost.port)
        for doc in docs:
            if doc["kind"] == "Cluster":
                doc["spec"]["mtas"] = MTAS
                doc["spec"]["rateLimit"] = {"messages": 100, "period": "Second"}
                doc["spec"]["queue"].update(QUEUE)
        chain.apply(*docs)
        try:
            chain.kubectl("wait", "--for=condition=Ready", "--timeout=180s", f"mtacluster/{CLUSTER}",
                          timeout=190)
            wait_ready(chain, MTAS)
            assert chain.runs_from_image(), "the MTAs run from the checkout, not from the loaded image"
        except (AssertionError, subprocess.SubprocessError) as error:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise AssertionError(f"{error}\n--- operator log ---\n{tail}") from error
        yield chain, smarthost
    finally:
        smarthost.down()
        operator.stop()
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        trust.unlink(missing_ok=True)


@pytest.fixture
def down(durable: tuple[Chain, Smarthost]) -> Iterator[tuple[Chain, Smarthost]]:
    """Each scenario starts with the smarthost down and all MTAs Ready, and leaves it down."""
    chain, smarthost = durable
    smarthost.down()
    wait_ready(chain, chain_mtas(chain))
    yield chain, smarthost
    smarthost.down()


def chain_mtas(chain: Chain) -> int:
    return int(chain.get("mtacluster", CLUSTER)["spec"]["mtas"])


def _cluster(chain: Chain) -> dict[str, Any]:
    return chain.get("mtacluster", CLUSTER)


def _condition(chain: Chain, kind: str) -> dict[str, Any]:
    return next((c for c in _cluster(chain).get("status", {}).get("conditions", []) if c["type"] == kind), {})


def _claims(chain: Chain) -> dict[str, str]:
    return {c["metadata"]["name"]: c["spec"].get("volumeName", "") for c in chain.list("pvc")}


def test_spool_is_a_volume_per_mta(durable: tuple[Chain, Smarthost]) -> None:
    chain, _ = durable
    assert set(_claims(chain)) == {naming.spool_claim(CLUSTER, i) for i in range(MTAS)}
    assert _condition(chain, "SpoolPersistent")["status"] == "True"


def test_kill_9_of_a_relay_in_a_pod(down: tuple[Chain, Smarthost]) -> None:
    chain, smarthost = down
    started = time.monotonic()
    tokens = send_batch(chain, BATCH)
    uids = pod_uids(chain)
    victim = naming.pod(CLUSTER, 0)
    kill_relay(chain.ready_pods()[victim])
    wait_until(lambda: victim not in chain.ready_pods(), 30, interval=0.2, what="the killed MTA not Ready")
    wait_ready(chain, MTAS)
    assert pod_uids(chain) == uids  # the same pod, its container restarted
    tally = deliver_all(smarthost, tokens, "kill -9 of one relay", started)
    assert (tally.lost, tally.duplicated) == (0, 0)


def test_delete_each_pod_in_turn(down: tuple[Chain, Smarthost]) -> None:
    chain, smarthost = down
    started = time.monotonic()
    tokens = send_batch(chain, BATCH)
    claims = _claims(chain)
    for i in range(MTAS):
        pod = naming.pod(CLUSTER, i)
        old = pod_uids(chain)[pod]
        chain.kubectl("delete", "pod", pod, "--wait=false")
        wait_until(lambda pod=pod, old=old: pod_uids(chain).get(pod) not in (None, old), 60, interval=0.5,
                   what=f"{pod} replaced")
        wait_ready(chain, MTAS)
    assert _claims(chain) == claims  # every replacement got its own volume back
    tally = deliver_all(smarthost, tokens, "kubectl delete pod, each MTA in turn", started)
    assert (tally.lost, tally.duplicated) == (0, 0)


def test_rolling_update(down: tuple[Chain, Smarthost]) -> None:
    chain, smarthost = down
    started = time.monotonic()
    tokens = send_batch(chain, BATCH)
    uids = pod_uids(chain)
    chain.kubectl("patch", "mtacluster", CLUSTER, "--type=merge", "-p", json.dumps(
        {"spec": {"pod": {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                        "limits": {"memory": f"{600 + int(time.time()) % 50}Mi"}}}}}))
    workload = f"statefulset/{naming.mta(CLUSTER)}"
    wait_until(lambda: chain.get(workload, "")["status"].get("updateRevision")
               != chain.get(workload, "")["status"].get("currentRevision"), 30, what="a rollout")
    chain.kubectl("rollout", "status", workload, "--timeout=240s", timeout=250)
    wait_ready(chain, MTAS)
    assert not set(uids.values()) & set(pod_uids(chain).values())  # every pod was replaced
    tally = deliver_all(smarthost, tokens, "rolling update of 3 MTAs", started)
    assert (tally.lost, tally.duplicated) == (0, 0)


def test_node_drain(down: tuple[Chain, Smarthost]) -> None:
    chain, smarthost = down
    started = time.monotonic()
    tokens = send_batch(chain, BATCH)
    pods = json.loads(chain.kubectl("get", "pods", "-l", "mta-operator.io/cluster=main", "-o", "json").stdout)
    node_of = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods["items"]}
    node = max(set(node_of.values()), key=list(node_of.values()).count)  # the node with most MTAs
    try:
        nodes.drain(chain.kube, node, timeout=240)
        wait_ready(chain, MTAS)
        moved = json.loads(chain.kubectl("get", "pods", "-l", "mta-operator.io/cluster=main", "-o",
                                         "json").stdout)
        assert node not in {p["spec"]["nodeName"] for p in moved["items"]}
    finally:
        nodes.uncordon(chain.kube, node)
    tally = deliver_all(smarthost, tokens, f"node drain ({list(node_of.values()).count(node)} MTAs moved)",
                        started)
    assert (tally.lost, tally.duplicated) == (0, 0)


def test_scale_and_settings_changes_restart_no_pod(durable: tuple[Chain, Smarthost]) -> None:
    """kubectl scale adds an MTA without touching the others; a new domain (with its DKIM key) and a
    rate limit change reach every MTA within seconds, in place."""
    chain, _ = durable
    wait_ready(chain, MTAS)
    uids = pod_uids(chain)
    chain.kubectl("scale", f"mtacluster/{CLUSTER}", f"--replicas={MTAS + 1}")
    wait_ready(chain, MTAS + 1)
    after = pod_uids(chain)
    assert {p: after[p] for p in uids} == uids
    chain.apply({"apiVersion": "mta-operator.io/v1alpha1", "kind": "SendingDomain",
                 "metadata": {"name": "later", "namespace": chain.namespace},
                 "spec": {"clusterRef": {"name": CLUSTER}, "domain": "later.example.net"}})
    reached = _reach_all(chain, lambda text: "dkim/later.example.net.pem" in text)  # the domain, signing
    figure("new SendingDomain with DKIM key: settings to every MTA (s)", reached)
    chain.kubectl("patch", "mtacluster", CLUSTER, "--type=merge", "-p",
                  json.dumps({"spec": {"rateLimit": {"messages": 99, "period": "Second"}}}))
    reached = _reach_all(chain, lambda text: "messages: 99" in text)
    figure("rate limit change: settings to every MTA (s)", reached)
    assert pod_uids(chain) == after
    chain.kubectl("scale", f"mtacluster/{CLUSTER}", f"--replicas={MTAS}")
    wait_until(lambda: len(pod_uids(chain)) == MTAS, 120, interval=0.5, what=f"back to {MTAS} MTAs")
    assert pod_uids(chain) == uids


def _reach_all(chain: Chain, wanted: Any, within: float = 5.0) -> float:
    """Seconds until every MTA's relay has settings matching ``wanted`` in force, from when they first
    appear in the ConfigMap: the watcher carries them, no pod restarts."""
    def current() -> str | None:
        text = chain.get("configmap", naming.settings(CLUSTER))["data"]["relay.yaml"]
        return text if wanted(text) else None

    settings = wait_until(current, 30, what="the settings")
    started = time.monotonic()
    wait_until(lambda: all(chain.config_in_force(pod) for pod in chain.ready_pods()), within, interval=0.1,
               what="the settings in force in every MTA")
    assert settings
    return round(time.monotonic() - started, 2)


def test_scale_down_hands_the_queue_over(down: tuple[Chain, Smarthost]) -> None:
    chain, smarthost = down
    started = time.monotonic()
    tokens = send_batch(chain, BATCH + 30)
    chain.kubectl("scale", f"mtacluster/{CLUSTER}", "--replicas=1")
    wait_until(lambda: _condition(chain, "QueueHandedOff").get("reason") == "HandingOff", 30, interval=0.2,
               what="the hand-off under way")
    wait_until(lambda: chain.get(f"statefulset/{naming.mta(CLUSTER)}", "")["spec"]["replicas"] == 1, 240,
               interval=0.5, what="the StatefulSet shrunk to 1")
    figure("scale 3 -> 1 with the queue handed over (s)", round(time.monotonic() - started, 1))
    cluster = _cluster(chain)
    assert cluster["status"]["handoff"]["leaving"] == []
    assert _condition(chain, "QueueHandedOff")["reason"] == "NothingLeft"
    wait_until(lambda: set(_claims(chain)) == {naming.spool_claim(CLUSTER, 0)}, 60,
               what="the emptied volumes deleted")
    tally = deliver_all(smarthost, tokens, "scale 3 -> 1", started)
    assert (tally.lost, tally.duplicated) == (0, 0)
    chain.kubectl("scale", f"mtacluster/{CLUSTER}", f"--replicas={MTAS}")
    wait_ready(chain, MTAS)


def test_scale_down_under_a_rate_limit(durable: tuple[Chain, Smarthost]) -> None:
    """The smarthost is up, the rate limit holds most of the batch in the queues; scaling 3 -> 2 hands
    what the leaving MTA held to the others, and no MTA ever delivers faster than its limit."""
    chain, smarthost = durable
    wait_ready(chain, MTAS)
    limit = 5
    chain.kubectl("patch", "mtacluster", CLUSTER, "--type=merge", "-p",
                  json.dumps({"spec": {"rateLimit": {"messages": limit, "period": "Second"}}}))
    _reach_all(chain, lambda text: f"messages: {limit}\n" in text)
    smarthost.up()
    started = time.monotonic()
    ips = dict(chain.ready_pods())
    tokens = send_batch(chain, 240)
    samples: dict[str, list[tuple[float, float, float]]] = {pod: [] for pod in ips}
    tls = any_ip_tls()

    def sample() -> None:
        for pod, ip in ips.items():
            before = time.monotonic()
            value = metric(ip, "mta_delivery_results_total", tls)
            if value is not None:
                samples[pod].append((before, time.monotonic(), value))

    sample()
    chain.kubectl("scale", f"mtacluster/{CLUSTER}", f"--replicas={MTAS - 1}")
    deadline = time.monotonic() + 240
    while set(tokens) - set(_arrived(smarthost)) and time.monotonic() < deadline:
        sample()
        time.sleep(0.05)
    try:
        tally = deliver_all(smarthost, tokens, "rate limit 5/s per MTA, 240 messages, scale 3 -> 2", started)
        assert (tally.lost, tally.duplicated) == (0, 0)
    finally:
        smarthost.down()
    # Deliveries completed between two samples (the second ending at most 0.5 s after the first began)
    # were started within less than a second (a local transaction takes milliseconds): at most the limit.
    worst = 0.0
    for points in samples.values():
        for i, (start_a, _, count_a) in enumerate(points):
            for _, end_b, count_b in points[i + 1:]:
                if end_b - start_a > 0.5:
                    break
                worst = max(worst, count_b - count_a)
    figure("most deliveries one MTA completed within 0.5 s (limit 5/s)", worst)
    assert worst <= limit
    assert sum(1 for points in samples.values() if points and points[-1][2] > points[0][2]) >= 2
    chain.kubectl("patch", "mtacluster", CLUSTER, "--type=merge", "-p",
                  json.dumps({"spec": {"rateLimit": {"messages": 100, "period": "Second"}}}))
    chain.kubectl("scale", f"mtacluster/{CLUSTER}", f"--replicas={MTAS}")
    wait_ready(chain, MTAS)


def _arrived(smarthost: Smarthost) -> list[str]:
    return list(tokens_of(smarthost.transactions()))


def test_node_crash(down: tuple[Chain, Smarthost]) -> None:
    """A node dies with MTAs on it: their processes end at once, the node goes NotReady, it is marked out
    of service (non-graceful node shutdown), the pods come back elsewhere with their volumes."""
    chain, smarthost = down
    started = time.monotonic()
    tokens = send_batch(chain, BATCH)
    pods = json.loads(chain.kubectl("get", "pods", "-l", "mta-operator.io/cluster=main", "-o", "json").stdout)
    node_of = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods["items"]}
    node = max(set(node_of.values()), key=list(node_of.values()).count)
    nodes.crash(chain.kube, node)
    try:
        wait_until(lambda: not nodes.ready(nodes.node(chain.kube, node)), nodes.NOT_READY_TIMEOUT,
                   interval=1, what=f"{node} NotReady")
        nodes.shut_down(chain.kube, node)
        wait_ready(chain, MTAS, timeout=240)
    finally:
        nodes.recover(chain.kube, node)
    tally = deliver_all(smarthost, tokens, "node crash (NotReady, out-of-service)", started)
    assert (tally.lost, tally.duplicated) == (0, 0)


def test_upgrade_from_a_deployment_with_queued_mail(down: tuple[Chain, Smarthost], kube: ReachableCluster,
                                                    relay_image: str, tmp_path: Path) -> None:
    """A Cluster laid out by the previous release (a Deployment, emptyDir spools) with mail queued: the
    new operator runs the StatefulSet beside it, takes the old pods out of the Services, and removes the
    Deployment only once its pods delivered their queue."""
    _, smarthost = down
    namespace = f"upgrade-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", namespace)
    trust = Path(kube.testbed.dir) / podrunner.TRUST_DIR / f"{namespace}.pem"  # type: ignore[union-attr]
    trust.write_bytes(smarthost.ca_pem)
    operator = OperatorProcess(kube.kubeconfig, namespace, tmp_path / "operator.log", relay_image)
    chain = Chain(kube, namespace, None, resolver(kube.testbed.ports["dns"]), operator)  # type: ignore[arg-type,union-attr]
    try:
        docs = [d for d in examples_for_testbed(namespace, smarthost.port) if d["kind"] == "Cluster"]
        docs[0]["spec"].update(mtas=2, queue={**docs[0]["spec"]["queue"], **QUEUE})
        password = uuid.uuid4().hex + uuid.uuid4().hex
        cred_doc = {"apiVersion": "mta-operator.io/v1alpha1", "kind": "SmtpCredential",
                    "metadata": {"name": "billing", "namespace": namespace},
                    "spec": {"clusterRef": {"name": CLUSTER}, "domains": {"mode": "Specific",
                                                                          "names": ["example.com"]},
                             "passwordSecretRef": {"name": "billing-password", "key": "password"}}}
        chain.apply(*docs, cred_doc, {"apiVersion": "v1", "kind": "Secret",
                                      "metadata": {"name": "billing-password", "namespace": namespace},
                                      "stringData": {"password": password}})
        cluster = Cluster.model_validate(chain.get("mtacluster", CLUSTER))
        cred = SmtpCredential.model_validate(chain.get("smtpcredential", "billing"))
        objs, ca_pem = legacy.objects(cluster, cred, password)
        chain.kubectl("apply", "--server-side", "-f", "-", stdin=legacy.dump(objs))
        old_pods = wait_ready(chain, 2)
        started = time.monotonic()
        tls = client_tls(ca_pem)
        tokens: list[str] = []
        for ip in old_pods.values():
            batch = [message(SENDER, f"rcpt{i}@example.net") for i in range(BATCH // 2)]
            codes = submit_many(ip, 10587, tls, "billing", password,
                                [(SENDER, f"rcpt{i}@example.net", raw) for i, (_, raw) in enumerate(batch)])
            assert codes == [250] * len(batch)
            tokens += [t for t, _ in batch]

        operator.start()
        wait_until(lambda: _condition(chain, "LegacyDeploymentRetired").get("reason") == "DeliveringQueue",
                   120, what="the old Deployment kept while its queue waits")
        chain.kubectl("wait", "--for=condition=Ready", "--timeout=180s", f"mtacluster/{CLUSTER}", timeout=190)
        endpoints = {a for s in chain.list("endpointslices") for e in s.get("endpoints") or []
                     for a in e["addresses"]}
        assert not endpoints & set(old_pods.values())  # the old pods take no new clients
        assert chain.get("deployment", naming.mta(CLUSTER))["spec"]["replicas"] == 2
        tally = deliver_all(smarthost, tokens, "upgrade from a Deployment with queued mail", started)
        assert (tally.lost, tally.duplicated) == (0, 0)
        gone = lambda: chain.kubectl("get", "deployment", naming.mta(CLUSTER), check=False).returncode != 0  # noqa: E731
        wait_until(gone, 60, what="the old Deployment removed once empty")
        assert _condition(chain, "LegacyDeploymentRetired")["status"] == "True"
    finally:
        operator.stop()
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        trust.unlink(missing_ok=True)


def test_unwritable_spool_is_never_answered_250(durable: tuple[Chain, Smarthost]) -> None:
    """An MTA whose volume takes no writes (full, or read-only) answers 452 4.3.1, turns not ready, and
    the Cluster's Ready says which MTA and why; it comes back when the volume does."""
    chain, _ = durable
    wait_ready(chain, MTAS)
    pod = naming.pod(CLUSTER, MTAS - 1)
    slots = chain.spool_dir(pod) / "slots"
    modes = {path: path.stat().st_mode for path in [slots, *slot_files(slots)]}
    ip = chain.ready_pods()[pod]
    creds = chain.connection("billing")
    try:
        for path in modes:  # the pod's processes hold no capability, so root's DAC override is gone too
            path.chmod(0o500 if path == slots else 0o400)
        reply = submit(ip, chain.port(587), chain.tls, username="billing", password=creds["password"],
                       mail_from=SENDER)
        assert (reply.stage, reply.code) == ("data", 452)
        assert reply.text.startswith("4.3.1")
        wait_until(lambda: pod not in chain.ready_pods(), 30, what=f"{pod} not ready")
        ready = wait_until(lambda: (c := _condition(chain, "Ready")).get("reason") == "MtasNotReady"
                           and "spool not writable or full" in c.get("message", "") and c, 30,
                           what="Ready names the MTA and its spool")
        assert pod in ready["message"]
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    wait_ready(chain, MTAS)
    wait_until(lambda: _condition(chain, "Ready").get("status") == "True", 30, what="Ready again")
