"""Start and stop the test bed: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
with fake nodes, every control-plane listener on 127.0.0.1.

Pod IPs come from POD_CIDR (198.18.0.0/16, the RFC 2544 range reserved for test networks), not from
127.0.0.0/8: the API server refuses loopback addresses in EndpointSlices (ValidateEndpointIP), so
Services over loopback pods would never get endpoints. Under ``python -m testbed run`` (see netns.py)
the test bed lives in a private network namespace where POD_CIDR is a local route on ``lo``, so real
processes can listen at pod IPs exactly as they would on 127.0.0.0/8. Persistent volumes: see
storage.py; node drain and crash: see nodes.py."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import pki, podrunner, services, stages, storage
from .versions import binary, cache_root

POD_CIDR = "198.18.0.0/16"
NODE_COUNT = 2
# ClusterIPs: no kube-proxy here; on the test host the pod runner's Service proxy serves them (services.py).
SERVICE_CIDR = services.SERVICE_CIDR
STATE_FILE = "state.json"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "coredns")
CLUSTER_DOMAIN = podrunner.CLUSTER_DOMAIN
START_TIMEOUT = 60.0


class StartError(RuntimeError):
    pass


@dataclass
class Testbed:
    dir: Path
    server: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    def log(self, component: str) -> Path:
        return self.dir / "logs" / f"{component}.log"

    def save(self) -> None:
        state = {"server": self.server, "pids": self.pids, "ports": self.ports}
        (self.dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> Testbed:
        state = json.loads((directory / STATE_FILE).read_text())
        return cls(directory, state["server"], state["pids"], state["ports"])

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, check=check, timeout=timeout,
        )


def default_state_dir() -> Path:
    return Path(os.environ.get("MTA_TESTBED_STATE", cache_root() / "run")).expanduser()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_port_udp_tcp() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (DNS listens on both)."""
    while True:
        port = _free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a test session that dies must not leave a control plane behind.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _kubeconfig(path: Path, server: str, ca: Path, client: pki.Pair) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "testbed",
        "clusters": [{"name": "testbed",
                      "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "testbed", "user": {"client-certificate": str(client.cert),
                                               "client-key": str(client.key)}}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": "testbed"}}],
    }, indent=2))
    path.chmod(0o600)


def _wait(what: str, check: Callable[[], bool], tb: Testbed, component: str,
          timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    pid = tb.pids.get(component)
    while time.monotonic() < deadline:
        if pid is not None and _exited(pid):
            raise StartError(f"{component} exited during start; log: {tb.log(component)}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise StartError(f"{component}: {what} not reached in {timeout:.0f}s; log: {tb.log(component)}")


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (started by another process): probe it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return done == pid


def _https_ok(url: str, ctx: ssl.SSLContext) -> bool:
    with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:  # noqa: S310 (https only)
        return resp.status == 200


def _node_manifest(index: int) -> dict:
    name = f"kwok-node-{index}"
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok",
                       "topology.kubernetes.io/zone": f"zone-{index}"},
        },
        "spec": {"podCIDR": f"198.18.{index}.0/24"},
        "status": {"allocatable": resources, "capacity": resources},
    }


def _kube_dns_service() -> dict:
    """kube-system/kube-dns at CLUSTER_DNS, as in a real cluster: it holds that ClusterIP, so no other
    Service is given it. Without a selector it has no endpoints (the Service proxy leaves it alone);
    CoreDNS itself listens there on the test host (_start_coredns)."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": services.CLUSTER_DNS,
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}


def _bindable(address: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def up(state_dir: Path | None = None, *, die_with_parent: bool = False) -> Testbed:
    """Start a test bed in state_dir (wiped first). Raises StartError and stops everything on failure."""
    directory = (state_dir or default_state_dir()).resolve()
    if (directory / STATE_FILE).exists():
        down(directory)
    for sub in ("pki", "logs", "etcd", storage.VOLUMES):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    for stale in [*(directory / "etcd").glob("*"), *storage.volumes_dir(directory).glob("*")]:
        subprocess.run(["rm", "-rf", str(stale)], check=True)
    for name in COMPONENTS:
        if not binary(name).exists():
            raise StartError(f"{name} is not built ({binary(name)}); run `python -m testbed build`")

    tb = Testbed(directory)
    podrunner.record_created_mountpoints(directory, storage.prepare(directory))
    try:
        _start_all(tb, die_with_parent)
    except BaseException:
        down(directory)
        raise
    return tb


def _spawn(tb: Testbed, component: str, args: list[str], die_with_parent: bool,
           argv0: list[str] | None = None, env: dict[str, str] | None = None) -> None:
    log = tb.log(component).open("ab")
    proc = subprocess.Popen(
        [*(argv0 or [str(binary(component))]), *args], stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_die_with_parent if die_with_parent else None, env=env,
    )
    log.close()
    tb.pids[component] = proc.pid
    tb.save()


def _start_all(tb: Testbed, die_with_parent: bool) -> None:
    d, p = tb.dir, tb.dir / "pki"
    ca = pki.CA(p)
    serving = ca.issue("apiserver", "kube-apiserver", server=True,
                       hosts=("127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
                              "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                              "10.96.0.1"))
    sa = pki.service_account_keys(p)
    clients = {
        "admin": ca.issue("admin", "testbed-admin", org="system:masters"),
        "kube-controller-manager": ca.issue("kcm", "system:kube-controller-manager"),
        "kube-scheduler": ca.issue("scheduler", "system:kube-scheduler"),
        "kwok": ca.issue("kwok", "kwok-controller", org="system:masters"),
    }
    tb.ports = {name: _free_port() for name in ("etcd-client", "etcd-peer", "apiserver")}
    tb.server = f"https://127.0.0.1:{tb.ports['apiserver']}"
    for name, pair in clients.items():
        target = tb.kubeconfig if name == "admin" else d / f"{name}.kubeconfig"
        _kubeconfig(target, tb.server, ca.pair.cert, pair)

    etcd_url = f"http://127.0.0.1:{tb.ports['etcd-client']}"
    peer_url = f"http://127.0.0.1:{tb.ports['etcd-peer']}"
    _spawn(tb, "etcd", [
        "--name=testbed", f"--data-dir={d / 'etcd'}", f"--listen-client-urls={etcd_url}",
        f"--advertise-client-urls={etcd_url}", f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}", f"--initial-cluster=testbed={peer_url}",
        "--unsafe-no-fsync", "--log-level=warn", "--listen-metrics-urls=",
    ], die_with_parent)
    _wait("health", lambda: b'"health":"true"' in urllib.request.urlopen(  # noqa: S310
        f"{etcd_url}/health", timeout=2).read(), tb, "etcd")

    _spawn(tb, "kube-apiserver", [
        f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--secure-port={tb.ports['apiserver']}", f"--tls-cert-file={serving.cert}",
        f"--tls-private-key-file={serving.key}", f"--client-ca-file={ca.pair.cert}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={sa.cert}", f"--service-account-signing-key-file={sa.key}",
        "--authorization-mode=RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none", "--allow-privileged=false", "--profiling=false",
        "--v=1",
    ], die_with_parent)
    ctx = ssl.create_default_context(cafile=str(ca.pair.cert))
    ctx.load_cert_chain(str(clients["admin"].cert), str(clients["admin"].key))
    _wait("/readyz", lambda: _https_ok(f"{tb.server}/readyz", ctx), tb, "kube-apiserver")

    kcm_cfg = str(d / "kube-controller-manager.kubeconfig")
    # In storage.host_view, so its hostPath provisioner's volumes land in the state directory.
    _spawn(tb, "kube-controller-manager", [
        f"--kubeconfig={kcm_cfg}", f"--authentication-kubeconfig={kcm_cfg}",
        f"--authorization-kubeconfig={kcm_cfg}", "--bind-address=127.0.0.1", "--secure-port=0",
        "--leader-elect=false", "--use-service-account-credentials=true",
        f"--service-account-private-key-file={sa.key}", f"--root-ca-file={ca.pair.cert}",
        f"--cluster-signing-cert-file={ca.pair.cert}", f"--cluster-signing-key-file={ca.pair.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--enable-hostpath-provisioner", "--v=1",
    ], die_with_parent, argv0=storage.host_view(d, [str(binary("kube-controller-manager"))]))
    sched_cfg = str(d / "kube-scheduler.kubeconfig")
    _spawn(tb, "kube-scheduler", [
        f"--kubeconfig={sched_cfg}", f"--authentication-kubeconfig={sched_cfg}",
        f"--authorization-kubeconfig={sched_cfg}", "--bind-address=127.0.0.1", "--secure-port=0",
        "--leader-elect=false", "--v=1",
    ], die_with_parent)
    (d / "kwok-stages.yaml").write_text(stages.config_text())
    _spawn(tb, "kwok", [
        f"--kubeconfig={d / 'kwok.kubeconfig'}", f"--config={d / 'kwok-stages.yaml'}",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--cidr={POD_CIDR}", "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40",
    ], die_with_parent)

    objects = {"apiVersion": "v1", "kind": "List",
               "items": [*(_node_manifest(i) for i in range(NODE_COUNT)), storage.storage_class(),
                         _kube_dns_service()]}
    tb.kubectl("apply", "-f", "-", stdin=json.dumps(objects))
    _wait("nodes Ready", lambda: _nodes_ready(tb), tb, "kwok")
    _wait("default ServiceAccount", lambda: tb.kubectl(
        "get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
        tb, "kube-controller-manager")
    _start_coredns(tb, die_with_parent)
    _spawn(tb, "podrunner", [str(tb.dir)], die_with_parent,
           argv0=storage.host_view(d, [sys.executable, "-m", "testbed.podrunner"]),
           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    if _exited(tb.pids["kube-scheduler"]):
        raise StartError(f"kube-scheduler exited during start; log: {tb.log('kube-scheduler')}")


def _start_coredns(tb: Testbed, die_with_parent: bool) -> None:
    """Cluster DNS: CoreDNS's kubernetes plugin over the test bed's API server, on a loopback port.
    ``loadbalance`` shuffles A records per answer, as cluster DNS does for headless Services."""
    tb.ports["dns"] = _free_port_udp_tcp()
    plugins = (
        "    errors\n"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        f"        kubeconfig {tb.dir / 'kwok.kubeconfig'} testbed\n"
        "        pods insecure\n"
        "        ttl 5\n"
        "    }\n"
        "    loadbalance\n")
    servers = [f".:{tb.ports['dns']} {{\n    bind 127.0.0.1\n{plugins}}}\n"]
    # On the test host, also where pods look for it (their resolv.conf names the kube-dns ClusterIP);
    # not when another test bed in this namespace holds that address already.
    if services.local() and _bindable(services.CLUSTER_DNS, 53):
        servers.append(f".:53 {{\n    bind {services.CLUSTER_DNS}\n{plugins}}}\n")
        tb.ports["cluster-dns"] = 53
    corefile = tb.dir / "Corefile"
    corefile.write_text("".join(servers))
    _spawn(tb, "coredns", ["-conf", str(corefile)], die_with_parent)
    _wait("answers for kubernetes.default", lambda: bool(resolve(
        tb, f"kubernetes.default.svc.{CLUSTER_DOMAIN}")), tb, "coredns")


def resolve(tb: Testbed, name: str, rdtype: str = "A") -> list[str]:
    """Ask the test bed's cluster DNS; [] for NXDOMAIN or no answer."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = tb.ports["dns"]
    resolver.lifetime = 2
    try:
        return sorted(r.to_text() for r in resolver.resolve(name, rdtype))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException:
        return []


def _nodes_ready(tb: Testbed) -> bool:
    out = tb.kubectl("get", "nodes", "-o",
                     "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}"
                     "{'\\n'}{end}", check=False)
    statuses = out.stdout.split()
    return out.returncode == 0 and len(statuses) == NODE_COUNT and set(statuses) == {"True"}


def peak_memory_mib(tb: Testbed) -> dict[str, int]:
    """Peak resident memory (VmHWM) of each running component, in MiB."""
    peaks = {}
    for name, pid in tb.pids.items():
        with contextlib.suppress(OSError, KeyError, ValueError):
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            peaks[name] = int(fields["VmHWM"].split()[0]) // 1024
    return peaks


def down(state_dir: Path | None = None, grace: float = 10.0) -> None:
    """Stop every process of the test bed in state_dir (reverse start order) and wait for them."""
    directory = (state_dir or default_state_dir()).resolve()
    if not (directory / STATE_FILE).exists():
        return
    tb = Testbed.load(directory)
    (directory / "peak-memory.json").write_text(json.dumps(peak_memory_mib(tb)))
    for pid in reversed(list(tb.pids.values())):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in reversed(list(tb.pids.values())):
        while not _exited(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _exited(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while not _exited(pid):
                time.sleep(0.05)
    podrunner.remove_created_mountpoints(directory)
    (directory / STATE_FILE).unlink()
