"""A real webhook receiver for tests: HTTPS (aiohttp) on its own event loop thread, every request
verified with the ``standardwebhooks`` package, as an app would verify it.

It records each verified delivery (its ``webhook-id`` and the events in it) and counts requests whose
signature did not verify. ``down()`` closes the port (connections are refused) and ``up()`` opens it
again on the same port, so a sender's retries find it back.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from support.ports import free_port


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    events: tuple[dict[str, Any], ...]


class WebhookReceiver:
    def __init__(self, secret: str, tls: ssl.SSLContext | None, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.secret, self.tls, self.host = secret, tls, host
        self.port = port or free_port()
        self.deliveries: list[Delivery] = []
        self.unverified = 0
        self.status = 200  # what it answers verified requests with
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhook-receiver", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/hooks/mta"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            with self._lock:
                self.unverified += 1
            return web.Response(status=401)
        if self.status >= 300:
            return web.Response(status=self.status)
        with self._lock:
            self.deliveries.append(Delivery(request.headers["webhook-id"],
                                            tuple(payload["data"]["events"])))
        return web.Response(status=204)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/mta", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def up(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def down(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def events(self) -> list[dict[str, Any]]:
        """Every event received, once per event id (a resent batch brings the same events again)."""
        with self._lock:
            seen = {e["event_id"]: e for d in self.deliveries for e in d.events}
        return sorted(seen.values(), key=lambda e: (e["timestamp"], e["event_id"]))

    def copies(self) -> Counter[str]:
        """How many times each event id arrived."""
        with self._lock:
            return Counter(e["event_id"] for d in self.deliveries for e in d.events)

    def batches_by_id(self) -> dict[str, set[str]]:
        """webhook-id → the event ids of every delivery with that id (a resend must carry the same)."""
        found: dict[str, set[str]] = {}
        with self._lock:
            for d in self.deliveries:
                ids = frozenset(e["event_id"] for e in d.events)
                found.setdefault(d.webhook_id, set()).add(json.dumps(sorted(ids)))
        return found
