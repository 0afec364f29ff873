"""What the local-mode tests share: small manifest sets written from Python, and `mta-operator local` run as
the real command (render only, or serving until the test ends)."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from support.ports import free_port  # re-exported for the tests

CLI = [str(Path(sys.executable).parent / "mta-operator")]
NAMESPACE = "mail"
HOSTNAME = "smtp.example.com"


def cluster(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "mta-operator.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "main", "namespace": NAMESPACE},
            "spec": {"hostname": HOSTNAME, "mtas": 1, "smtp": {"ports": [587]}, **spec}}


def domain(name: str = "example.com") -> dict[str, Any]:
    # No DKIM: a key per test run would only cost time; signing has tests of its own.
    return {"apiVersion": "mta-operator.io/v1alpha1", "kind": "SendingDomain",
            "metadata": {"name": name.replace(".", "-"), "namespace": NAMESPACE},
            "spec": {"clusterRef": {"name": "main"}, "domain": name, "dkim": {"enabled": False}}}


def credential(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "mta-operator.io/v1alpha1", "kind": "SmtpCredential",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"clusterRef": {"name": "main"},
                     "domains": {"mode": "Specific", "names": ["example.com"]}, **spec}}


def secret(name: str, **values: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
            "type": "Opaque", "stringData": values}


def write_manifests(directory: Path, *docs: dict[str, Any], name: str = "manifests.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(yaml.safe_dump_all(docs))
    return directory


def local(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "local", *args], capture_output=True, text=True, timeout=120, check=check)


def generated_passwords(stdout: str) -> dict[str, str]:
    lines = stdout.split("Generated passwords", 1)[-1].split("DNS records", 1)[0].splitlines()[1:]
    return dict(line.strip().split(": ", 1) for line in lines if ": " in line)


class Served:
    """A running `mta-operator local`: its header (everything printed before serving) and its ports."""

    def __init__(self, proc: subprocess.Popen[str], header: str, state: Path, smtp_port: int,
                 http_port: int, log: Path) -> None:
        self.proc, self.header, self.state = proc, header, state
        self.smtp_port, self.http_port = smtp_port, http_port
        self.log = log  # the relay's JSON log lines (stderr)

    def wait_for_log(self, text: str, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while text not in self.log.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{text!r} not logged; log: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.state / "tls" / "ca.crt"))

    def connect(self) -> smtplib.SMTP:
        """An SMTP session after STARTTLS, the certificate checked against the Cluster's hostname."""
        deadline = time.monotonic() + 30
        while True:
            try:
                client = smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        client.ehlo("app.example.com")
        client._host = HOSTNAME  # type: ignore[attr-defined]  # smtplib checks the certificate against it
        client.starttls(context=self.tls())
        client.ehlo("app.example.com")
        return client


@contextmanager
def serving(manifests: Path, state: Path, env: dict[str, str] | None = None,
            more_ports: dict[int, int] | None = None) -> Iterator[Served]:
    """``more_ports``: public port → local port for listeners besides 587."""
    smtp_port, http_port = free_port(), free_port()
    log = state.parent / f"{state.name}.log"
    extra = [arg for public, local_port in (more_ports or {}).items()
             for arg in ("--port", f"{public}={local_port}")]
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*CLI, "local", "-f", str(manifests), "--state-dir", str(state), "--port", f"587={smtp_port}",
             *extra, "--http-port", str(http_port)],
            stdout=subprocess.PIPE, stderr=err, text=True, env={"PATH": "/usr/bin:/bin", **(env or {})})
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the header ends with the DNS records (or the endpoints, without domains)
        seen.append(line)
        if line.startswith("Serving"):
            break
    else:
        proc.wait(30)
        raise AssertionError("local mode exited early: " + "".join(seen) + log.read_text())
    served = Served(proc, "".join(seen), state, smtp_port, http_port, log)
    try:
        yield served
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def message(sender: str, recipient: str, text: str) -> bytes:
    return (f"From: {sender}\r\nTo: {recipient}\r\nSubject: {text}\r\n\r\n{text}\r\n").encode()
