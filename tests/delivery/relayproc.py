"""The real ``mta-relay`` process for end-to-end delivery tests: config directory, start, kill, submit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from deliverykit import free_port
from mta_relay.passwords import fast_verifier
from mta_relay.spool import slot_files
from prometheus_client.parser import text_string_to_metric_families
from support.tls import client_context, make_ca, write_server_cert

USERNAME, PASSWORD = "app", "Pw-" + "y" * 29
RELAY_BIN = str(Path(sys.executable).parent / "mta-relay")


class RelayProcess:
    """One relay process over a config directory; ``restart`` keeps the config and the spool."""

    def __init__(self, workdir: Path, smarthost_port: int, *, dkim_pem: bytes | None = None,
                 grace: float = 5.0, smarthost: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, workers: int | None = None, **extra: Any) -> None:
        """``workers``: the relay's ``--workers`` (None: its own sizing, one per CPU here)."""
        self.dir = workdir / "config"  # only config files: the relay reloads when anything in it changes
        self.dir.mkdir(parents=True)
        self.ca = make_ca()
        self.client_tls: ssl.SSLContext = client_context(self.ca)
        cert, key = write_server_cert(self.ca, workdir / "tls")
        self.smtp_port, self.http_port = free_port(), free_port()
        self.spool = workdir / "spool"
        domain: dict[str, Any] = {"domain": "example.com"}
        if dkim_pem is not None:
            (workdir / "dkim.pem").write_bytes(dkim_pem)
            domain["dkim"] = {"selector": "sel", "keyFile": str(workdir / "dkim.pem")}
        settings = {
            "version": 1, "hostname": "mta.test.example",
            "smtpListeners": [{"port": self.smtp_port, "address": "127.0.0.1"}],
            "http": {"enabled": True, "port": self.http_port, "address": "127.0.0.1"},
            "tls": {"certFile": str(cert), "keyFile": str(key)},
            "queue": {"path": str(self.spool)}, "domains": [domain],
            "limits": {"shutdownGraceSeconds": grace},
            "delivery": {"mode": "Smarthost", "smarthost": {"host": "127.0.0.1", "port": smarthost_port,
                                                            "tls": "None", **(smarthost or {})}},
            **extra,
        }
        (self.dir / "relay.yaml").write_text(yaml.safe_dump(settings))
        (self.dir / "credentials").mkdir()
        credential = {"username": USERNAME, "passwordVerifier": fast_verifier(PASSWORD),
                      "domains": {"mode": "Specific", "names": ["example.com"]}}
        (self.dir / "credentials" / "credentials-000.json").write_text(
            json.dumps({"version": 1, "credentials": [credential]}))
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "relay.log"
        self.starts = 0
        self.workers = workers

    def start(self) -> RelayProcess:
        self.starts += 1
        with self.log.open("ab") as log:
            workers = ["--workers", str(self.workers)] if self.workers else []
            self.proc = subprocess.Popen([RELAY_BIN, "--config", str(self.dir), *workers], stdout=log,
                                         stderr=log, env=self.env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-2000:]
                raise AssertionError(f"relay exited with {self.proc.returncode}: {tail}")
            try:
                for port in (self.smtp_port, self.http_port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()  # not left running behind the failed test
        raise AssertionError("relay did not start listening")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, within: float) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(within)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def children(self, module: bytes) -> list[int]:
        """The relay's live child processes running ``module`` (``python -m …``): its delivery process
        (``b"mta_relay.delivery.worker"``) or its extra SMTP serving processes
        (``b"mta_relay.workers.process"``)."""
        assert self.proc is not None
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            state, parent = stat[stat.rfind(")") + 2:].split()[:2]
            if int(parent) == self.proc.pid and state != "Z" and module in cmdline:
                found.append(int(entry))
        return found

    def submit(self, mail_from: str, rcpts: list[str], message: bytes) -> None:
        """One message over SMTP (STARTTLS + AUTH PLAIN); returns when the relay answered 250."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            smtp.starttls(context=self.client_tls)
            smtp.login(USERNAME, PASSWORD)
            smtp.sendmail(mail_from, rcpts, message)

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the relay's /metrics (front door and delivery process); None if absent."""
        with urllib.request.urlopen(f"https://127.0.0.1:{self.http_port}/metrics", context=self.client_tls,
                                    timeout=10) as answer:
            text = answer.read().decode()
        return next((sample.value for family in text_string_to_metric_families(text)
                     for sample in family.samples if sample.name == name and sample.labels == labels), None)

    def spool_entries(self) -> list[str]:
        """Slot files holding an entry (free slots are empty)."""
        return [p.name for p in slot_files(self.spool / "slots") if _size(p)]


def peer_relays(tmp_path: Path, names: tuple[str, ...], smarthost_port: int, token: str,
                interval: float = 1.0, **extra: Any) -> list[RelayProcess]:
    """Relays that are one cluster's MTAs: one certificate, one peer token, each told of the others in
    ``quotaExchange`` (named as pods, ``POD_NAME``); ``extra`` goes into every relay's settings."""
    relays = []
    for name in names:
        workdir = tmp_path / name
        workdir.mkdir()
        relay = RelayProcess(workdir, smarthost_port, env={"POD_NAME": name},
                             queue={"path": str(workdir / "spool")}, **extra)
        (relay.dir / "peer-token").write_text(token + "\n")
        relays.append(relay)
    first = relays[0]
    for relay in relays[1:]:
        for file in ("tls.crt", "tls.key"):  # one certificate for the cluster's MTAs
            shutil.copyfile(first.dir.parent / "tls" / file, relay.dir.parent / "tls" / file)
        relay.ca, relay.client_tls = first.ca, first.client_tls
    peers = [{"name": name, "url": f"https://127.0.0.1:{r.http_port}"}
             for name, r in zip(names, relays, strict=True)]
    for relay in relays:
        path = relay.dir / "relay.yaml"
        settings = yaml.safe_load(path.read_text())
        settings.update(handoff={"tokenFile": "peer-token"},
                        quotaExchange={"peers": peers, "intervalSeconds": interval})
        path.write_text(yaml.safe_dump(settings))
    return relays


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # a slot the relay deleted while we looked holds nothing
        return 0
