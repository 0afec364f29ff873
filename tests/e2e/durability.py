"""The kit of the durability tests: a receiving server that is down until told otherwise, batches of
uniquely tagged messages spread over the MTAs, the tally of what arrived (delivered, duplicated, lost),
and the relay processes and queue depths of the pods the test bed runs."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from e2ekit import figure, message, submit_many
from support.receiver_thread import ThreadedReceiver
from support.smtp_receiver import Transaction
from support.waiting import wait_until

if TYPE_CHECKING:
    from conftest import Chain

# Retries every second or two, so a test sees queued mail delivered soon after the smarthost is up.
QUEUE = {"minRetryInterval": "1s", "maxRetryInterval": "2s", "handoffTimeout": "5m"}
SENDER = "billing@example.com"  # the examples' billing credential may send as example.com
_TOKEN = re.compile(rb"Subject: e2e ([0-9a-f]{32})")


@dataclass
class Smarthost:
    """The Cluster's smarthost on a fixed port: down (nothing listens: every attempt is deferred) until
    ``up``; each ``up`` is a fresh server, whose transactions are the ones since."""

    port: int
    tls: ssl.SSLContext
    ca_pem: bytes  # its CA, which the pods trust
    received: list[Transaction] = field(default_factory=list)
    _rx: ThreadedReceiver | None = None

    def up(self) -> None:
        if self._rx is None:
            self._rx = ThreadedReceiver(tls=self.tls, require_tls=True, port=self.port).__enter__()

    def down(self) -> None:
        if self._rx is not None:
            self.received += self._rx.transactions
            self._rx.__exit__(None, None, None)
            self._rx = None

    def transactions(self) -> list[Transaction]:
        return self.received + (self._rx.transactions if self._rx is not None else [])


def tokens_of(transactions: list[Transaction]) -> collections.Counter[str]:
    found: collections.Counter[str] = collections.Counter()
    for tx in transactions:
        match = _TOKEN.search(tx.data)
        if match:
            found[match.group(1).decode()] += 1
    return found


def send_batch(chain: Chain, count: int, port: int = 587) -> list[str]:
    """``count`` messages, spread over the Ready MTAs (each over one authenticated session); every one
    must get 250. Returns their tokens."""
    creds = chain.connection("billing")
    pods = sorted(chain.ready_pods().items())
    assert pods, "no Ready MTA to send to"
    tokens: list[str] = []
    for index, (_pod, ip) in enumerate(pods):
        share = count // len(pods) + (1 if index < count % len(pods) else 0)
        batch = [message(SENDER, f"rcpt{i}@example.net") for i in range(share)]
        codes = submit_many(ip, chain.port(port), chain.tls, "billing", creds["password"],
                            [(SENDER, f"rcpt{i}@example.net", raw) for i, (_, raw) in enumerate(batch)])
        assert codes == [250] * share, f"not every message accepted: {collections.Counter(codes)}"
        tokens += [token for token, _ in batch]
    return tokens


@dataclass(frozen=True)
class Tally:
    accepted: int
    delivered: int
    duplicated: int
    lost: int


def deliver_all(smarthost: Smarthost, tokens: list[str], scenario: str, started: float,
                timeout: float = 180) -> Tally:
    """Bring the smarthost up and wait until every token arrived; then a moment more, so a duplicate
    has the chance to show. Reports the figures; the caller asserts."""
    smarthost.up()
    wanted = set(tokens)
    with contextlib.suppress(AssertionError):  # what did not arrive is counted as lost below
        wait_until(lambda: wanted <= set(tokens_of(smarthost.transactions())), timeout, interval=0.5,
                   what=f"{len(wanted)} messages delivered")
    time.sleep(2)
    seen = tokens_of(smarthost.transactions())
    tally = Tally(accepted=len(tokens), delivered=len(wanted & set(seen)),
                  duplicated=sum(seen[t] - 1 for t in wanted if seen[t] > 1), lost=len(wanted - set(seen)))
    figure(f"{scenario}: seconds, accepted, delivered, duplicated, lost",
           (round(time.monotonic() - started, 1), tally.accepted, tally.delivered, tally.duplicated,
            tally.lost))
    return tally


def relay_pids(pod_ip: str) -> list[int]:
    """The front door process of the relay listening on ``pod_ip`` (the pod runner's real process). Only
    in this network namespace (the test host): another test bed on the machine hands out the same IPs."""
    here = os.readlink("/proc/self/ns/net")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if os.readlink(entry / "ns" / "net") != here:
                continue
        except OSError:
            continue
        if any(a.endswith(b"mta-relay") for a in argv[:2]) and pod_ip.encode() in argv:
            found.append(int(entry.name))
    return found


def kill_relay(pod_ip: str) -> int:
    (pid,) = relay_pids(pod_ip)
    os.kill(pid, signal.SIGKILL)
    return pid


def metric(ip: str, name: str, tls: ssl.SSLContext, port: int = 8080) -> float | None:
    """One sample of a relay's metric (summed over its labels), from its own /metrics."""
    try:
        with urllib.request.urlopen(f"https://{ip}:{port}/metrics", context=tls, timeout=3) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    values = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith(name) and (line[len(name)] in " {")]
    return sum(values) if values else None


def any_ip_tls() -> ssl.SSLContext:
    """For /metrics on a pod IP the cluster certificate does not name; metrics carry no secret."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def pod_uids(chain: Chain) -> dict[str, str]:
    pods = json.loads(chain.kubectl("get", "pods", "-l", "mta-operator.io/cluster=main", "-o", "json").stdout)
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")}


def wait_ready(chain: Chain, count: int, timeout: float = 120) -> dict[str, str]:
    def ready() -> dict[str, str] | None:
        pods = chain.ready_pods()
        return pods if len(pods) == count else None
    return wait_until(ready, timeout, interval=0.5, what=f"{count} Ready MTAs")
