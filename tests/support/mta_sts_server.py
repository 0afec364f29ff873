"""A real HTTPS server on loopback that serves MTA-STS policies (aiohttp), for tests.

``async with StsServer("127.0.0.53", ssl_context) as sts:`` listens on ``sts.address``/``sts.port``;
``sts.policy = "version: STSv1\\nmode: enforce\\nmx: mx.example.org\\nmax_age: 86400\\n"`` sets what
``/.well-known/mta-sts.txt`` answers (``status``, ``content_type`` too); ``sts.requests`` counts fetches.
The policy host's name is whatever the test's DNS server maps to ``address``; the certificate in
``ssl_context`` decides which names it is valid for.
"""

from __future__ import annotations

import ssl

from aiohttp import web
from mta_relay.delivery.mta_sts import POLICY_PATH


class StsServer:
    def __init__(self, address: str, context: ssl.SSLContext, port: int = 0) -> None:
        self.address, self.port, self.context = address, port, context
        self.policy = ""
        self.status = 200
        self.content_type = "text/plain"
        self.requests = 0
        self._runner: web.AppRunner | None = None

    async def _serve(self, _request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(status=self.status, body=self.policy.encode(), content_type=self.content_type)

    async def __aenter__(self) -> StsServer:
        app = web.Application()
        app.router.add_get(POLICY_PATH, self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port, ssl_context=self.context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
