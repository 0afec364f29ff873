"""The ceiling: a bare aiosmtpd server with the same front-door shape as the relay (STARTTLS required,
AUTH required and offered only under TLS) but a null handler and an authenticator that accepts any
credential. Nothing is written anywhere, so it bounds what any aiosmtpd-based relay can reach here.

``python -m bench.frontdoor.ceiling --cert CHAIN --key KEY --port 0``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from bench.frontdoor.serve import serve_until_signalled


class NullHandler:
    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages += 1
        return "250 2.0.0 Ok: discarded"


def accept_any(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
               auth_data: Any) -> AuthResult:
    return AuthResult(success=True)


async def start(handler: NullHandler, tls: ssl.SSLContext, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return SMTP(handler, hostname="ceiling.localhost", tls_context=tls, require_starttls=True,
                    auth_required=True, auth_require_tls=True, authenticator=accept_any)

    return await loop.create_server(factory, host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cert", required=True, help="PEM certificate chain")
    parser.add_argument("--key", required=True, help="PEM private key")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # aiosmtpd warns on every AUTH that Session.login_data is deprecated; a bare server logs nothing.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    handler = NullHandler()
    asyncio.run(serve_until_signalled(lambda: start(handler, tls, args.host, args.port),
                                      lambda: {"messages": handler.messages}))


if __name__ == "__main__":
    main()
