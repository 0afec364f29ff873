"""aiosmtpd handler hooks: the per-transaction policy (MAIL, RCPT, DATA) for an authenticated session.
Every refusal here goes through ``_refuse``: its reply from ``replies``, one log line and a metric."""

from __future__ import annotations

import logging
from typing import Any

from aiosmtpd.smtp import Session

from mta_relay import acceptance, replies, trace_headers
from mta_relay.config import Credential
from mta_relay.relay import Relay
from mta_relay.replies import Reply
from mta_relay.smtp_session import RelayEnvelope, RelaySession, scanned_names
from mta_relay.spool import new_queue_id

log = logging.getLogger("mta_relay.smtp")


def _ascii(address: str) -> bool:
    return address.isascii()


class SubmissionHandler:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def __dir__(self) -> tuple[str, ...]:
        cls: type = type(self)  # as plain ``type``: mypy takes type[SubmissionHandler] for unhashable
        return scanned_names(cls, ("auth_", "handle_"))  # scanned per connection by aiosmtpd

    def _credential(self, server: RelaySession, session: Session) -> Credential | Reply:
        """Looked up per command, so a credential removed or narrowed by a reload stops at once."""
        result = self.relay.gen.policy.current(str(session.auth_data), server.client_ip)
        if isinstance(result, Reply):
            session.authenticated = False  # the client may AUTH again with a valid credential
        return result

    def _refuse(self, server: RelaySession, envelope: RelayEnvelope, reply: Reply, **fields: Any) -> str:
        acceptance.rejected(self.relay, "smtp", reply, client_ip=server.client_ip, port=server.port_label,
                            queue_id=envelope.queue_id, **fields)
        return reply.smtp

    def _refuse_session(self, server: RelaySession, session: Session, envelope: RelayEnvelope,
                        reply: Reply) -> str:
        """The session's credential refused as the config now stands. One that still exists (suspended,
        or the address no longer allowed) owns the refusal, and its Rejection event says why; a removed
        one is nobody's."""
        owner = {} if reply is replies.AUTH_REQUIRED else {"credential": str(session.auth_data)}
        return self._refuse(server, envelope, reply, **owner)

    async def handle_MAIL(self, server: RelaySession, session: Session, envelope: RelayEnvelope, address: str,
                          mail_options: list[str]) -> str:
        envelope.queue_id = new_queue_id()  # assigned here so refusals carry an id too
        cred = self._credential(server, session)
        if isinstance(cred, Reply):
            return self._refuse_session(server, session, envelope, cred)
        smtputf8 = "SMTPUTF8" in mail_options
        if not smtputf8 and not _ascii(address):
            return self._refuse(server, envelope, replies.NEEDS_SMTPUTF8, credential=cred.username)
        reply = await acceptance.check_sender(self.relay, cred, address)
        if reply is not None:
            return self._refuse(server, envelope, reply, credential=cred.username, mail_from=address)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server: RelaySession, session: Session, envelope: RelayEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.relay.settings.limits.max_recipients:
            return self._refuse(server, envelope, replies.TOO_MANY_RCPTS)
        if not envelope.smtp_utf8 and not _ascii(address):
            return self._refuse(server, envelope, replies.NEEDS_SMTPUTF8)
        if self.relay.suppressions is not None:
            cred = self._credential(server, session)
            if isinstance(cred, Reply):
                return self._refuse_session(server, session, envelope, cred)
            reply = acceptance.suppressed(self.relay, "smtp", cred, address, client_ip=server.client_ip,
                                          queue_id=envelope.queue_id, mail_from=envelope.mail_from)
            if reply is not None:
                return reply.smtp
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: RelaySession, session: Session, envelope: RelayEnvelope) -> str:
        cred = self._credential(server, session)
        if isinstance(cred, Reply):
            return self._refuse_session(server, session, envelope, cred)
        # RCPT follows an accepted MAIL (aiosmtpd's sequence checks), and DATA's content is read by now
        assert envelope.queue_id is not None
        assert envelope.mail_from is not None
        assert envelope.original_content is not None
        protocol = trace_headers.smtp_protocol(tls=session.ssl is not None,
                                               smtp_auth=cred.authentication == "Password",
                                               smtputf8=envelope.smtp_utf8, extended=session.extended_smtp)
        # aiosmtpd's envelope keeps "<>" (its sequence checks need a true value); the spool wants ""
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        result = await acceptance.accept(
            self.relay, source="smtp", cred=cred, client_ip=server.client_ip, queue_id=envelope.queue_id,
            mail_from=mail_from, rcpts=list(envelope.rcpt_tos), message=envelope.original_content,
            smtputf8=envelope.smtp_utf8, protocol=protocol, helo=session.host_name)
        if isinstance(result, Reply):
            return result.smtp
        return f"250 2.0.0 OK queued as {result.queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        # the reply and the log carry the error type only: its text may quote client input
        log.error("session error", exc_info=error, extra={"fields": {"event": "error"}})
        return replies.INTERNAL.smtp
