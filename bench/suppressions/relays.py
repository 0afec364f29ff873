"""The relay side of the suppression benchmark: ``mta-relay`` processes of one cluster as the operator runs
them (one certificate and key, one peer token, each told the others in ``quotaExchange``, an admin
token), and a small client of the admin API (``mta_relay.admin_api``: its path and header names are
imported, not copied).

Settings are written with the relay's own config model (``bench.frontdoor.relay_peer.write_config``, then
``mta_relay.config``). Delivery goes to a closed port: the benchmark never sends a message.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mta_relay import config, config_loader
from mta_relay.admin_api import SUPPRESSIONS_PATH, TOKEN_HEADER
from mta_relay.suppressions.store import STATE_DIR, STORE_FILE

from bench.frontdoor import proctree, relay_peer
from bench.frontdoor.certs import CertFiles
from bench.frontdoor.children import Child, free_port, spawn, wait_for_port

PEER_TOKEN_FILE, ADMIN_TOKEN_FILE = "peer-token", "admin-token"
EXCHANGE_SECONDS = 1.0  # the operator's default quotaExchange.intervalSeconds


@dataclass
class Relay:
    name: str
    pod: str
    child: Child
    smtp_port: int
    http_port: int
    password: str  # of the one SMTP credential (user ``relay_peer.USERNAME``)
    admin_token: str
    spool: Path
    tls: ssl.SSLContext  # trusts the bench CA
    _conn: http.client.HTTPSConnection | None = None

    def admin(self, method: str, query: str = "", body: bytes | None = None) -> dict[str, Any]:
        """One admin API request on a kept-alive connection (a TLS handshake per poll would cost the
        relay being measured more than the poll)."""
        headers = {TOKEN_HEADER: self.admin_token}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection("127.0.0.1", self.http_port, timeout=120,
                                                         context=self.tls)
            try:
                self._conn.request(method, SUPPRESSIONS_PATH + query, body=body, headers=headers)
                response = self._conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt or body is not None:  # never send an import twice
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"{self.name}: {method} {SUPPRESSIONS_PATH} answered {response.status}: "
                                   f"{answer[:200]!r}")
            return json.loads(answer)
        raise AssertionError("unreachable")

    def import_batch(self, addresses: list[str]) -> int:
        """``POST`` one batch as ``source: Import``; the number of rows it changed."""
        body = json.dumps({"source": "Import", "entries": [{"address": a} for a in addresses]},
                          separators=(",", ":")).encode()
        return int(self.admin("POST", body=body)["changed"])

    def total(self) -> int:
        """Entries in force, as the admin API counts them (a count over the table)."""
        return int(self.admin("GET", "?limit=1")["total"])

    def holds(self, address: str) -> bool:
        """One primary-key lookup: far cheaper for the relay than ``total`` while it is being polled."""
        return bool(self.admin("GET", "?address=" + quote(address))["entries"])

    def processes(self) -> list[int]:
        """The front door and what it started (the delivery process)."""
        root = self.child.peer_pid()
        return [root, *proctree.descendants(root)]

    def rss_kib(self) -> int:
        return sum(status_kib(pid, "VmRSS") for pid in self.processes())

    def cpu_seconds(self) -> float:
        return self.child.cpu_seconds()

    def db_bytes(self) -> dict[str, int]:
        """The list's database file and its WAL, as they are on disk now."""
        db = self.spool / STATE_DIR / STORE_FILE
        return {suffix or "db": _size(db.with_name(db.name + suffix)) for suffix in ("", "-wal", "-shm")}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        self.close()
        self.child.stop()


def store_path(spool: Path) -> Path:
    return spool / STATE_DIR / STORE_FILE


def start_cluster(workdir: Path, certs: CertFiles, closed_port: int, pods: list[str], *,
                  prefix: str) -> list[Relay]:
    """One relay per pod name, every one told all of them in ``quotaExchange`` (a relay skips its own
    name); one pod: no exchange at all. The caller stops them; here only what started before a
    failure."""
    token, admin = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    ports = [free_port() for _ in pods]
    peers = [config.HandoffPeer(name=pod, url=f"https://127.0.0.1:{port}")
             for pod, port in zip(pods, ports, strict=True)]
    started: list[Relay] = []
    try:
        for i, (pod, http_port) in enumerate(zip(pods, ports, strict=True)):
            started.append(_start(workdir, certs, f"{prefix}-{i}", pod, closed_port, token, admin, http_port,
                                  peers if len(pods) > 1 else []))
    except BaseException:
        for relay in started:
            relay.stop()
        raise
    return started


def _start(workdir: Path, certs: CertFiles, name: str, pod: str, closed_port: int, token: str, admin: str,
           http_port: int, peers: list[config.HandoffPeer]) -> Relay:
    if missing := relay_peer.available():
        raise RuntimeError(f"mta-relay cannot run: {missing}")
    config_dir, spool = workdir / f"{name}-config", workdir / f"{name}-spool"
    smtp_port = free_port()
    password = relay_peer.generated_password()
    relay_peer.write_config(config_dir, smtp_port=smtp_port, http_port=http_port, certs=certs, spool=spool,
                            sink_port=closed_port, password=password)
    settings = config_loader.load_settings(config_dir)
    update: dict[str, Any] = {"handoff": config.Handoff(token_file=PEER_TOKEN_FILE),
                              "admin_token_file": ADMIN_TOKEN_FILE}
    if peers:
        update["quota_exchange"] = config.QuotaExchange(peers=peers, interval_seconds=EXCHANGE_SECONDS)
    (config_dir / "relay.json").write_text(settings.model_copy(update=update).model_dump_json(by_alias=True))
    for file, value in ((PEER_TOKEN_FILE, token), (ADMIN_TOKEN_FILE, admin)):
        path = config_dir / file
        path.write_text(value + "\n")
        path.chmod(0o600)
    executable = relay_peer._executable()
    assert executable is not None  # checked by available()
    child = spawn(name, [executable, "--config", str(config_dir), "--log-level", "INFO", "--pod-name", pod],
                  workdir)
    wait_for_port(child, smtp_port)
    wait_for_port(child, http_port)
    return Relay(name, pod, child, smtp_port, http_port, password, admin, spool, certs.client_context())


def status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
