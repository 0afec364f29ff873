"""The load generator: ``clients`` concurrent SMTP clients on one asyncio loop, each opening connections
(STARTTLS + AUTH PLAIN) and sending ``per_connection`` messages on each, until ``max_messages`` have
been started or ``max_seconds`` have passed (messages in flight then finish).

Latency per message: with one message per connection, from connect to the 250 after end of data (TCP,
TLS, EHLO twice, AUTH and the transaction: what such a client waits for); with more per connection, from
MAIL FROM to the 250 after end of data. Throughput: messages accepted / wall time of the run.

``python -m bench.frontdoor.loadgen --port P --ca CA.pem --password-file F ...`` prints a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from bench.frontdoor.message import make_message
from bench.frontdoor.smtp_client import SmtpReplyError, SmtpSession, Target
from bench.frontdoor.stats import Outcome

STEP_TIMEOUT = 30.0  # a stuck server fails the run instead of hanging it
MAX_ERRORS = 50  # then the run stops: a broken peer should not be hammered for the whole time bound


@dataclass(frozen=True)
class Load:
    clients: int
    per_connection: int
    max_messages: int
    max_seconds: float
    message_size: int = 1024
    first_seq: int = 0  # Message-IDs are <seq@loadgen.localhost>: a base per run keeps them unique


class _Budget:
    """Hands out messages until the count or the time bound is reached."""

    def __init__(self, load: Load) -> None:
        self._left = load.max_messages
        self._deadline = time.monotonic() + load.max_seconds

    def take(self) -> bool:
        if self._left <= 0 or time.monotonic() >= self._deadline:
            return False
        self._left -= 1
        return True

    def stop(self) -> None:
        self._left = 0


async def run_load(target: Target, tls: ssl.SSLContext, load: Load) -> Outcome:
    outcome = Outcome()
    budget = _Budget(load)
    cpu, wall = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for client in range(load.clients):
            group.create_task(_client(client, target, tls, load, budget, outcome))
    outcome.elapsed = time.perf_counter() - wall
    outcome.client_cpu = time.process_time() - cpu
    return outcome


async def _client(client: int, target: Target, tls: ssl.SSLContext, load: Load, budget: _Budget,
                  outcome: Outcome) -> None:
    seq = load.first_seq + client * 10_000_000
    while budget.take():
        session: SmtpSession | None = None
        opened = time.perf_counter()
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                session = await SmtpSession.open(target, tls)
            for index in range(load.per_connection):
                if index and not budget.take():
                    break
                started = opened if load.per_connection == 1 else time.perf_counter()
                seq += 1
                data = make_message(target.mail_from, target.rcpt_to, seq, load.message_size)
                async with asyncio.timeout(STEP_TIMEOUT):
                    await session.send(target.mail_from, target.rcpt_to, data)
                outcome.latencies.append(time.perf_counter() - started)
                outcome.accepted_at[seq] = time.monotonic()
            async with asyncio.timeout(STEP_TIMEOUT):
                await session.quit()
        except (SmtpReplyError, OSError, TimeoutError) as exc:
            outcome.record_error(exc)
            if session is not None:
                session.close()
            if outcome.errors >= MAX_ERRORS:
                budget.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True, help="PEM CA that signed the server certificate")
    parser.add_argument("--username", default="bench")
    parser.add_argument("--password-file", required=True, help="file holding the password (not argv: ps)")
    parser.add_argument("--mail-from", default="bench@example.com")
    parser.add_argument("--rcpt-to", default="sink@example.net")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--per-connection", type=int, default=1)
    parser.add_argument("--messages", type=int, default=100, help="count bound")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound")
    args = parser.parse_args()
    if not args.host.startswith("127.") and args.host != "::1":
        parser.error("the benchmark only ever targets loopback addresses")
    target = Target(args.host, args.port, args.username, Path(args.password_file).read_text().strip(),
                    args.mail_from, args.rcpt_to)
    tls = ssl.create_default_context(cafile=args.ca)
    load = Load(args.clients, args.per_connection, args.messages, args.seconds)
    outcome = asyncio.run(run_load(target, tls, load))
    print(json.dumps(outcome.summary()))


if __name__ == "__main__":
    main()
