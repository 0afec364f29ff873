"""The demo's receiving mail server: the Cluster's smarthost, on loopback, STARTTLS required.

    python hack/demo_receiver.py --port 2525 --cert C --key K --maildir DIR

Every message it accepts is written to DIR as NNNN.eml, with one line on stdout per message.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session


class SaveToDir:
    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self.count = len(list(maildir.glob("*.eml")))

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        self.count += 1
        path = self.maildir / f"{self.count:04d}.eml"
        path.write_bytes(data)
        signed = "DKIM-signed" if data.startswith(b"DKIM-Signature:") else "not signed"
        print(f"received {path.name}: {envelope.mail_from} -> {', '.join(envelope.rcpt_tos)} "
              f"({len(data)} bytes, {signed})", flush=True)
        return "250 2.0.0 OK"


async def serve(port: int, tls: ssl.SSLContext, maildir: Path) -> None:
    handler = SaveToDir(maildir)
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="receiver.demo", tls_context=tls, require_starttls=True),
        "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{port}, saving to {maildir}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args()
    args.maildir.mkdir(parents=True, exist_ok=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    asyncio.run(serve(args.port, tls, args.maildir))


if __name__ == "__main__":
    main()
