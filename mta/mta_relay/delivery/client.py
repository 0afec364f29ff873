"""The SMTP client side for one next hop (aiosmtplib): connect, TLS per policy, AUTH, transactions.

aiosmtplib sends message data with CRLF line endings only and dot-stuffed, and refuses CR/LF in
commands, so nothing in an envelope or body can end DATA early or start a second transaction.
"""

from __future__ import annotations

import functools
import re
import ssl
from dataclasses import dataclass, field
from enum import Enum

import aiosmtplib
from aiosmtplib import SMTPResponseException, SMTPStatus

from mta_relay.delivery.mx import Hop
from mta_relay.delivery.outcome import RecipientOutcome, everyone, outcome

_LINE_END = re.compile(rb"\r\n|\n|\r")


def wire_form(message: bytes) -> bytes:
    """CRLF line ends only, ending in CRLF: what DATA carries (before dot-stuffing). DKIM signs this form,
    so what is signed is exactly what is sent."""
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


def hop_facts(smtp: aiosmtplib.SMTP) -> tuple[str, str, str]:
    """(IP address, TLS version, cipher) of an open session, for events; "" for what is not known.
    Read before the transaction: a failed one may close the connection."""
    transport = smtp.transport
    if transport is None:
        return "", "", ""
    peer = transport.get_extra_info("peername")
    tls = transport.get_extra_info("ssl_object")
    cipher = tls.cipher() if tls is not None else None
    return (str(peer[0]) if peer else "", (tls.version() or "") if tls is not None else "",
            cipher[0] if cipher else "")


async def open_session(hop: Hop, policy: HopPolicy) -> aiosmtplib.SMTP:
    """A connected, greeted, TLS-upgraded and authenticated client, or HopUnavailable."""
    verified = policy.verify_context or _system_context()
    smtp = aiosmtplib.SMTP(hostname=hop.address, port=policy.port, local_hostname=policy.helo_name,
                           timeout=policy.command_timeout, start_tls=False,
                           use_tls=policy.tls is TlsMode.IMPLICIT,
                           tls_context=verified if policy.tls is TlsMode.IMPLICIT else None)
    try:
        await smtp.connect(timeout=policy.connect_timeout)
        await smtp.ehlo()
        if policy.tls in (TlsMode.REQUIRED, TlsMode.OPPORTUNISTIC):
            if smtp.supports_extension("starttls"):
                context = verified if policy.tls is TlsMode.REQUIRED else _unverified_context()
                await smtp.starttls(tls_context=context, server_hostname=hop.name)
                await smtp.ehlo()
            elif policy.tls is TlsMode.REQUIRED:
                raise HopUnavailable(451, f"4.7.0 {hop.name} does not offer STARTTLS, which is required")
        if policy.credentials is not None:
            await smtp.login(policy.credentials.username, policy.credentials.password)
    except HopUnavailable:
        smtp.close()
        raise
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


def _reply_text(error: SMTPResponseException) -> str:
    return " ".join(error.message.split())


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
