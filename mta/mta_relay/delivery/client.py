"""The SMTP client side for one next hop (aiosmtplib): connect, TLS per policy, AUTH, transactions.

Message data goes out in wire form (``wire_form``: CRLF line endings only) and dot-stuffed, whatever
form it is given in, and an address with CR, LF or another control character is refused (aiosmtplib's
``quote_address``), so nothing in an envelope or body can end DATA early or start a second transaction.
A next hop that offers PIPELINING gets MAIL, RCPT and DATA in one write (``pipelining``); others get one
command at a time.
"""

from __future__ import annotations

import functools
import re
import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import aiosmtplib
from aiosmtplib import SMTPResponse, SMTPResponseException, SMTPStatus
from aiosmtplib.email import quote_address

from mta_relay.delivery import dane, pipelining
from mta_relay.delivery.hop_tls import Applied, HopTls, Result, TlsReport, verify_failure
from mta_relay.delivery.mx import Hop
from mta_relay.delivery.outcome import RecipientOutcome, everyone, outcome

_LINE_END = re.compile(rb"\r\n|\n|\r")
_PERIOD = re.compile(rb"(?m)^\.")  # a line starting with "." gets one more (RFC 5321 section 4.5.2)
_RCPT_TAKEN = (SMTPStatus.completed, SMTPStatus.will_forward)


def wire_form(message: bytes) -> bytes:
    """CRLF line ends only, ending in CRLF: what DATA carries (before dot-stuffing). DKIM signs this form,
    so what is signed is exactly what is sent."""
    lines = message.count(b"\n")
    if lines == message.count(b"\r\n") == message.count(b"\r") and message.endswith(b"\r\n"):
        return message  # already so (every CR and LF in a pair): counting is 4x cheaper than rewriting
    message = _LINE_END.sub(b"\r\n", message)
    return message if message.endswith(b"\r\n") else message + b"\r\n"


class TlsMode(Enum):
    REQUIRED = "required"  # STARTTLS with a verified certificate, or no delivery
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered, unverified (RFC 7435); plaintext otherwise
    IMPLICIT = "implicit"  # TLS from the first byte (port 465), verified
    NONE = "none"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class HopPolicy:
    """How to talk to the hosts of one kind of destination."""

    helo_name: str
    port: int
    tls: TlsMode
    verify_context: ssl.SSLContext | None = None  # for REQUIRED/IMPLICIT; None = system CAs (loaded once)
    credentials: Credentials | None = None
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    # Told every hop's TLS outcome (log line, ``mta_delivery_tls_total``); see ``tls_policy.TlsObserver``.
    tls_observer: Callable[[Hop, TlsReport], None] | None = None


class HopUnavailable(Exception):
    """This host cannot take mail now (no connection, bad greeting, TLS or AUTH failure): try another."""

    def __init__(self, code: int, text: str, reply: tuple[int, str] | None = None) -> None:
        super().__init__(f"{code} {text}")
        self.code, self.text = code, text
        self.reply = reply  # the host's own (code, text) when it answered, e.g. 421 at the greeting


# Contexts are built once, not per connection: loading the CA bundle costs 15-50 ms of event-loop CPU.
@functools.cache
def _system_context() -> ssl.SSLContext:
    return ssl.create_default_context()


@functools.cache
def _unverified_context() -> ssl.SSLContext:
    # Opportunistic TLS to MX hosts: encryption without authentication beats plaintext (RFC 7435).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# The TLS outcome of each open session, kept as long as the session (pooled sessions included).
_reports: weakref.WeakKeyDictionary[aiosmtplib.SMTP, TlsReport] = weakref.WeakKeyDictionary()
_APPLIED = {TlsMode.REQUIRED: Applied.REQUIRED, TlsMode.IMPLICIT: Applied.REQUIRED,
            TlsMode.OPPORTUNISTIC: Applied.OPPORTUNISTIC, TlsMode.NONE: Applied.NONE}


def tls_report(smtp: aiosmtplib.SMTP) -> TlsReport | None:
    """What TLS policy applied to this session and what it came to."""
    return _reports.get(smtp)


def hop_facts(smtp: aiosmtplib.SMTP) -> tuple[str, str, str, str]:
    """(IP address, TLS version, cipher, TLS policy applied) of an open session, for events; "" for what
    is not known. Read before the transaction: a failed one may close the connection."""
    transport = smtp.transport
    report = _reports.get(smtp)
    applied = str(report.applied) if report is not None else ""
    if transport is None:
        return "", "", "", applied
    peer = transport.get_extra_info("peername")
    tls = transport.get_extra_info("ssl_object")
    cipher = tls.cipher() if tls is not None else None
    return (str(peer[0]) if peer else "", (tls.version() or "") if tls is not None else "",
            cipher[0] if cipher else "", applied)


def peer_chain(smtp: aiosmtplib.SMTP) -> list[bytes]:
    """The certificates the server sent (DER, its own first), as sent: not verified.

    Python 3.13 has ``SSLObject.get_unverified_chain()``; 3.11 and 3.12 have the same call on the
    private ``_sslobj`` (since 3.10). Tested in tests/delivery/test_delivery_tls_dane.py."""
    transport = smtp.transport
    tls = transport.get_extra_info("ssl_object") if transport is not None else None
    if tls is None:
        return []
    public = getattr(tls, "get_unverified_chain", None)
    if public is not None:
        return [bytes(der) for der in public()]
    chain = tls._sslobj.get_unverified_chain() or []  # private before 3.13: see the docstring
    return [cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in chain]  # type: ignore[attr-defined]


def _observe(policy: HopPolicy, hop: Hop, report: TlsReport) -> None:
    if policy.tls_observer is not None:
        policy.tls_observer(hop, report)


async def open_session(hop: Hop, policy: HopPolicy) -> aiosmtplib.SMTP:
    """A connected, greeted, TLS-upgraded and authenticated client, or HopUnavailable. A hop with a TLS
    requirement (``hop.tls``: MTA-STS, DANE, a route's policy) is held to it; others to ``policy.tls``."""
    if hop.tls is not None:
        return await _open_required(hop, policy, hop.tls)
    verified = policy.verify_context or _system_context()
    smtp = aiosmtplib.SMTP(hostname=hop.address, port=policy.port, local_hostname=policy.helo_name,
                           timeout=policy.command_timeout, start_tls=False,
                           use_tls=policy.tls is TlsMode.IMPLICIT,
                           tls_context=verified if policy.tls is TlsMode.IMPLICIT else None)
    applied = _APPLIED[policy.tls]
    try:
        await smtp.connect(timeout=policy.connect_timeout)
        await smtp.ehlo()
        offered = policy.tls is TlsMode.IMPLICIT or smtp.supports_extension("starttls")
        if policy.tls in (TlsMode.REQUIRED, TlsMode.OPPORTUNISTIC):
            if smtp.supports_extension("starttls"):
                context = verified if policy.tls is TlsMode.REQUIRED else _unverified_context()
                await smtp.starttls(tls_context=context, server_hostname=hop.name)
                await smtp.ehlo()
            elif policy.tls is TlsMode.REQUIRED:
                _observe(policy, hop, TlsReport(applied, Result.STARTTLS_NOT_SUPPORTED, False))
                raise HopUnavailable(451, f"4.7.0 {hop.name} does not offer STARTTLS, which is required")
        secure = policy.tls is TlsMode.IMPLICIT or (offered and policy.tls is not TlsMode.NONE)
        _reports[smtp] = report = TlsReport(applied, (Result.VERIFIED if applied is Applied.REQUIRED else
                                                      Result.UNVERIFIED) if secure else Result.PLAINTEXT,
                                            offered)
        _observe(policy, hop, report)
        if policy.credentials is not None:
            await smtp.login(policy.credentials.username, policy.credentials.password)
    except HopUnavailable:
        smtp.close()
        raise
    except ssl.SSLCertVerificationError as error:
        smtp.close()
        _observe(policy, hop, TlsReport(applied, verify_failure(error), True, error.verify_message))
        raise HopUnavailable(451, f"4.7.5 {hop.name} [{hop.address}]: certificate not valid "
                                  f"({error.verify_message})") from None
    except SMTPResponseException as error:
        smtp.close()
        # Greeting, STARTTLS or AUTH refused: a host (or our smarthost settings) problem, not the
        # message's; retry until the max retry age rather than bounce at once.
        raise HopUnavailable(451, f"4.4.0 {hop.name} said: {error.code} {_reply_text(error)}",
                             (error.code, _reply_text(error))) from None
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as error:
        smtp.close()
        raise HopUnavailable(451, f"4.4.1 {hop.name} [{hop.address}]: {type(error).__name__}") from None
    return smtp


class _CheckFailed(Exception):
    """STARTTLS happened and the check the policy asks for failed (the session is closed)."""

    def __init__(self, report: TlsReport) -> None:
        super().__init__(report.detail)
        self.report = report


async def _open_required(hop: Hop, policy: HopPolicy, need: HopTls) -> aiosmtplib.SMTP:
    """``open_session`` for a hop with a TLS requirement. MTA-STS enforce, DANE and Required refuse the
    hop (HopUnavailable, 4.7.5: the next host is tried, then the recipients are deferred) when the check
    fails, never falling back to plaintext; MTA-STS testing reports the failure and connects again
    without the check (a failed handshake leaves nothing to continue on)."""
    try:
        return await _connect_checked(hop, policy, need, check=True)
    except _CheckFailed as failed:
        _observe(policy, hop, failed.report)
        if need.applied is not Applied.MTA_STS_TESTING:
            raise HopUnavailable(451, f"4.7.5 {hop.name} [{hop.address}]: TLS required by {need.applied}: "
                                      f"{failed.report.result} ({failed.report.detail})") from None
        smtp = await _connect_checked(hop, policy, need, check=False)
        _reports[smtp] = failed.report
        return smtp


async def _connect_checked(hop: Hop, policy: HopPolicy, need: HopTls, check: bool) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname=hop.address, port=policy.port, local_hostname=policy.helo_name,
                           timeout=policy.command_timeout, start_tls=False, use_tls=False)
    try:
        await smtp.connect(timeout=policy.connect_timeout)
        await smtp.ehlo()
        offered = smtp.supports_extension("starttls")
        if need.applied is Applied.NONE or not offered:
            report = TlsReport(need.applied, Result.PLAINTEXT if need.applied in (
                Applied.NONE, Applied.OPPORTUNISTIC) else Result.STARTTLS_NOT_SUPPORTED, offered)
            if need.requires_tls:
                raise _CheckFailed(report)
        else:
            report = await _starttls_checked(smtp, hop, policy, need, check)
            await smtp.ehlo()
        if check:
            _reports[smtp] = report
            _observe(policy, hop, report)
        if policy.credentials is not None:
            await smtp.login(policy.credentials.username, policy.credentials.password)
    except _CheckFailed:
        smtp.close()
        raise
    except SMTPResponseException as error:
        smtp.close()
        raise HopUnavailable(451, f"4.4.0 {hop.name} said: {error.code} {_reply_text(error)}") from None
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as error:
        smtp.close()
        raise HopUnavailable(451, f"4.4.1 {hop.name} [{hop.address}]: {type(error).__name__}") from None
    return smtp


async def _starttls_checked(smtp: aiosmtplib.SMTP, hop: Hop, policy: HopPolicy, need: HopTls,
                            check: bool) -> TlsReport:
    """STARTTLS as ``need`` asks: PKIX-verified for the host name (Required, MTA-STS), unverified and
    then matched against the TLSA records (DANE), unverified (opportunistic, or ``check`` off)."""
    if check and need.pkix:
        try:
            await smtp.starttls(tls_context=policy.verify_context or _system_context(),
                                server_hostname=hop.name)
        except ssl.SSLCertVerificationError as error:
            raise _CheckFailed(TlsReport(need.applied, verify_failure(error), True,
                                         error.verify_message)) from None
        except ssl.SSLError as error:
            raise _CheckFailed(TlsReport(need.applied, Result.VALIDATION_FAILURE, True,
                                         type(error).__name__)) from None
        return TlsReport(need.applied, Result.VERIFIED, True)
    await smtp.starttls(tls_context=_unverified_context(), server_hostname=hop.name)
    if need.applied is not Applied.DANE:
        return TlsReport(need.applied, Result.UNVERIFIED, True)
    if not dane.usable(list(need.tlsa)):  # RFC 7672 §2.2: TLS still required, not authenticated
        return TlsReport(need.applied, Result.UNVERIFIED, True, "no usable TLSA record")
    match = dane.check_chain(list(need.tlsa), peer_chain(smtp), list(need.names))
    if not match.ok:
        raise _CheckFailed(TlsReport(need.applied, Result.TLSA_INVALID, True, match.detail))
    return TlsReport(need.applied, Result.VERIFIED, True, match.detail)


def _reply_text(reply: SMTPResponse | SMTPResponseException) -> str:
    return " ".join(reply.message.split())


def _needs_smtputf8(sender: str, recipients: list[str]) -> bool:
    return not all(address.isascii() for address in [sender, *recipients])


@dataclass(frozen=True)
class TransactionResult:
    """What one transaction came to.

    ``lost_at_mail``: the connection broke at MAIL FROM (lost, or 421 "closing channel") before any
    recipient or byte of the message was sent, so the transaction may safely run again elsewhere.
    """

    outcomes: list[RecipientOutcome]
    reusable: bool
    lost_at_mail: bool = False


async def transact(smtp: aiosmtplib.SMTP, sender: str, recipients: list[str], message: bytes,
                   remote: str) -> TransactionResult:
    """One mail transaction: an outcome per recipient and whether the connection is reusable.

    Connection trouble mid-transaction defers every recipient; if it strikes after the final dot was
    sent, the next hop may already have the message: the documented duplicate window.
    """
    options: list[str] = []
    encoding = "ascii"
    if _needs_smtputf8(sender, recipients):
        if not smtp.supports_extension("smtputf8"):
            return TransactionResult(everyone(recipients, 553, "5.6.7 next hop does not support SMTPUTF8",
                                              remote), reusable=True)
        options.append("SMTPUTF8")
        encoding = "utf-8"
    if smtp.supports_extension("8bitmime") and not message.isascii():
        options.append("BODY=8BITMIME")
    if smtp.supports_extension("size"):
        options.append(f"SIZE={len(message)}")
    if smtp.supports_extension("pipelining"):
        return await _pipelined(smtp, sender, recipients, message, remote, options, encoding)
    try:
        await smtp.mail(sender, options=options, encoding=encoding)
    except SMTPResponseException as error:
        outcomes = everyone(recipients, error.code, _reply_text(error), remote)
        if error.code == SMTPStatus.domain_unavailable:  # aiosmtplib has closed the connection
            return TransactionResult(outcomes, reusable=False, lost_at_mail=True)
        return TransactionResult(outcomes, await _reset(smtp))
    except (aiosmtplib.SMTPException, OSError) as error:
        smtp.close()
        return TransactionResult(_lost(recipients, {}, remote, error), reusable=False, lost_at_mail=True)
    return await _recipients_and_data(smtp, recipients, message, remote, encoding)


async def _recipients_and_data(smtp: aiosmtplib.SMTP, recipients: list[str], message: bytes, remote: str,
                               encoding: str) -> TransactionResult:
    """The rest of a transaction after MAIL FROM was accepted."""
    results: dict[str, RecipientOutcome] = {}
    accepted: list[str] = []
    try:
        for rcpt in recipients:
            try:
                await smtp.rcpt(rcpt, encoding=encoding)
                accepted.append(rcpt)
            except SMTPResponseException as error:
                results[rcpt] = outcome(rcpt, error.code, _reply_text(error), remote)
        if not accepted:
            return TransactionResult([results[r] for r in recipients], await _reset(smtp))
        try:
            reply = await smtp.data(message)
            for rcpt in accepted:
                results[rcpt] = outcome(rcpt, reply.code, " ".join(reply.message.split()), remote)
        except SMTPResponseException as error:
            for rcpt in accepted:
                results[rcpt] = outcome(rcpt, error.code, _reply_text(error), remote)
            return TransactionResult([results[r] for r in recipients], await _reset(smtp))
    except (aiosmtplib.SMTPException, OSError) as error:
        smtp.close()
        return TransactionResult(_lost(recipients, results, remote, error), reusable=False)
    return TransactionResult([results[r] for r in recipients], reusable=True)


async def _pipelined(smtp: aiosmtplib.SMTP, sender: str, recipients: list[str], message: bytes, remote: str,
                     options: list[str], encoding: str) -> TransactionResult:
    """The transaction in two round trips (RFC 2920): MAIL, every RCPT and DATA in one write, then the
    message once their replies show a recipient was taken."""
    mail_command = b" ".join([b"MAIL FROM:" + _quoted(sender, encoding),
                              *(option.encode("ascii") for option in options)])
    commands = [mail_command, *(b"RCPT TO:" + _quoted(r, encoding) for r in recipients), b"DATA"]
    mail: SMTPResponse | None = None
    answers: list[SMTPResponse] = []
    try:
        with pipelining.lent(smtp) as (transport, replies):
            transport.write(b"\r\n".join(commands) + b"\r\n")
            mail = await replies.next()
            for _ in recipients:
                answers.append(await replies.next())
            data = await replies.next()
            taken = [r for r, reply in zip(recipients, answers, strict=True) if reply.code in _RCPT_TAKEN]
            accepted = taken if mail.code == SMTPStatus.completed else []
            final = None
            if data.code == SMTPStatus.start_input:
                # With no recipient taken, an empty message ends DATA (RFC 2920 section 3.1): nobody gets it.
                transport.write(_dot_stuffed(wire_form(message)) + b".\r\n" if accepted else b".\r\n")
                final = await replies.next()
    except (aiosmtplib.SMTPException, OSError) as error:
        smtp.close()
        if mail is not None and mail.code != SMTPStatus.completed:  # MAIL's refusal stands (a 421 closes)
            refusal = everyone(recipients, mail.code, _reply_text(mail), remote)
            return TransactionResult(refusal, reusable=False,
                                     lost_at_mail=mail.code == SMTPStatus.domain_unavailable)
        # Recipients answered before the loss keep a refusal; the others (none got the message) are deferred.
        refused = {r: outcome(r, reply.code, _reply_text(reply), remote)
                   for r, reply in zip(recipients, answers, strict=False) if reply.code not in _RCPT_TAKEN}
        return TransactionResult(_lost(recipients, refused, remote, error), reusable=False,
                                 lost_at_mail=mail is None)
    if mail.code != SMTPStatus.completed:
        outcomes = everyone(recipients, mail.code, _reply_text(mail), remote)
        if mail.code == SMTPStatus.domain_unavailable:  # 421: the server is closing the connection
            smtp.close()
            return TransactionResult(outcomes, reusable=False, lost_at_mail=True)
        return TransactionResult(outcomes, await _reset(smtp))
    # The message went out and was answered, or DATA was refused: that reply stands for those taken.
    last = final if final is not None and accepted else data
    results = {r: outcome(r, last.code, _reply_text(last), remote) if r in accepted
               else outcome(r, reply.code, _reply_text(reply), remote)
               for r, reply in zip(recipients, answers, strict=True)}
    outcomes = [results[r] for r in recipients]
    if last is final and final.code == SMTPStatus.completed:
        return TransactionResult(outcomes, reusable=True)
    return TransactionResult(outcomes, await _reset(smtp))


@functools.lru_cache(maxsize=4096)
def _quoted(address: str, encoding: str) -> bytes:
    """``<address>`` for MAIL and RCPT, encoded. Cached: aiosmtplib's ``quote_address`` parses the address
    (email.utils) on every call, 14 us, for the same few senders message after message. A refused address
    raises (ValueError, UnicodeEncodeError) and is not cached."""
    return quote_address(address).encode(encoding)


def _dot_stuffed(message: bytes) -> bytes:
    """``message`` (wire form: every line ends in CRLF) with a line's leading "." doubled. A line starts
    with "." only at the start or after a LF: looking for those two is 50x cheaper than the substitution,
    which most messages do not need."""
    return _PERIOD.sub(b"..", message) if message.startswith(b".") or b"\n." in message else message


def _lost(recipients: list[str], results: dict[str, RecipientOutcome], remote: str,
          error: Exception) -> list[RecipientOutcome]:
    """Recipients without an answer yet are deferred: the connection went away."""
    lost = f"4.4.2 connection to {remote} lost: {type(error).__name__}"
    return [results.get(r) or outcome(r, 451, lost, remote) for r in recipients]


async def _reset(smtp: aiosmtplib.SMTP) -> bool:
    """RSET after a refused transaction so the connection can carry the next one."""
    if not smtp.is_connected:
        return False
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
        return False
    return True
