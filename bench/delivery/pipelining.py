"""What PIPELINING (RFC 2920) saves the delivery process: the relay's own SMTP client
(``mta_relay.delivery.client.transact``) sends the same 1 KiB messages to two null sinks in their own
processes, one that offers PIPELINING and one that does not, taking turns every round (ABAB, the first
moving on each round). Per variant: the client process's CPU per message (user + system, what the
delivery process would spend on the transactions) and messages per second, over ``--connections``
connections kept open, one transaction at a time on each, as the delivery process's pool does.

    .venv/bin/python -m bench.delivery.pipelining [--messages N] [--connections C] [--rounds R]

Prints each round, then the median and the spread (min-max) per variant. The sinks' CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib
from mta_relay import event_loop
from mta_relay.delivery.client import HopPolicy, TlsMode, open_session, transact, wire_form
from mta_relay.delivery.mx import Hop
from mta_relay.delivery.outcome import Result

from bench.frontdoor.children import Child, spawn
from bench.frontdoor.message import make_message

VARIANTS: dict[str, list[str]] = {"pipelined": [], "one at a time": ["--no-pipelining"]}


async def _run(port: int, messages: int, connections: int) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) to send ``messages`` over ``connections``."""
    policy = HopPolicy(helo_name="relay.bench.localhost", port=port, tls=TlsMode.NONE)
    hop = Hop("localhost", "127.0.0.1")
    sessions = [await open_session(hop, policy) for _ in range(connections)]
    message = wire_form(make_message("bench@example.com", "sink@example.net", 0))
    left = [messages]

    async def send(smtp: aiosmtplib.SMTP) -> None:
        while left[0] > 0:
            left[0] -= 1
            result = await transact(smtp, "bench@example.com", ["sink@example.net"], message, "localhost")
            if [o.result for o in result.outcomes] != [Result.DELIVERED]:
                raise RuntimeError(f"the sink refused a message: {result.outcomes}")

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(send(s) for s in sessions))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    for smtp in sessions:
        smtp.close()
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000, help="per run (default 3000)")
    parser.add_argument("--connections", type=int, default=10,
                        help="kept open, as the pool does (default 10)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="mta-bench-pipelining-") as tmp:
        sinks: dict[str, tuple[Child, int]] = {}
        try:
            for name, flags in VARIANTS.items():
                child = spawn(f"sink-{len(sinks)}", [sys.executable, "-m", "bench.frontdoor.sink", *flags],
                              Path(tmp), json_stdout=True)
                sinks[name] = (child, int(child.read_json_line(timeout=20)["port"]))
            names = list(VARIANTS)
            for round_no in range(args.rounds):
                for name in names[round_no % 2:] + names[:round_no % 2]:
                    run = event_loop.loop_factory("uvloop")()  # the delivery process's loop
                    try:
                        port = sinks[name][1]
                        cpu, wall = run.run_until_complete(_run(port, args.messages, args.connections))
                    finally:
                        run.close()
                    figures[name].append((cpu, wall))
                    print(f"round {round_no + 1} {name:>14}: {1e6 * cpu / args.messages:7.1f} µs CPU/msg  "
                          f"{args.messages / wall:7.0f} msgs/s", flush=True)
        finally:
            for child, _ in sinks.values():
                child.stop()
    print(f"\nmedian (min-max) over {args.rounds} rounds, {args.messages} messages per run, "
          f"{args.connections} connections")
    for name, runs in figures.items():
        cpu = [1e6 * c / args.messages for c, _ in runs]
        rate = [args.messages / w for _, w in runs]
        print(f"{name:>14}: CPU µs/msg {statistics.median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f})  "
              f"msgs/s {statistics.median(rate):.0f} ({min(rate):.0f}-{max(rate):.0f})")


if __name__ == "__main__":
    main()
