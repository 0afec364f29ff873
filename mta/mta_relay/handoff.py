"""The scale-down hand-off between MTAs of one cluster: its wire format, the peer token, the pinned TLS
and the client. Before an MTA is removed it sends every queued entry to an MTA that stays with
``POST /internal/v1/handoff``; the front door of the peer stores it (``http_api``) and the delivery
process of the MTA that leaves sends it (``delivery.handoff``). Both import this module, the one owner
of the format.

A request carries one entry in the spool's own format (``spool.encode_entry``: same queue id, same
acceptance time, only the recipients still pending) in the body, and the entry's retry state in two
headers: ``Mta-Handoff-Attempts`` (failed attempts so far) and ``Mta-Handoff-Next-At`` (Unix time of the
next attempt). Peers authenticate with ``Authorization: Bearer <peer token>``. The reply is JSON
``{"queueId": ..., "result": "stored" | "duplicate"}`` with 200 once the entry is durable on the peer;
anything else means "not taken, try again" (400 names the problem with the body, never its content).

Events go too (``POST /internal/v1/events``, JSON ``{"events": [<event record>...], "outboxes":
[<webhook name>...]}``): before an entry, the events this MTA holds about it, so the peer can show the
message's whole path; after the last entry, the events still waiting for a webhook, named with their
webhooks, so the peer sends them. The peer stores each event once (by event id) and answers 200 with
``{"added": n}`` once they are committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from mta_relay import config_loader
from mta_relay.config import RelaySettings
from mta_relay.events.record import Event
from mta_relay.spool import CorruptEntry, SpoolEntry, decode_entry, encode_entry

HANDOFF_PATH = "/internal/v1/handoff"
QUEUE_PATH = "/internal/v1/queue"
EVENTS_PATH = "/internal/v1/events"
MAX_EVENTS_PER_REQUEST = 1000
CONTENT_TYPE = "application/x-mta-spool-entry"
ATTEMPTS_HEADER = "Mta-Handoff-Attempts"
NEXT_AT_HEADER = "Mta-Handoff-Next-At"
REQUEST_TIMEOUT = 30.0  # seconds for one hand-off: a message of the largest size over a cluster network
_QID = re.compile(r"^[0-9a-f]{26}$")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class BadHandoff(Exception):
    """The request is not a hand-off this relay can take; the message names the problem, never content."""


class HandoffRefused(Exception):
    """The peer answered, but not 200: the entry was not taken."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"peer answered {status}: {reason}")
        self.status = status


@dataclass(frozen=True)
class Handoff:
    entry: SpoolEntry  # the envelope lists only the recipients still pending
    attempts: int  # failed delivery attempts so far
    next_at: float  # Unix time of the next attempt


# --- the wire format ---------------------------------------------------------------------------
def encode(entry: SpoolEntry, pending: Sequence[str], attempts: int, next_at: float) -> tuple[dict[str, str],
                                                                                                bytes]:
    """Headers and body of the request that hands ``entry`` over with only ``pending`` recipients."""
    envelope = dataclasses.replace(entry.envelope, rcpts=tuple(pending))
    headers = {"Content-Type": CONTENT_TYPE, ATTEMPTS_HEADER: str(attempts), NEXT_AT_HEADER: f"{next_at:.6f}"}
    return headers, encode_entry(envelope, entry.message)


def decode(headers: Mapping[str, str], body: bytes) -> Handoff:
    """The hand-off in a request; BadHandoff saying what is wrong with it."""
    try:
        entry = decode_entry(body)
    except CorruptEntry as error:
        raise BadHandoff(f"body is not a spool entry: {error}") from None
    env = entry.envelope
    if not isinstance(env.queue_id, str) or not _QID.match(env.queue_id):
        raise BadHandoff("bad queue id")
    if not env.rcpts or not all(isinstance(r, str) and r for r in env.rcpts):
        raise BadHandoff("no pending recipients")
    if not isinstance(env.mail_from, str) or not isinstance(env.received_at, int | float):
        raise BadHandoff("bad envelope fields")
    if env.size != len(entry.message):
        raise BadHandoff("size does not match the message")
    try:
        attempts = int(headers.get(ATTEMPTS_HEADER, "0"))
        next_at = float(headers.get(NEXT_AT_HEADER, "0"))
    except ValueError:
        raise BadHandoff(f"bad {ATTEMPTS_HEADER} or {NEXT_AT_HEADER}") from None
    if attempts < 0 or not math.isfinite(next_at):
        raise BadHandoff(f"bad {ATTEMPTS_HEADER} or {NEXT_AT_HEADER}")
    return Handoff(entry, attempts, next_at)


def received_counter(registry: CollectorRegistry) -> Counter:
    """The receiving side's counter (the sending side's are in ``delivery.handoff``)."""
    return Counter("mta_handoff_received", "Entries a leaving peer MTA handed over, by result (stored, "
                   "duplicate)", ["result"], registry=registry)


def encode_events(events: Sequence[Event], outboxes: Sequence[str] = ()) -> bytes:
    return json.dumps({"events": [e.to_json() for e in events], "outboxes": list(outboxes)},
                      separators=(",", ":")).encode()


def decode_events(body: bytes) -> tuple[list[Event], list[str]]:
    """The events and outbox names of an events hand-off; BadHandoff naming what is wrong."""
    try:
        doc = json.loads(body)
        raw, outboxes = doc["events"], doc.get("outboxes", [])
    except (ValueError, KeyError, TypeError):
        raise BadHandoff("body is not an events hand-off") from None
    if not isinstance(raw, list) or len(raw) > MAX_EVENTS_PER_REQUEST:
        raise BadHandoff(f"events: a list of at most {MAX_EVENTS_PER_REQUEST}")
    if not isinstance(outboxes, list) or not all(isinstance(o, str) and o for o in outboxes):
        raise BadHandoff("outboxes: a list of webhook names")
    try:
        return [Event.from_json(e) for e in raw], outboxes
    except (ValueError, KeyError, TypeError):
        raise BadHandoff("events: not event records") from None


# --- who may talk, and to whom -------------------------------------------------------------------
def is_leaving(settings: RelaySettings, pod_name: str | None) -> bool:
    """This MTA must empty its queue into its peers."""
    return bool(pod_name) and settings.handoff is not None and pod_name in settings.handoff.leaving


def read_token(config_dir: Path, settings: RelaySettings) -> bytes | None:
    """The cluster's peer token, None without a handoff section or a readable, non-empty token file."""
    return config_loader.read_token(config_dir, settings.handoff.token_file if settings.handoff else None)


def bearer_ok(authorization: str, token: bytes | None) -> bool:
    """``Authorization: Bearer <token>`` with the peer token, compared in constant time."""
    scheme, _, value = authorization.partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "replace"), token)


def leaf_certificate(cert_pem: bytes) -> bytes:
    """DER of the first certificate of a PEM chain (tls.crt: the leaf comes first)."""
    found = _PEM_CERT.search(cert_pem)
    if found is None:
        raise ValueError("no certificate in the PEM file")
    return ssl.PEM_cert_to_DER_cert(found.group(0).decode("ascii"))


def pinned(cert_der: bytes) -> aiohttp.Fingerprint:
    """TLS to a peer trusts exactly the cluster's own certificate. The MTAs of a cluster share one
    certificate (settings ``tls.certFile``), issued for the cluster's public names, not for pod IPs: a CA
    check plus a host name check would fail on a pod IP, and a CA check alone would trust every
    certificate that CA ever issued. aiohttp compares the SHA-256 of the peer's DER certificate (CA and
    host name are not checked), which is as good as comparing the DER itself."""
    return aiohttp.Fingerprint(hashlib.sha256(cert_der).digest())


# --- the client ---------------------------------------------------------------------------------
class PeerClient:
    """Sends hand-offs to peers over HTTPS pinned to the cluster certificate. Create it on the loop."""

    def __init__(self, token: bytes, cert_der: bytes, timeout: float = REQUEST_TIMEOUT) -> None:
        self._auth = "Bearer " + token.decode("utf-8", "replace")
        self._pin = pinned(cert_der)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout),
                                              connector=aiohttp.TCPConnector(limit_per_host=8))

    async def send(self, peer_url: str, headers: Mapping[str, str], body: bytes) -> str:
        """POST one hand-off; return the peer's result ("stored" or "duplicate"). HandoffRefused for any
        answer but 200; aiohttp.ClientError or TimeoutError when there is no answer."""
        url = peer_url.rstrip("/") + HANDOFF_PATH
        async with self._session.post(url, data=body, headers={**headers, "Authorization": self._auth},
                                      ssl=self._pin) as response:
            if response.status != 200:
                try:
                    reason = str((await response.json())["error"])[:200]
                except (aiohttp.ContentTypeError, ValueError, KeyError, TypeError):
                    reason = response.reason or ""
                raise HandoffRefused(response.status, reason)
            return str((await response.json()).get("result", "stored"))

    async def send_events(self, peer_url: str, events: Sequence[Event], outboxes: Sequence[str] = ()) -> int:
        """POST events (at most MAX_EVENTS_PER_REQUEST); how many were new to the peer. HandoffRefused
        for any answer but 200."""
        url = peer_url.rstrip("/") + EVENTS_PATH
        async with self._session.post(url, data=encode_events(events, outboxes), ssl=self._pin,
                                      headers={"Content-Type": "application/json",
                                               "Authorization": self._auth}) as response:
            if response.status != 200:
                raise HandoffRefused(response.status, response.reason or "")
            return int((await response.json()).get("added", 0))

    async def close(self) -> None:
        await self._session.close()
