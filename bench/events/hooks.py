"""The relay configurations the events benchmarks compare — no webhook, one taking every event, two of
which one is filtered by type — and the webhook receiver they post to (``bench.events.receiver``,
started here as a process): shared by ``bench.events.throughput`` and
``bench.frontdoor.profile_relay --webhooks``."""

from __future__ import annotations

import base64
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from mta_relay import config
from mta_relay.events.record import EventType

from bench.frontdoor.certs import CertFiles
from bench.frontdoor.children import Child, spawn

# What one accepted message with one recipient makes, delivered at the first attempt.
PER_MESSAGE = (str(EventType.RECEPTION), str(EventType.DELIVERY))


@dataclass(frozen=True)
class Hook:
    name: str
    types: tuple[str, ...] = ()  # empty: every event

    def expected(self) -> tuple[str, ...]:
        return tuple(t for t in PER_MESSAGE if not self.types or t in self.types)


@dataclass(frozen=True)
class Variant:
    """A relay configuration: ``key`` names its directories and its webhooks' URL path."""

    peer: str
    key: str
    hooks: tuple[Hook, ...]


OUTCOMES = Hook("outcomes", (str(EventType.DELIVERY), str(EventType.BOUNCE), str(EventType.EXPIRATION)))
VARIANTS = (Variant("relay, no webhook", "nohook", ()),
            Variant("relay, 1 webhook", "onehook", (Hook("all"),)),
            Variant("relay, 2 webhooks", "twohooks", (Hook("all"), OUTCOMES)))


@dataclass(frozen=True)
class Receiver:
    child: Child
    port: int
    events_file: Path  # its lines (bench.events.receiver)
    secret_file: Path  # the whsec_ secret every webhook signs with

    def events_section(self, variant: Variant, certs: CertFiles) -> config.Events:
        """The relay settings' ``events`` for ``variant``: its webhooks at this receiver, over HTTPS
        verified against the bench CA (``caFile``)."""
        return config.Events(webhooks=[
            config.Webhook(name=hook.name,
                           url=f"https://127.0.0.1:{self.port}/hooks/{variant.key}/{hook.name}",
                           secret_file=str(self.secret_file), types=list(hook.types), ca_file=str(certs.ca))
            for hook in variant.hooks])


def start_receiver(workdir: Path, certs: CertFiles) -> Receiver:
    secret_file = workdir / "webhook-secret"
    secret_file.write_text("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    secret_file.chmod(0o600)
    events_file = workdir / "events.txt"
    events_file.touch()
    child = spawn("receiver", [sys.executable, "-m", "bench.events.receiver", "--events", str(events_file),
                               "--cert", str(certs.cert_chain), "--key", str(certs.key),
                               "--secret-file", str(secret_file)], workdir, json_stdout=True)
    port = int(child.read_json_line(timeout=20)["port"])
    return Receiver(child, port, events_file, secret_file)
