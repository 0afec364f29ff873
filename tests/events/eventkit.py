"""Events with realistic fields; a child process that writes the store (to kill it, or to write from
two processes at once); a webhook receiver that checks every request with ``standardwebhooks``."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from mta_relay.events.record import Event, EventType, Response
from mta_relay.events.webhooks import decode_payload
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from support.ports import free_port

_SEQ = itertools.count()


def event(kind: EventType = EventType.DELIVERY, *, recipient: str = "bob@example.net",
          sender: str = "alice@example.com", credential: str = "app", message_id: str = "",
          queue_id: str = "", timestamp: float | None = None) -> Event:
    n = next(_SEQ)
    return Event(type=kind, queue_id=queue_id or f"{n:026x}", sender=sender, recipient=recipient,
                 credential=credential, timestamp=time.time() if timestamp is None else timestamp,
                 created=time.time() - 1, message_id=message_id or f"<{n}.test@example.com>",
                 cluster="mail", mta="mail-0", size=2048, num_attempts=1,
                 response=Response.parse(250, "2.0.0 Ok: queued as 4Xyz"),
                 peer_address={"name": "mx.example.net", "addr": "192.0.2.7"},
                 delivery_protocol="ESMTP", tls_protocol_version="TLSv1.3",
                 tls_cipher="TLS_AES_256_GCM_SHA384")


def child_argv(code: str, *args: str) -> list[str]:
    """A child Python running ``code``, which can import this kit; ``sys.argv[1:]`` are ``args``."""
    here = Path(__file__).resolve().parent
    paths = [str(here), str(here.parent)]  # this kit, and tests/ for the support package it imports
    return [sys.executable, "-c", f"import sys; sys.path[:0] = {paths!r}\n" + code, *args]


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(child_argv(code, *args), capture_output=True, text=True, timeout=timeout,
                          check=False)


async def until(check: Callable[[], object], what: str = "condition", seconds: float = 20) -> None:
    """Await until ``check()`` is truthy (the sender runs on this loop meanwhile)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


@dataclass
class Receiver:
    """A webhook receiver on loopback (HTTPS when given a TLS context) that checks every request the way
    a receiver would, with the ``standardwebhooks`` package, and answers ``statuses`` in turn (then 200).
    ``start`` and ``stop`` to be down for a while on the same port."""

    secret: str
    tls: ssl.SSLContext | None = None
    port: int = field(default_factory=free_port)
    statuses: list[int] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # verification failures
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls,
                          reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as error:
            self.refused.append(str(error))
            return web.Response(status=401)
        status = self.statuses.pop(0) if self.statuses else 200
        self.requests.append(Request(headers, body, status))
        return web.Response(status=status)

    def delivered(self) -> list[tuple[str, Event]]:
        """(webhook-id, event) of every request answered 2xx, in arrival order."""
        return [(r.headers["webhook-id"], e) for r in self.requests if r.status < 300
                for e in decode_payload(r.body)]


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()
