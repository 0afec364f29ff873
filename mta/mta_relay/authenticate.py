"""The one authentication path of SMTP AUTH and HTTP Basic: the same rules, replies, throttle, metric and
log lines, whichever door a client uses.

``authenticate`` checks a username and secret, in this order:
1. the failed-AUTH throttle for the client's address and the username (``auth_throttle``): past the
   limit ``AUTH_THROTTLED`` (SMTP then answers 421 and closes; HTTP answers 429), below it a delay;
2. the credential (Password credentials only; SourceIP ones have no password) and the secret: a password
   (argon2id off the loop, see ``passwords``) matching the newest verifier or a previous one whose
   ``notAfter`` has not passed (a rotation's grace period, judged by this clock, so an old password
   expires even while the operator is away), or a CRAM-MD5 response; an unknown username, a wrong or
   expired secret or an SMTP mechanism the credential is not offered are all ``AUTH_FAILED`` and count
   towards the throttle;
3. ``suspended``: ``CREDENTIAL_SUSPENDED``, checked only after the secret, so the reply never tells a
   stranger that a username exists;
4. the credential's allowedIPs: ``IP_NOT_AUTHORIZED`` (the password was right, so no throttle count).

``source_ip`` is the other way in: a SourceIP credential whose allowedIPs hold the client's address; a
suspended one is refused where it is used (MAIL, or the HTTP request), by ``suspended``.

A suspended credential's refusal also becomes a Rejection event (``acceptance.rejection_event``): unlike
a wrong password it belongs to a known credential, whose owner wants to see that an app still tries.

Every refusal counts ``mta_auth_failures{reason}`` and logs one line; logs name a username only when a
credential has it (an unknown "username" may be a mistyped password), never a password or AUTH blob.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any, Literal

from mta_relay import acceptance, replies
from mta_relay.config import Credential
from mta_relay.policy import ip_in
from mta_relay.relay import Relay
from mta_relay.replies import Reply

log = logging.getLogger("mta_relay.auth")
Source = Literal["smtp", "http"]
# SASL mechanisms are offered per credential (its ``mechanisms``); HTTP Basic is not one of them and is
# open to every Password credential, like PLAIN over TLS.
BASIC = "BASIC"


@dataclass(frozen=True)
class CramMd5:
    """A CRAM-MD5 response: the challenge the relay sent and the hex digest the client answered."""

    challenge: bytes
    digest: bytes


# The password (bytes as the client sent them), a CRAM-MD5 response, or None: refused without a check
# (SASL PLAIN acting for another identity).
Secret = bytes | CramMd5 | None


def source_ip(relay: Relay, client_ip: str) -> Credential | None:
    """The SourceIP credential for this client address, if any: authenticated by address alone."""
    return relay.gen.policy.source_ip_credential(client_ip)


async def authenticate(relay: Relay, username: str, secret: Secret, client_ip: str, mechanism: str, *,
                       source: Source, port: str | None = None) -> Credential | Reply:
    """The credential, or the refusal (``AUTH_THROTTLED``, ``AUTH_FAILED``, ``IP_NOT_AUTHORIZED``)."""
    fields: dict[str, Any] = {"source": source, "client_ip": client_ip, "mechanism": mechanism}
    if port is not None:
        fields["port"] = port
    verdict = relay.throttle.verdict(client_ip, username)
    if verdict.disconnect:
        relay.metrics.auth_failures.labels(replies.AUTH_THROTTLED.reason).inc()
        log.warning("authentication throttled", extra={"fields": {
            "event": "auth_refused", "reason": replies.AUTH_THROTTLED.reason, **fields}})
        return replies.AUTH_THROTTLED
    if verdict.delay:
        await asyncio.sleep(verdict.delay)
    cred = relay.gen.policy.password_credential(username)
    fields["credential"] = username if cred is not None else None
    if cred is None or not await _secret_ok(relay, cred, mechanism, secret):
        relay.throttle.failed(client_ip, username)
        return _refused(relay, replies.AUTH_FAILED, fields)
    if cred.suspended:
        return suspended(relay, cred, client_ip, source=source, port=port)
    if cred.allowed_ips and not ip_in(client_ip, cred.allowed_ips):
        return _refused(relay, replies.IP_NOT_AUTHORIZED, fields)
    log.info("authenticated", extra={"fields": {"event": "auth", **fields}})
    return cred


async def _secret_ok(relay: Relay, cred: Credential, mechanism: str, secret: Secret) -> bool:
    if secret is None or (mechanism != BASIC and mechanism not in cred.mechanisms):
        return False
    if isinstance(secret, CramMd5):
        if not cred.cram_md5_secret:
            return False
        expected = hmac.new(cred.cram_md5_secret.encode(), secret.challenge, hashlib.md5).hexdigest()
        return hmac.compare_digest(expected.encode(), secret.digest.lower())
    for verifier in cred.verifiers(datetime.datetime.now(datetime.UTC)):
        if await relay.passwords.check(verifier, secret):
            return True
    return False


def suspended(relay: Relay, cred: Credential, client_ip: str, *, source: Source,
              port: str | None = None) -> Reply:
    """``CREDENTIAL_SUSPENDED`` for a suspended credential that proved itself (password or address):
    counted, logged and recorded as a Rejection event of that credential."""
    reply = replies.CREDENTIAL_SUSPENDED
    fields: dict[str, Any] = {"source": source, "client_ip": client_ip, "credential": cred.username}
    if port is not None:
        fields["port"] = port
    _refused(relay, reply, fields)
    acceptance.rejection_event(relay, source, reply, credential=cred.username, client_ip=client_ip)
    return reply


def _refused(relay: Relay, reply: Reply, fields: dict[str, Any]) -> Reply:
    relay.metrics.auth_failures.labels(reply.reason).inc()
    log.info("authentication refused", extra={"fields": {"event": "auth_refused", "reason": reply.reason,
                                                          **fields}})
    return reply
