"""Who may send what: the open-relay sweep, sender edge cases, domain modes (SPF against a real DNS
server on loopback), header checks, SourceIP, CRAM-MD5, argon2id credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import smtplib
import ssl

import pytest
from relaykit import CANARY, PASSWORD, RawSmtp, RelayThread

# nmap smtp-open-relay's 16 (MAIL FROM, RCPT TO) forms, with our host in place of the scanned server
NMAP_FORMS = [
    ("<>", "<relaytest@nmap.scanme.org>"),
    ("<antispam@mta.test.example>", "<relaytest@nmap.scanme.org>"),
    ("<antispam@[127.0.0.1]>", "<relaytest@nmap.scanme.org>"),
    ("<antispam@[127.0.0.1]>", "<relaytest%nmap.scanme.org@[127.0.0.1]>"),
    ("<antispam@[127.0.0.1]>", "<relaytest%nmap.scanme.org@mta.test.example>"),
    ("<antispam@[127.0.0.1]>", '<"relaytest@nmap.scanme.org">'),
    ("<antispam@[127.0.0.1]>", '<"relaytest%nmap.scanme.org">'),
    ("<antispam@[127.0.0.1]>", "<relaytest@nmap.scanme.org@[127.0.0.1]>"),
    ("<antispam@[127.0.0.1]>", '<"relaytest@nmap.scanme.org"@[127.0.0.1]>'),
    ("<antispam@[127.0.0.1]>", "<relaytest@nmap.scanme.org@mta.test.example>"),
    ("<antispam@[127.0.0.1]>", "<@[127.0.0.1]:relaytest@nmap.scanme.org>"),
    ("<antispam@[127.0.0.1]>", "<@mta.test.example:relaytest@nmap.scanme.org>"),
    ("<antispam@[127.0.0.1]>", "<nmap.scanme.org!relaytest>"),
    ("<antispam@[127.0.0.1]>", "<nmap.scanme.org!relaytest@[127.0.0.1]>"),
    ("<antispam@[127.0.0.1]>", "<nmap.scanme.org!relaytest@mta.test.example>"),
    ("<app@example.com>", "<relaytest@nmap.scanme.org>"),
]
MESSAGE = b"From: app@example.com\r\nSubject: t\r\n\r\nhi\r\n"


@pytest.mark.parametrize("port", [0, 1, 2])
def test_open_relay_sweep_refused(relay: RelayThread, tls_client: ssl.SSLContext, port: int) -> None:
    assert len(NMAP_FORMS) == 16
    plain = RawSmtp(relay.ports[port])
    plain.cmd("EHLO nmap.scanme.org")
    secure = RawSmtp(relay.ports[port])
    secure.starttls(tls_client)
    for mail_from, rcpt_to in NMAP_FORMS:
        for raw in (plain, secure):
            assert raw.cmd(f"MAIL FROM:{mail_from}").startswith("530 5.7.0"), mail_from
            assert raw.cmd(f"RCPT TO:{rcpt_to}").startswith("530 5.7.0"), rcpt_to
            assert raw.cmd("DATA").startswith("530 5.7.0")
        assert secure.cmd(f"RCPT TO:{rcpt_to}") == "530 5.7.0 Authentication required"
    assert relay.relay.spool.queue_ids() == []


def _login(relay: RelayThread, tls: ssl.SSLContext, username: str, password: str = PASSWORD,
           **kw) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", relay.ports[0], timeout=10, **kw)
    client.starttls(context=tls)
    client.ehlo("client.example")
    if username:
        client.login(username, password)
    return client


@pytest.mark.parametrize(("sender", "code"), [
    ("x@example.com.evil.com", 550),
    ("X@EXAMPLE.COM", 250),
    ("<@example.com:x@evil.com>", 550),
    ("<@evil.com:x@example.com>", 250),  # the route is ignored; the address is x@example.com
    ('"x@example.com"@evil.com', 550),
    ("x%evil.com@example.com", 250),  # an example.com address; % has no meaning here
    ("<>", 550),  # no null sender without allowNullSender (its own reply: test_relay_refusals)
    ("x@example.com.", 553),  # a trailing dot is malformed for aiosmtpd
    ("example.com", 550),  # no domain at all
    ("x@sub.example.com", 550),
])
def test_sender_edge_cases(relay: RelayThread, tls_client: ssl.SSLContext, sender: str, code: int) -> None:
    client = _login(relay, tls_client, "app")
    argument = sender if sender.startswith("<") else f"<{sender}>"
    reply_code, text = client.docmd(f"MAIL FROM:{argument}")
    assert reply_code == code, text
    if code == 550 and sender != "<>":
        assert text == b"5.7.1 [ACL] Sender domain not authorized"


def test_specific_domains_are_case_insensitive(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    client = _login(relay, tls_client, "two-domains")
    assert client.mail("a@example.org")[0] == 250
    client.rset()
    assert client.mail("a@EXAMPLE.org")[0] == 250
    client.rset()
    assert client.mail("a@example.net")[0] == 550


def test_all_cluster_domains(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    client = _login(relay, tls_client, "all-domains")
    for domain, code in (("example.com", 250), ("example.org", 250), ("example.net", 550)):
        assert client.mail(f"a@{domain}")[0] == code
        client.rset()


@pytest.mark.parametrize(("domain", "code"), [
    ("spf-ok.example", 250), ("nested.example", 250), ("spf-other.example", 550),
    ("no-spf.example", 550), ("spf-broken.example", 451),
])
def test_any_domain_checks_spf(relay: RelayThread, tls_client: ssl.SSLContext, domain: str,
                               code: int) -> None:
    client = _login(relay, tls_client, "any-domain")
    reply_code, text = client.mail(f"a@{domain}")
    assert reply_code == code, text


def test_any_domain_header_also_checked(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    client = _login(relay, tls_client, "any-domain")
    client.sendmail("a@spf-ok.example", ["r@example.net"], b"From: a@nested.example\r\n\r\nok\r\n")
    with pytest.raises(smtplib.SMTPDataError) as info:
        client.sendmail("a@spf-ok.example", ["r@example.net"], b"From: a@spf-other.example\r\n\r\nno\r\n")
    assert info.value.smtp_code == 550


@pytest.mark.parametrize(("headers", "user", "ok"), [
    (b"From: Boss <boss@evil.example>\r\nSender: app@example.com\r\n", "on-behalf", True),
    (b"From: Boss <boss@evil.example>\r\nSender: app@example.com\r\n", "app", False),
    (b"From: app@example.com\r\nSender: x@evil.example\r\n", "on-behalf", False),
    (b"From: app@example.com, other@evil.example\r\n", "app", False),
    (b"From: app@example.com\r\nFrom: app@example.com\r\n", "app", False),
    (b"Subject: no from\r\n", "app", False),
    (b"From: =?utf-8?q?App?= <APP@Example.COM>\r\n", "app", True),
])
def test_header_rules(relay: RelayThread, tls_client: ssl.SSLContext, headers: bytes, user: str,
                      ok: bool) -> None:
    client = _login(relay, tls_client, user)
    message = headers + b"Subject: t\r\n\r\nbody\r\n"
    if ok:
        assert client.sendmail("app@example.com", ["r@example.net"], message) == {}
    else:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("app@example.com", ["r@example.net"], message)
        # a malformed header section (no From, two Froms) has 5.6.0 replies of its own
        assert info.value.smtp_error in (b"5.7.1 From/Sender header not authorized",
                                         b"5.6.0 Message must have exactly one From header")


def test_source_ip_credential(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    client = _login(relay, tls_client, "", source_address=("127.0.0.3", 0))
    assert client.sendmail("app@example.org", ["r@example.net"],
                           b"From: app@example.org\r\n\r\nhi\r\n") == {}
    entry = relay.relay.spool.read(relay.relay.spool.queue_ids()[0])
    assert entry.envelope.credential == "by-source-ip"
    other = _login(relay, tls_client, "", source_address=("127.0.0.4", 0))
    assert other.mail("app@example.org") == (530, b"5.7.0 Authentication required")


def test_source_ip_alone_is_not_enough_before_tls(relay: RelayThread) -> None:
    raw = RawSmtp(relay.ports[0], source="127.0.0.3")
    raw.cmd("EHLO client.example")
    assert raw.cmd("MAIL FROM:<app@example.org>").startswith("530 5.7.0 Must issue a STARTTLS")


def test_cram_md5(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    raw = RawSmtp(relay.ports[0])
    raw.starttls(tls_client)
    challenge_line = raw.cmd("AUTH CRAM-MD5")
    assert challenge_line.startswith("334 ")
    challenge = base64.b64decode(challenge_line[4:])
    digest = hmac.new(CANARY.encode(), challenge, hashlib.md5).hexdigest()
    assert raw.cmd(base64.b64encode(f"cram {digest}".encode())).startswith("235")
    # a credential that did not opt in cannot use CRAM-MD5
    raw2 = RawSmtp(relay.ports[0])
    raw2.starttls(tls_client)
    challenge = base64.b64decode(raw2.cmd("AUTH CRAM-MD5")[4:])
    digest = hmac.new(PASSWORD.encode(), challenge, hashlib.md5).hexdigest()
    assert raw2.cmd(base64.b64encode(f"app {digest}".encode())) == "535 5.7.8 Authentication failed"


def test_auth_login_and_plain_authzid(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    raw = RawSmtp(relay.ports[1])
    raw.starttls(tls_client)
    blob = base64.b64encode(f"two-domains\0app\0{PASSWORD}".encode()).decode()
    assert raw.cmd(f"AUTH PLAIN {blob}") == "535 5.7.8 Authentication failed"  # no acting as another
    assert raw.cmd("AUTH LOGIN").startswith("334")
    assert raw.cmd(base64.b64encode(b"app")).startswith("334")
    assert raw.cmd(base64.b64encode(PASSWORD.encode())).startswith("235")


def test_argon2id_credential_and_cache(relay: RelayThread, tls_client: ssl.SSLContext) -> None:
    for _ in range(3):  # the second and third logins come from the verified-credential cache
        _login(relay, tls_client, "weak-pw", "hunter2").quit()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        _login(relay, tls_client, "weak-pw", "hunter3")
