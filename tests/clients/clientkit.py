"""Kit for the clients tier: the test message, a real ``mta-relay`` process with every kind of listener,
the checks that a message arrived byte for byte, and the programs the tier runs.

The relay's config is written through its owners (``mta_relay.config`` models, ``mta_relay.shards``), so a
change of format shows up here as a failure, not as a config the relay refuses in silence.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import pwd
import random
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.resolver
import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mta_relay.config import (
    Credential,
    Delivery,
    DkimKey,
    Domains,
    HttpListener,
    Limits,
    Queue,
    RelaySettings,
    SendingDomain,
    Smarthost,
    SmtpListener,
    TlsFiles,
)
from mta_relay.passwords import fast_verifier
from mta_relay.shards import render_shards
from support.dnsserver import DnsServer
from support.ports import free_port
from support.smtp_receiver import Transaction
from support.tls import client_context, write_ca_file, write_server_cert

RELAY_BIN = str(Path(sys.executable).parent / "mta-relay")
HOSTNAME = "mta.test.example"
DOMAIN = "example.com"
SELECTOR = "clients"
SENDER = f"app@{DOMAIN}"

# Credentials. Generated passwords are 32 characters; CRAM-MD5 needs the secret in clear, and a client
# keys its HMAC with the password, so for the CRAM-MD5 credential the two are the same string.
APP_USER, APP_PASSWORD = "app", "Pw-" + "c" * 29
CRAM_USER, CRAM_PASSWORD = "cram-app", "Cr-" + "m" * 29
POSTFIX_USER, POSTFIX_PASSWORD = "postfix-peer", "Pf-" + "x" * 29

ATTACHMENT = random.Random(20261122).randbytes(150 * 1024)
TEXT_PART = (
    "Grüße aus Köln: ein 8-Bit-Textteil, ünïcödé ✓ — não é ASCII.\n"
    ".a line that starts with a dot\n"
    "..two dots\n"
    ".\n"
    "the line above is a lone dot, and so is the last line of this part\n"
    " . and this one starts with a space, then a dot\n"
    ".\n"
)


def message(token: str, recipient: str, *, date_and_id: bool) -> bytes:
    """A multipart message with an 8-bit UTF-8 text part (lines starting with a dot, one a lone dot) and a
    150 KB base64 attachment, CRLF line ends: what a client means to send. ``date_and_id`` False leaves
    ``Date`` and ``Message-ID`` for the relay to add."""
    boundary = "=_part_" + hashlib.sha256(token.encode()).hexdigest()[:12]  # keeps the line short
    lines = [f"From: App <{SENDER}>", f"To: Bob <{recipient}>",
             f"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= {token}"]
    if date_and_id:
        lines += ["Date: Sun, 22 Nov 2026 03:00:00 +0000", f"Message-ID: <{token}@{DOMAIN}>"]
    lines += ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{boundary}"', "",
              "This is a multi-part message in MIME format.", "", f"--{boundary}",
              "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "",
              *TEXT_PART.splitlines(), f"--{boundary}",
              'Content-Type: application/octet-stream; name="blob.bin"', "Content-Transfer-Encoding: base64",
              'Content-Disposition: attachment; filename="blob.bin"', ""]
    encoded = base64.b64encode(ATTACHMENT).decode()
    lines += [encoded[i:i + 76] for i in range(0, len(encoded), 76)]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode()


def lf(data: bytes) -> bytes:
    """The same message with bare LF line ends, as a file on a Unix disk holds it."""
    return data.replace(b"\r\n", b"\n")


# --- what arrived ---------------------------------------------------------------------------------------
_FIELD_START = re.compile(rb"[!-9;-~]+:")  # a field name (printable ASCII but ':') and its colon


def header_fields(data: bytes) -> tuple[list[bytes], bytes]:
    """(the header fields, each with its folded lines and CRLFs, in order; the blank line and body)."""
    fields: list[bytes] = []
    pos = 0
    while not data.startswith(b"\r\n", pos):
        end = data.index(b"\r\n", pos) + 2
        line = data[pos:end]
        if line[:1] in (b" ", b"\t"):
            assert fields, f"header starts with a continuation line: {line!r}"
            fields[-1] += line
        else:
            assert _FIELD_START.match(line), f"not a header field: {line[:80]!r}"
            fields.append(line)
        pos = end
    return fields, data[pos:]


def field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].decode().lower()


@dataclass(frozen=True)
class Arrived:
    """The message as the receiver got it, split into what the relay added and the rest."""

    dkim_signature: bytes
    received: bytes  # the relay's Received field
    appended: dict[str, bytes]  # Date / Message-ID the relay added at the end of the header
    rest: bytes  # everything else, in order: must equal what the client put on the wire


def take_apart(data: bytes, submitted: bytes) -> Arrived:
    """Removes the relay's additions: DKIM-Signature then its Received at the top, and at the end of the
    header ``Date`` / ``Message-ID`` only when ``submitted`` has none. Fails if one is missing or out of
    place."""
    fields, body = header_fields(data)
    sent = {field_name(f) for f in header_fields(submitted)[0]}
    names = [field_name(f) for f in fields]
    assert names[:2] == ["dkim-signature", "received"], f"top of the header: {names[:4]}"
    assert b"by " + HOSTNAME.encode() in fields[1], fields[1]
    dkim_field, received, *fields = fields
    appended: dict[str, bytes] = {}
    for name in ("message-id", "date"):  # the relay appends Date, then Message-ID
        if name not in sent:
            assert fields, f"the relay should have added {name}"
            assert field_name(fields[-1]) in ("date", "message-id"), (
                f"the relay should have added {name} at the end of the header: {names[-3:]}")
            last = fields.pop()
            appended[field_name(last)] = last
    assert set(appended) == {"date", "message-id"} - sent, appended
    return Arrived(dkim_field, received, appended, b"".join(fields) + body)


def assert_arrived_intact(tx: Transaction, submitted: bytes, dns_server: DnsServer, *,
                          hops: Sequence[str] = ()) -> Arrived:
    """``tx`` is ``submitted`` plus only the relay's fields (and, for ``hops``, one Received field each
    in front, e.g. a Postfix the message came through), the DKIM signature verifies, and the trace and
    identification fields every message must carry are there."""
    arrived = take_apart(tx.data, submitted)
    rest = arrived.rest
    for hop in hops:
        first, _ = header_fields(rest)
        assert field_name(first[0]) == "received", first[0]
        assert hop.encode() in first[0], first[0]
        rest = rest[len(first[0]):]
    assert rest == submitted, first_difference(rest, submitted)
    names = [field_name(f) for f in header_fields(tx.data)[0]]
    for required in ("received", "date", "message-id"):
        assert names.count(required) >= 1, f"no {required} field: {names}"
    assert names.count("date") == 1, names
    assert names.count("message-id") == 1, names
    assert verify_dkim(tx.data, dns_server), "DKIM signature does not verify"
    assert f"d={DOMAIN};".encode() in b"".join(arrived.dkim_signature.split())
    return arrived


def first_difference(got: bytes, want: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
              min(len(got), len(want)))
    return (f"arrived {len(got)} bytes, submitted {len(want)}; first difference at byte {at}: "
            f"arrived {got[max(0, at - 40):at + 40]!r}, submitted {want[max(0, at - 40):at + 40]!r}")


# --- DKIM -----------------------------------------------------------------------------------------------
def dkim_key() -> tuple[bytes, str]:
    """(PKCS#8 PEM private key, the DKIM TXT value) of a fresh 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


def publish_dkim(dns_server: DnsServer, txt: str) -> None:
    chunks = " ".join(f'"{txt[i:i + 250]}"' for i in range(0, len(txt), 250))  # TXT strings: 255 octets
    dns_server.add(f"{SELECTOR}._domainkey.{DOMAIN}", "TXT", chunks)


def verify_dkim(data: bytes, dns_server: DnsServer) -> bool:
    """dkimpy's verification, its key looked up over DNS in ``dns_server``."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [dns_server.address], dns_server.port

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    return dkim.verify(data, dnsfunc=txt)


# --- the relay ------------------------------------------------------------------------------------------
class Relay:
    """A real ``mta-relay`` over a config directory: two STARTTLS ports, one implicit-TLS port, HTTPS, a
    DKIM key for example.com, delivery by smarthost to ``smarthost_port`` with required (verified) TLS."""

    def __init__(self, workdir: Path, ca: trustme.CA, smarthost_port: int, dkim_pem: bytes) -> None:
        self.dir = workdir / "config"
        (self.dir / "credentials").mkdir(parents=True)
        self.ca_file = write_ca_file(ca, workdir / "ca.pem")
        self.client_tls: ssl.SSLContext = client_context(ca)
        cert, key = write_server_cert(ca, workdir / "tls")
        (workdir / "dkim.pem").write_bytes(dkim_pem)
        self.submission_port, self.alt_port, self.implicit_port = free_port(), free_port(), free_port()
        self.http_port = free_port()
        settings = RelaySettings(
            hostname=HOSTNAME,
            smtp_listeners=[SmtpListener(port=self.submission_port, public_port=587, address="127.0.0.1"),
                            SmtpListener(port=self.alt_port, public_port=2587, address="127.0.0.1"),
                            SmtpListener(port=self.implicit_port, public_port=465, address="127.0.0.1",
                                         implicit_tls=True)],
            http=HttpListener(port=self.http_port, address="127.0.0.1"),
            tls=TlsFiles(cert_file=str(cert), key_file=str(key)),
            domains=[SendingDomain(domain=DOMAIN, dkim=DkimKey(selector=SELECTOR,
                                                              key_file=str(workdir / "dkim.pem")))],
            limits=Limits(shutdown_grace_seconds=1),
            queue=Queue(path=str(workdir / "spool")),
            delivery=Delivery(mode="Smarthost", smarthost=Smarthost(host="127.0.0.1", port=smarthost_port,
                                                                    tls="STARTTLS")))
        (self.dir / "relay.yaml").write_text(yaml.safe_dump(
            settings.model_dump(mode="json", by_alias=True, exclude_defaults=True)))
        domains = Domains(mode="Specific", names=[DOMAIN])
        credentials = [
            Credential(username=APP_USER, password_verifier=fast_verifier(APP_PASSWORD), domains=domains),
            Credential(username=CRAM_USER, password_verifier=fast_verifier(CRAM_PASSWORD), domains=domains,
                       mechanisms=["PLAIN", "LOGIN", "CRAM-MD5"], cram_md5_secret=CRAM_PASSWORD),
            Credential(username=POSTFIX_USER, password_verifier=fast_verifier(POSTFIX_PASSWORD),
                       domains=domains),
        ]
        for name, text in render_shards(credentials).items():
            (self.dir / "credentials" / name).write_text(text)
        self.log = workdir / "relay.log"
        # the delivery side verifies the smarthost's certificate against the test CA
        self.env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "SSL_CERT_FILE": str(self.ca_file)}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.http_port}"

    def start(self) -> Relay:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([RELAY_BIN, "--config", str(self.dir)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=self.env)
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"mta-relay exited with {self.proc.returncode}: "
                                     f"{self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mta-relay not ready within 30 s: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.https_url}/readyz", context=self.client_tls,  # noqa: S310
                                        timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- the clients ----------------------------------------------------------------------------------------
def program(name: str, package: str) -> str:
    """The path of ``name``; a clear failure naming the Debian (or npm) package when it is missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/bin")
    if found is None:
        pytest.fail(f"{name} is not installed: this tier needs the package {package} "
                    "(.ci/run installs it)", pytrace=False)
    return found


def run(argv: Sequence[str], *, input: bytes | None = None, timeout: float = 120,
        cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Runs a client; on a non-zero exit fails with the program's name, exit code and output (not its
    arguments, which hold the test password)."""
    done = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, cwd=cwd, env=env,
                          check=False)
    if done.returncode != 0:
        pytest.fail(f"{Path(argv[0]).name} exited with {done.returncode}\n"
                    f"stdout: {done.stdout.decode(errors='replace')[-3000:]}\n"
                    f"stderr: {done.stderr.decode(errors='replace')[-3000:]}", pytrace=False)
    return done


def arrival(receiver, recipient: str, within: float = 30) -> Transaction:
    """The one transaction the smarthost got for ``recipient`` (each test sends to its own)."""
    deadline = time.monotonic() + within
    while True:
        found = [tx for tx in receiver.transactions if recipient in tx.rcpt_tos]
        if found:
            assert len(found) == 1, f"{len(found)} transactions for {recipient}"
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing arrived for {recipient} within {within:.0f} s "
                                 f"({len(receiver.transactions)} transactions in all)")
        time.sleep(0.05)


# --- a Postfix relaying through the relay ---------------------------------------------------------------
POSTFIX_HOSTNAME = "postfix.clients.test"
# Postfix's SMTP client with SASL to the relay, TLS required, every message to the relay (relayhost).
# Cyrus SASL picks the strongest mechanism offered, CRAM-MD5 when the relay advertises it (see the
# curl tests for what that does to a PLAIN/LOGIN-only credential): the filter keeps it to PLAIN/LOGIN.
POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = clients.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{relay_port}
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:{root}/etc/sasl_passwd
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_sasl_mechanism_filter = {mechanisms}
smtp_tls_security_level = encrypt
smtp_tls_CAfile = {ca}
maillog_file = {root}/log/postfix.log
maillog_file_prefixes = {root}
biff = no
"""


class PrivatePostfix:
    """A Postfix instance of its own (config, queue and log under ``root``; the machine's mail system is
    not touched), run as root the way bench/frontdoor/postfix_peer.py runs its peer: ``master -d`` in
    the foreground, a child of the test. Mail comes in through its ``sendmail -C``."""

    def __init__(self, root: Path, relay: Relay, username: str, password: str,
                 mechanisms: str = "plain, login") -> None:
        from bench.frontdoor.postfix_peer import MASTER, MASTER_CF, QUEUE_DIRS, _own_dir

        self.root, self.master = root, MASTER
        postfix, postdrop = pwd.getpwnam("postfix"), grp.getgrnam("postdrop")
        for sub in ("etc", "log"):
            (root / sub).mkdir(parents=True)
        root.parent.chmod(0o755)  # the postfix user walks into its queue under here
        root.chmod(0o755)
        self.smtpd_port = free_port()  # postfix_peer's master.cf has an smtpd; this test feeds sendmail
        (root / "etc/main.cf").write_text(POSTFIX_MAIN_CF.format(
            root=root, hostname=POSTFIX_HOSTNAME, relay_port=relay.submission_port, mechanisms=mechanisms,
            ca=relay.ca_file))
        (root / "etc/master.cf").write_text(MASTER_CF.format(port=self.smtpd_port)
                                            + "pickup    unix  n - n 60 1 pickup\n")
        passwords = root / "etc/sasl_passwd"
        passwords.write_text(f"[127.0.0.1]:{relay.submission_port} {username}:{password}\n")
        passwords.chmod(0o600)
        queue = root / "queue"
        queue.mkdir(mode=0o755)
        (queue / "pid").mkdir(mode=0o755)
        for name in QUEUE_DIRS:
            _own_dir(queue / name, 0o700, postfix.pw_uid, 0)
        _own_dir(queue / "maildrop", 0o730, postfix.pw_uid, postdrop.gr_gid)
        _own_dir(queue / "public", 0o710, postfix.pw_uid, postdrop.gr_gid)
        _own_dir(root / "data", 0o700, postfix.pw_uid, postfix.pw_gid)
        self.child = None

    @property
    def log(self) -> str:
        path = self.root / "log/postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> PrivatePostfix:
        from bench.frontdoor.children import spawn, wait_for_port

        self.child = spawn("postfix-master", [self.master, "-d", "-c", str(self.root / "etc")], self.root)
        wait_for_port(self.child, self.smtpd_port)
        return self

    def sendmail(self, sender: str, recipient: str, content: bytes) -> None:
        """Postfix's own CLI: ``sendmail -C <config dir> -i -f sender -- recipient`` with the message on
        stdin (``-i``: a lone dot does not end the input)."""
        run([program("sendmail", "postfix"), "-C", str(self.root / "etc"), "-i", "-f", sender, "--",
             recipient], input=content, timeout=60)

    def outcome(self, recipient: str, within: float = 60) -> str:
        """The log line of Postfix's first delivery attempt to ``recipient`` (sent, deferred, bounced)."""
        deadline = time.monotonic() + within
        while True:
            lines = [line for line in self.log.splitlines()
                     if f"to=<{recipient}>" in line and "status=" in line]
            if lines:
                return lines[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix made no attempt for {recipient} within {within:.0f} s; "
                                     f"its log:\n{self.log[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
