"""Helpers for the end-to-end tests: the examples adapted to the test bed, the operator as a process,
cluster DNS lookups, and SMTP/HTTP clients that connect from a chosen loopback address."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import aiosmtplib
import demo
import dns.resolver
from support.operator_process import start_operator
from support.ports import free_port
from support.waiting import stop_process  # re-exported for the tests

KUBECTL_MTA = str(Path(sys.executable).parent / "kubectl-mta")
ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
CLUSTER = "main"  # the examples' Cluster
HOSTNAME = "smtp.example.com"  # its spec.hostname: the name the serving certificate is issued for
T = TypeVar("T")
FIGURES: list[tuple[str, object]] = []


def figure(name: str, value: object) -> None:
    """A measured figure, shown in the terminal summary: speed is reported, never asserted."""
    FIGURES.append((name, value))


def examples_for_testbed(namespace: str, smarthost_port: int) -> list[dict[str, Any]]:
    """The demo's adaptation of examples/ (see hack/demo.py), with one MTA to start from and a per-MTA
    rate limit small enough to observe."""
    return demo.examples_for_testbed(namespace, smarthost_port, mtas=1,
                                     rate_limit={"messages": 10, "period": "Second"})


@dataclass
class OperatorProcess:
    """``mta-operator run`` watching one namespace, as a real process logging into ``log_path``."""

    kubeconfig: Path
    namespace: str
    log_path: Path
    # The MTA pods' image: the suite's loaded image (the ``relay_image`` fixture), so they run from it.
    image: str
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = field(default_factory=free_port)  # its /metrics, for the Prometheus test

    def start(self) -> OperatorProcess:
        self.proc = start_operator(self.kubeconfig, self.namespace, self.log_path, "--relay-image",
                                   self.image, f"--metrics-port={self.metrics_port}",
                                   "--metrics-address=127.0.0.1")
        return self

    def stop(self) -> None:
        stop_process(self.proc)


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def resolver(dns_port: int) -> dns.resolver.Resolver:
    """A resolver that asks only the test bed's cluster DNS (CoreDNS on loopback)."""
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = dns_port
    res.lifetime = 2
    return res


def lookup(res: dns.resolver.Resolver, name: str, rdtype: str = "A") -> list[str]:
    try:
        return sorted(r.to_text() for r in res.resolve(name, rdtype))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []


def message(mail_from: str, rcpt: str, token: str | None = None) -> tuple[str, bytes]:
    """A small message with a unique token in Subject and Message-ID; returns (token, bytes)."""
    token = token or uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = rcpt
    msg["Subject"] = f"e2e {token}"
    msg["Message-ID"] = f"<{token}@e2e.test>"
    msg.set_content(f"Sent through the whole chain ({token}).\n")
    return token, msg.as_bytes().replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class Reply:
    """Where a submission ended: ``stage`` (connect, auth, mail, rcpt, data) and the server's reply."""

    stage: str
    code: int
    text: str

    @property
    def accepted(self) -> bool:
        return self.stage == "data" and self.code == 250


def client_tls(ca_pem: str) -> ssl.SSLContext:
    """Verifies the MTA's certificate against the cluster's CA, for the name in the connection Secret."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.check_hostname = True
    return ctx


async def _submit(ip: str, port: int, tls: ssl.SSLContext, source: str, username: str | None,
                  password: str | None, mail_from: str, rcpt: str, data: bytes) -> Reply:
    smtp = aiosmtplib.SMTP(hostname=ip, port=port, source_address=(source, 0), start_tls=False,
                           timeout=15, local_hostname="client.e2e.test")
    try:
        await smtp.connect()
    except (aiosmtplib.SMTPException, OSError) as error:
        return Reply("connect", 0, str(error))
    stage = "tls"
    try:
        await smtp.ehlo()
        await smtp.starttls(server_hostname=HOSTNAME, tls_context=tls)
        await smtp.ehlo()
        if username is not None:
            stage = "auth"
            await smtp.login(username, password or "")
        stage = "mail"
        await smtp.mail(mail_from)
        stage = "rcpt"
        await smtp.rcpt(rcpt)
        stage = "data"
        response = await smtp.data(data)
        return Reply("data", response.code, response.message)
    except aiosmtplib.SMTPResponseException as error:
        return Reply(stage, error.code, error.message)
    except (aiosmtplib.SMTPException, OSError) as error:
        return Reply(stage, 0, str(error))
    finally:
        smtp.close()


def submit(ip: str, port: int, tls: ssl.SSLContext, *, username: str | None, password: str | None,
           mail_from: str, rcpt: str = "bob@example.net", data: bytes | None = None,
           source: str = "127.0.0.1") -> Reply:
    """One SMTP session: STARTTLS (verified), AUTH when ``username``, one message."""
    if data is None:
        _, data = message(mail_from, rcpt)
    return asyncio.run(_submit(ip, port, tls, source, username, password, mail_from, rcpt, data))


async def _inject(url: str, tls: ssl.SSLContext, username: str, password: str, body: dict[str, Any]
                  ) -> tuple[int, dict[str, Any]]:
    basic = base64.b64encode(f"{username}:{password}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    async with aiohttp.ClientSession() as session, session.post(
            url, json=body, headers=headers, ssl=tls, server_hostname=HOSTNAME,
            timeout=aiohttp.ClientTimeout(total=15)) as resp:
        return resp.status, json.loads(await resp.text())


def inject(ip: str, port: int, tls: ssl.SSLContext, username: str, password: str, body: dict[str, Any]
           ) -> tuple[int, dict[str, Any]]:
    """POST /api/inject/v1 over HTTPS (verified for the cluster's hostname) with Basic auth."""
    return asyncio.run(_inject(f"https://{ip}:{port}/api/inject/v1", tls, username, password, body))


async def _session(ip: str, port: int, tls: ssl.SSLContext, source: str) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname=ip, port=port, source_address=(source, 0), start_tls=False,
                           timeout=15, local_hostname="client.e2e.test")
    await smtp.connect()
    await smtp.ehlo()
    await smtp.starttls(server_hostname=HOSTNAME, tls_context=tls)
    await smtp.ehlo()
    return smtp


async def _auth(ip: str, port: int, tls: ssl.SSLContext, username: str, password: str) -> int:
    smtp = await _session(ip, port, tls, "127.0.0.1")
    try:
        return (await smtp.login(username, password)).code
    except aiosmtplib.SMTPResponseException as error:
        return error.code
    finally:
        smtp.close()


def auth_code(ip: str, port: int, tls: ssl.SSLContext, username: str, password: str) -> int:
    """The reply to AUTH on one MTA: 235 accepted, 535 refused."""
    return asyncio.run(_auth(ip, port, tls, username, password))


async def _probe(ip: str, port: int, tls: ssl.SSLContext, username: str, password: str, mail_from: str,
                 rcpt: str | None) -> int:
    smtp = await _session(ip, port, tls, "127.0.0.1")
    try:
        await smtp.login(username, password)
        code = (await smtp.mail(mail_from)).code
        if rcpt is not None:
            code = (await smtp.rcpt(rcpt)).code
        await smtp.rset()
        return code
    except aiosmtplib.SMTPResponseException as error:
        return error.code
    finally:
        smtp.close()


def mail_code(ip: str, port: int, tls: ssl.SSLContext, username: str, password: str, mail_from: str) -> int:
    """The reply to MAIL FROM after AUTH on one MTA, then RSET: a probe that spends no quota."""
    return asyncio.run(_probe(ip, port, tls, username, password, mail_from, None))


def rcpt_code(ip: str, port: int, tls: ssl.SSLContext, username: str, password: str, mail_from: str,
              rcpt: str) -> int:
    """The reply to RCPT TO (after AUTH and MAIL FROM) on one MTA, then RSET: nothing is sent."""
    return asyncio.run(_probe(ip, port, tls, username, password, mail_from, rcpt))


def kubectl_mta(chain: Any, *args: str, kubeconfig: Path | None = None,
                stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The kubectl plugin as a user runs it, against the chain's namespace."""
    return subprocess.run([KUBECTL_MTA, "--kubeconfig", str(kubeconfig or chain.kube.kubeconfig),
                           "-n", chain.namespace, *args], capture_output=True, text=True, timeout=120,
                          input=stdin, env={**os.environ, "NO_PROXY": "*"})


async def _many(ip: str, port: int, tls: ssl.SSLContext, username: str, password: str,
                messages: list[tuple[str, str, bytes]]) -> list[int]:
    smtp = await _session(ip, port, tls, "127.0.0.1")
    codes = []
    try:
        await smtp.login(username, password)
        for mail_from, rcpt, data in messages:
            response = await smtp.sendmail(mail_from, [rcpt], data)
            codes.append(250 if not response[0] else 0)
    finally:
        smtp.close()
    return codes


def submit_many(ip: str, port: int, tls: ssl.SSLContext, username: str, password: str,
                messages: list[tuple[str, str, bytes]]) -> list[int]:
    """Several transactions in one authenticated session, as fast as the MTA answers."""
    return asyncio.run(_many(ip, port, tls, username, password, messages))
