"""Send one test message through an MTA cluster: STARTTLS (the relay requires it), AUTH, one recipient."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Submission:
    host: str
    port: int
    sender: str
    recipient: str
    username: str | None  # None: a SourceIP credential, recognised by the client's address alone
    password: str | None
    tls_context: ssl.SSLContext
    tls_server_name: str  # the name the certificate is checked against (the Cluster's hostname)


def compose_message(sender: str, recipient: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = "mta-operator test message"
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content("A test message sent with `kubectl mta send`.\n")
    return message


def tls_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """The system trust store (plus ca_file), or no verification at all when the user asks for it."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _send(submission: Submission, message: EmailMessage) -> str:
    smtp = aiosmtplib.SMTP(hostname=submission.host, port=submission.port, start_tls=False,
                           timeout=TIMEOUT_SECONDS)
    async with smtp:
        await smtp.starttls(server_hostname=submission.tls_server_name, tls_context=submission.tls_context)
        if submission.username is not None:
            await smtp.login(submission.username, submission.password or "")
        _, reply = await smtp.send_message(message, sender=submission.sender,
                                           recipients=[submission.recipient])
    return reply


def send(submission: Submission) -> str:
    """Send the test message; the server's final reply, such as "2.0.0 Ok: queued as ...". Raises
    aiosmtplib.SMTPException (its text is the server's reply, never the password) when refused."""
    return asyncio.run(_send(submission, compose_message(submission.sender, submission.recipient)))
