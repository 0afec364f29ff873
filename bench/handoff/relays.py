"""The relay side of the hand-off benchmark: two ``mta-relay`` processes of one cluster — A, the MTA that
leaves, and B, the MTA that stays — as the operator runs them: one shared certificate and key (the peer
client pins it), one peer token, the same ``handoff`` settings on both, each relay told its own pod name.

Both smarthosts are a closed port, with the retry interval raised to an hour: what A accepts is tried
once, refused and deferred, and stays; what B takes over keeps A's retry state (due in about an hour),
so B stores it (fsync'd) and holds it, doing no delivery work while the hand-off is measured. Settings
are written with the relay's own config model (``bench.frontdoor.relay_peer.write_config``, then
``mta_relay.config``), and rewritten the way the operator changes its ConfigMap: the file, then SIGHUP
(the relay also notices the change itself within 0.5 s).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mta_relay import config, config_loader, handoff

from bench.frontdoor import proctree, relay_peer
from bench.frontdoor.certs import CertFiles
from bench.frontdoor.children import Child, free_port, spawn, wait_for_port

LEAVING_POD, STAYING_POD = "bench-mta-1", "bench-mta-0"
TOKEN_FILE = "peer-token"
RETRY_SECONDS = 3600.0  # a deferred entry is not tried again while the benchmark runs
_DEFERRED = re.compile(r'^mta_queue_messages\{state="deferred"\} (\S+)$', re.MULTILINE)


@dataclass
class Relay:
    name: str  # also the prefix of its config and spool directories in the workdir
    pod: str
    child: Child
    config_dir: Path
    smtp_port: int
    http_port: int
    token: str
    password: str  # of the one SMTP credential (user ``relay_peer.USERNAME``), for the fill
    tls: ssl.SSLContext  # trusts the bench CA, like an operator's client
    _conn: http.client.HTTPSConnection | None = None

    def get(self, path: str, *, bearer: bool = True) -> tuple[int, bytes]:
        """One request on a kept-alive connection (a new TLS handshake per poll would cost the relay
        being measured more than the poll itself)."""
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection("127.0.0.1", self.http_port, timeout=10,
                                                         context=self.tls)
            try:
                headers = {"Authorization": f"Bearer {self.token}"} if bearer else {}
                self._conn.request("GET", path, headers=headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def queue(self) -> dict[str, Any]:
        """``GET /internal/v1/queue``: depth, leaving, handedOff, handoffFailures."""
        status, body = self.get(handoff.QUEUE_PATH)
        if status != 200:
            raise RuntimeError(f"{self.name}: {handoff.QUEUE_PATH} answered {status}")
        return json.loads(body)

    def deferred(self) -> int:
        """Entries waiting to retry, from the relay's own metrics (``mta_queue_messages``)."""
        status, body = self.get("/metrics", bearer=False)
        found = _DEFERRED.search(body.decode()) if status == 200 else None
        return int(float(found.group(1))) if found else 0

    def processes(self) -> list[int]:
        """The front door and what it started (the delivery process)."""
        root = self.child.peer_pid()
        return [root, *proctree.descendants(root)]

    def reset_peak_rss(self) -> None:
        """From here on VmHWM is the peak of what follows (``clear_refs`` 5, Linux ≥ 4.0)."""
        for pid in self.processes():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def peak_rss_kib(self) -> list[int]:
        """VmHWM of each process, the front door first."""
        return [_status_kib(pid, "VmHWM") for pid in self.processes()]

    def set_leaving(self, leaving: list[str], peers: list[tuple[str, int]]) -> None:
        """Rewrite the settings file with this ``handoff`` section, then SIGHUP: the operator's way."""
        write_handoff(self.config_dir, leaving, peers)
        os.kill(self.child.peer_pid(), signal.SIGHUP)

    def log_times(self, event: str) -> list[float]:
        """Unix times (ms precision) of the relay's JSON log lines with this ``event``."""
        stamps = []
        marker = f'"event": "{event}"'
        with self.child.log.open(errors="replace") as log:
            for line in log:
                if marker in line:
                    with contextlib.suppress(ValueError, KeyError):
                        stamps.append(_unix(json.loads(line)["time"]))
        return stamps

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        self.close()
        self.child.stop()


def write_handoff(config_dir: Path, leaving: list[str], peers: list[tuple[str, int]]) -> None:
    """The settings in force with ``handoff`` (token file, ``leaving``, ``peers`` as (pod, http port))."""
    path = config_dir / "relay.json"
    settings = config_loader.load_settings(config_dir)
    section = config.Handoff(token_file=TOKEN_FILE, leaving=leaving,
                             peers=[config.HandoffPeer(name=pod, url=f"https://127.0.0.1:{port}")
                                    for pod, port in peers])
    updated = settings.model_copy(update={"handoff": section})
    tmp = path.with_suffix(".tmp")  # whole or not at all: the relay may read it at any moment
    tmp.write_text(updated.model_dump_json(by_alias=True))
    tmp.replace(path)


def start(workdir: Path, certs: CertFiles, name: str, pod: str, closed_port: int, token: str,
          peers: list[tuple[str, int]], *, http_port: int | None = None) -> Relay:
    """One relay, not leaving; ``peers`` as (pod, http port), ``http_port`` when a peer already names it."""
    if missing := relay_peer.available():
        raise RuntimeError(f"mta-relay cannot run: {missing}")
    config_dir, spool = workdir / f"{name}-config", workdir / f"{name}-spool"
    smtp_port, http_port = free_port(), http_port or free_port()
    password = relay_peer.generated_password()
    relay_peer.write_config(config_dir, smtp_port=smtp_port, http_port=http_port, certs=certs, spool=spool,
                            sink_port=closed_port, password=password)
    settings = config_loader.load_settings(config_dir)
    queue = settings.queue.model_copy(update={"min_retry_interval_seconds": RETRY_SECONDS,
                                              "max_retry_interval_seconds": RETRY_SECONDS})
    (config_dir / "relay.json").write_text(
        settings.model_copy(update={"queue": queue}).model_dump_json(by_alias=True))
    token_path = config_dir / TOKEN_FILE
    token_path.write_text(token + "\n")
    token_path.chmod(0o600)
    write_handoff(config_dir, [], peers)
    executable = relay_peer._executable()
    assert executable is not None  # checked by available()
    child = spawn(name, [executable, "--config", str(config_dir), "--log-level", "INFO", "--pod-name", pod],
                  workdir)
    wait_for_port(child, smtp_port)
    wait_for_port(child, http_port)
    return Relay(name, pod, child, config_dir, smtp_port, http_port, token, password, certs.client_context())


def start_pair(workdir: Path, certs: CertFiles, closed_port: int, prefix: str) -> tuple[Relay, Relay]:
    """A (leaving later) and B (staying); each settings file lists B as the peer, as the operator's
    shared ConfigMap does. The caller stops both; here only what started before a failure."""
    token = secrets.token_urlsafe(32)
    b_http = free_port()
    peers = [(STAYING_POD, b_http)]
    b = start(workdir, certs, f"{prefix}-b", STAYING_POD, closed_port, token, peers, http_port=b_http)
    try:
        a = start(workdir, certs, f"{prefix}-a", LEAVING_POD, closed_port, token, peers)
    except BaseException:
        b.stop()
        raise
    return a, b


def _status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def _unix(stamp: str) -> float:
    """The relay's log time, ``2026-01-01T00:00:00.123Z`` (UTC)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
