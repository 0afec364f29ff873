"""The events benchmark's webhook receiver: an aiohttp HTTPS server (the bench CA's certificate) that
takes every relay's webhooks at ``POST /hooks/<relay>/<webhook>``, checks each request's Standard
Webhooks signature and decodes its body with the relay's own format owner (``mta_relay.events.webhooks``),
answers 204 at once, and writes one line per event it received::

    <relay>/<webhook> <seq> <type> <event_id> <time.monotonic()>

``seq`` comes from the event's Message-ID, as the timing sink reads it (``<seq@loadgen.localhost>``; -1
for any other), so the orchestrator can tell which of a run's events arrived, and when (CLOCK_MONOTONIC is
one clock for every process on the machine). A request whose signature does not verify is answered 401
and counted, never written. Its own process, so its CPU is not the load generator's; it is not in the
relay's CPU either.

``python -m bench.events.receiver --events FILE --cert CHAIN --key KEY --secret-file F``
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import re
import signal
import socket
import ssl
import time
from collections.abc import Callable

from aiohttp import web
from mta_relay.events.webhooks import decode_payload, decode_secret, sign

_SEQ = re.compile(r"^<(\d+)@loadgen\.localhost>$")
ROUTE = "/hooks/{relay}/{webhook}"


def line(hook: str, message_id: str, kind: str, event_id: str, at: float) -> str:
    found = _SEQ.match(message_id)
    return f"{hook} {found.group(1) if found else -1} {kind} {event_id} {at:.6f}\n"


def parse_lines(text: str) -> list[tuple[str, int, str, str, float]]:
    """(hook, seq, type, event_id, time) of each whole line (see bench.delivery.receipts.complete_lines)."""
    found = []
    for row in text.splitlines():
        hook, seq, kind, event_id, at = row.split(" ")
        found.append((hook, int(seq), kind, event_id, float(at)))
    return found


class Receiver:
    def __init__(self, key: bytes, write: Callable[[str], object]) -> None:
        self.key, self.write = key, write
        self.requests = self.events = self.unverified = 0

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.monotonic()
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        given = request.headers.get("webhook-signature", "")
        expected = sign(self.key, msg_id, int(stamp), body) if stamp.isdigit() else ""
        if not expected or not any(hmac.compare_digest(expected, s) for s in given.split(" ")):
            self.unverified += 1
            return web.Response(status=401)
        hook = f"{request.match_info['relay']}/{request.match_info['webhook']}"
        events = decode_payload(body)
        self.requests += 1
        self.events += len(events)
        self.write("".join(line(hook, e.message_id, str(e.type), e.event_id, at) for e in events))
        return web.Response(status=204)


async def serve(receiver: Receiver, cert: str, key: str) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post(ROUTE, receiver.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock, ssl_context=tls).start()
    print(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    print(json.dumps({"requests": receiver.requests, "events": receiver.events,
                      "unverified": receiver.unverified}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", required=True, help="file to write the event lines to")
    parser.add_argument("--cert", required=True, help="PEM certificate chain")
    parser.add_argument("--key", required=True, help="PEM private key")
    parser.add_argument("--secret-file", required=True, help="the webhooks' whsec_ secret")
    args = parser.parse_args()
    with open(args.secret_file) as secret:
        key = decode_secret(secret.read().strip())
    with open(args.events, "w") as out:
        def write(text: str) -> None:  # one write per request, at once: the orchestrator tails the file
            out.write(text)
            out.flush()
        asyncio.run(serve(Receiver(key, write), args.cert, args.key))


if __name__ == "__main__":
    main()
