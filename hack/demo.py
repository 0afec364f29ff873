"""The one-command demo: ``make demo`` (``python hack/demo.py up``) and ``make demo-down``.

``up`` brings up the test bed in a named network namespace (``mta-demo``, where pod IPs are local
addresses and nothing leaves), installs the CRDs, runs the operator, starts a receiving mail server as the
Cluster's smarthost, applies ``examples/`` (adapted to the test bed: operator-managed TLS instead of
cert-manager, the local smarthost instead of MX), waits for the MTAs, sends a message with STARTTLS + AUTH
through them (``kubectl mta send``) and prints how to go on. Run again, it reuses what is running.
``down`` stops everything and removes the namespace. Needs root (network namespaces).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from testbed import cluster, pki, podrunner, versions

NETNS = "mta-demo"
NAMESPACE = "mail"
CLUSTER = "main"
RECEIVER_PORT = 2525
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STATE = Path(os.environ.get("MTA_DEMO_STATE", versions.cache_root() / "demo")).expanduser()


def examples_for_testbed(namespace: str, smarthost_port: int, mtas: int | None = None,
                         rate_limit: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """examples/ moved into ``namespace``, with what the test bed lacks swapped out of the Cluster: no
    cert-manager (operator-managed CA instead), no internet (a smarthost on 127.0.0.1 instead of MX)."""
    docs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] == "Namespace":
                continue
            doc = copy.deepcopy(doc)
            doc["metadata"]["namespace"] = namespace
            if doc["kind"] == "Cluster":
                spec = doc["spec"]
                spec["tls"] = {}
                spec["delivery"] = {"mode": "Smarthost", "smarthost": {
                    "host": "127.0.0.1", "port": smarthost_port, "tls": "Required"}}
                if mtas is not None:
                    spec["mtas"] = mtas
                if rate_limit is not None:
                    spec["rateLimit"] = rate_limit
            docs.append(doc)
    return docs


def relay_config_in_force(pod_dir: Path, want: str) -> bool:
    """Whether the relay of a pod the pod runner runs uses relay.yaml ``want``: the config watcher has
    published it, and the relay's last start or reload was built from that generation (the relay logs
    the settings snapshot it saw before each build; it reloads when it saw an older one)."""
    mounted = pod_dir / "volumes" / "config" / "relay.yaml"
    log_path = pod_dir / "relay.log"
    try:
        if mounted.read_text() != want:
            return False
        published = mounted.resolve(strict=True).parent.name
        lines = log_path.read_text().splitlines()
    except FileNotFoundError:  # not published yet, or swapped while we looked
        return False
    built = [record["settings_snapshot"] for record in map(_record, lines)
             if record.get("event") in ("serving", "config_reloaded") and "settings_snapshot" in record]
    return bool(built) and built[-1] == published


def _record(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _wait(what: str, check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    sys.exit(f"demo: timed out waiting for {what} (logs: {STATE / 'logs'}, pods: {STATE / 'pods'})")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


# --- outside the namespace -----------------------------------------------------------------------
def up() -> None:
    if os.geteuid() != 0:
        sys.exit("demo: needs root (it creates the network namespace mta-demo)")
    if not Path(f"/run/netns/{NETNS}").exists():
        _run("ip", "netns", "add", NETNS)
        _run("ip", "-n", NETNS, "link", "set", "lo", "up")
        _run("ip", "-n", NETNS, "route", "add", "local", cluster.POD_CIDR, "dev", "lo")
    os.execvp("ip", ["ip", "netns", "exec", NETNS, sys.executable, __file__, "_up"])  # noqa: S606


def down() -> None:
    if Path(f"/run/netns/{NETNS}").exists():
        subprocess.run(["ip", "netns", "exec", NETNS, sys.executable, __file__, "_down"], check=False)
        _run("ip", "netns", "delete", NETNS)
    print("demo: down")


# --- inside the namespace ------------------------------------------------------------------------
def _spawn(tb: cluster.Testbed, name: str, argv: list[str]) -> None:
    with tb.log(name).open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    tb.pids[name] = proc.pid  # `testbed down` stops it with the rest
    tb.save()


def _start_extras(tb: cluster.Testbed) -> None:
    """The receiving server and the operator, next to the test bed's own processes."""
    (STATE / "demo-pki").mkdir(exist_ok=True)
    ca = pki.CA(STATE / "demo-pki")
    cert = ca.issue("receiver", "127.0.0.1", server=True, hosts=("127.0.0.1",))
    trust = STATE / podrunner.TRUST_DIR
    trust.mkdir(exist_ok=True)
    shutil.copy(ca.pair.cert, trust / "demo-receiver.pem")  # as a real smarthost's CA would be in the image
    _spawn(tb, "receiver", [sys.executable, str(Path(__file__).with_name("demo_receiver.py")),
                            "--port", str(RECEIVER_PORT), "--cert", str(cert.cert), "--key", str(cert.key),
                            "--maildir", str(STATE / "mail")])
    tb.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    tb.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    _spawn(tb, "operator", [str(BIN / "mta-operator"), "run", "--kubeconfig", str(tb.kubeconfig),
                            "--namespace", NAMESPACE, "--relay-image", "mta-relay:demo"])


def _json(tb: cluster.Testbed, *args: str) -> dict[str, Any]:
    return json.loads(tb.kubectl(*args, "-o", "json").stdout)


def _ready_pods(tb: cluster.Testbed) -> dict[str, str]:
    pods = _json(tb, "get", "pods", "-n", NAMESPACE, "-l", f"mta-operator.io/cluster={CLUSTER}")["items"]
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions") or [])}


def _in_force(tb: cluster.Testbed, pods: dict[str, str]) -> bool:
    want = _json(tb, "get", "configmap", "-n", NAMESPACE, f"{CLUSTER}-mta-settings")["data"]["relay.yaml"]
    dirs = [next((STATE / "pods").glob(f"{NAMESPACE}_{pod}_*"), None) for pod in pods]
    return "dkim" in want and all(d is not None and relay_config_in_force(d, want) for d in dirs)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _up() -> None:
    started = time.monotonic()
    running = (STATE / cluster.STATE_FILE).exists() and _alive(
        cluster.Testbed.load(STATE).pids["kube-apiserver"])
    tb = cluster.Testbed.load(STATE) if running else cluster.up(STATE)
    if not all(_alive(tb.pids.get(name, 0)) for name in ("receiver", "operator")):
        _start_extras(tb)
    print(f"demo: test bed {'already running' if running else 'up'}; applying examples/ to namespace "
          f"{NAMESPACE}", flush=True)
    docs = examples_for_testbed(NAMESPACE, RECEIVER_PORT)
    tb.kubectl("create", "namespace", NAMESPACE, check=False)
    tb.kubectl("apply", "--server-side", "-f", "-",
               stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    mtas = next(d for d in docs if d["kind"] == "Cluster")["spec"]["mtas"]
    tb.kubectl("wait", "--for=condition=Ready", "--timeout=180s", "-n", NAMESPACE, f"mtacluster/{CLUSTER}",
               timeout=190)
    headless = f"{CLUSTER}-mta-pods.{NAMESPACE}.svc.{cluster.CLUSTER_DOMAIN}"
    pods = _wait(f"{mtas} Ready MTAs in cluster DNS", lambda: (p := _ready_pods(tb)) and len(p) == mtas
                 and sorted(cluster.resolve(tb, headless)) == sorted(p.values()) and p)
    _wait("the DKIM keys in force in every MTA", lambda: _in_force(tb, pods), timeout=90)
    ip = cluster.resolve(tb, headless)[0]
    port = next(int(r.split()[2]) for r in cluster.resolve(tb, f"_smtp-587._tcp.{headless}", "SRV"))
    before = len(list((STATE / "mail").glob("*.eml")))
    env = {**os.environ, "KUBECONFIG": str(tb.kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}
    sent = subprocess.run(["kubectl-mta", "-n", NAMESPACE, "send", "--credential", "billing",
                           "--to", "you@example.net", "--server", f"{ip}:{port}"],
                          capture_output=True, text=True, env=env, check=False)
    if sent.returncode != 0:
        sys.exit(f"demo: kubectl mta send failed:\n{sent.stdout}{sent.stderr}")
    _wait("the message at the receiving server",
          lambda: len(list((STATE / "mail").glob("*.eml"))) > before, timeout=60)
    newest = sorted((STATE / "mail").glob("*.eml"))[-1]
    _summary(tb, pods, port, newest, time.monotonic() - started)


def _summary(tb: cluster.Testbed, pods: dict[str, str], port: int, message: Path, took: float) -> None:
    kubectl = versions.binary("kubectl")
    headless = f"{CLUSTER}-mta-pods.{NAMESPACE}.svc.{cluster.CLUSTER_DOMAIN}"
    first = pods[sorted(pods)[0]]
    signed = "DKIM-signed" if message.read_bytes().startswith(b"DKIM-Signature:") else "NOT signed"
    password = (f"$(kubectl get secret billing-smtp -n {NAMESPACE} "
                "-o jsonpath='{.data.password}' | base64 -d)")
    print(f"""
demo: ready in {took:.0f}s. A message sent with STARTTLS + AUTH (credential billing) through the MTAs
      reached the receiving server: {message} ({signed}).

Connection details
  MTAs (Ready pods, cluster DNS {headless} at 127.0.0.1:{tb.ports['dns']}):
    {', '.join(sorted(pods.values()))}
  SMTP submission port {port} (Service port 587), STARTTLS required, certificate for smtp.example.com
  from the operator's CA (Secret {CLUSTER}-mta-tls, key ca.crt); HTTPS injection on port 8080
  Credential billing: username and password in Secret billing-smtp (namespace {NAMESPACE})
  Received mail: {STATE / 'mail'}; logs: {STATE / 'logs'}; pods: {STATE / 'pods'}

Next, in a shell on the test host (pod IPs are reachable only there):
  ip netns exec {NETNS} bash
  export KUBECONFIG={tb.kubeconfig} PATH={BIN}:{kubectl.parent}:$PATH
  kubectl get mta -n {NAMESPACE}
  kubectl mta -n {NAMESPACE} status
  kubectl mta -n {NAMESPACE} send --credential billing --to you@example.net --server {first}:{port}
  swaks --server {first} --port {port} --tls --auth PLAIN --auth-user billing \\
        --auth-password "{password}" --from billing@example.com --to you@example.net
  kubectl get endpointslices -n {NAMESPACE}   # the headless Service: one address per Ready MTA
  kubectl scale mtacluster/{CLUSTER} -n {NAMESPACE} --replicas 1
Stop it all: make demo-down
""")


def _down() -> None:
    cluster.down(STATE)
    for leftover in ("pod-trust.d", "demo-pki", "mail"):
        shutil.rmtree(STATE / leftover, ignore_errors=True)


COMMANDS = {"up": up, "down": down, "_up": _up, "_down": _down}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        sys.exit("usage: demo.py up|down")
    COMMANDS[sys.argv[1]]()
