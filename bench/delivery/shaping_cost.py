"""What shaping adds to each message's delivery, in CPU on the delivery process's loop: the rule lookup
(cached per destination for a minute, and uncached: the precedence walk over the built-in table), the
counters' acquire and release, and the throttle check of the outcomes. In process, no sockets: the
end-to-end effect is in ``python -m bench.delivery`` (compare a run of this tree with one of the tree
before shaping).

    .venv/bin/python -m bench.delivery.shaping_cost [--messages N] [--rounds R]

Prints the cost per message of each part, as the median and the spread (min-max) over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from mta_relay.delivery.client import HopPolicy, TlsMode
from mta_relay.delivery.mx import Hop
from mta_relay.delivery.outcome import RecipientOutcome, outcome
from mta_relay.delivery.pool import ConnectionPool
from mta_relay.delivery.router import Deliverer, Route
from mta_relay.delivery.shaping import Shaper, ShapingTable, is_throttle

GMAIL_MX = ["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com",
            "alt2.gmail-smtp-in.l.google.com"]


def _route() -> Route:
    async def resolve(domain: str) -> list[Hop]:
        return [Hop(host, "127.0.0.1") for host in GMAIL_MX]
    return Route(HopPolicy("mta.bench", 25, TlsMode.NONE), resolve, by_domain=True)


async def _gate(deliverer: Deliverer, route: Route, n: int, outcomes: list[RecipientOutcome]) -> float:
    """The shaping steps of ``Deliverer._deliver_group`` for ``n`` messages, without the transaction."""
    shaper = deliverer.shaper
    assert shaper is not None
    start = time.perf_counter()
    for _ in range(n):
        match, _hops = await deliverer._match(route, "gmail.com")  # the step measured
        if shaper.try_acquire(match):
            shaper.release(match.key)
        shaper.delivered(match.key)
        any(is_throttle(o.code, o.text) for o in outcomes)
    return (time.perf_counter() - start) / n


def _uncached(table: ShapingTable, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        # A domain no rule matches: every rule of the table is tried.
        table.match(f"d{i % 1000}.example", ["mx1.d.example", "mx2.d.example"])
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    route = _route()
    outcomes = [outcome("a@gmail.com", 250, "2.0.0 OK")]
    gate, uncached = [], []
    for _ in range(args.rounds):
        deliverer = Deliverer(route, ConnectionPool(), Shaper(ShapingTable()))
        gate.append(asyncio.run(_gate(deliverer, route, args.messages, outcomes)))
        uncached.append(_uncached(ShapingTable(), args.messages))

    def show(name: str, values: list[float]) -> None:
        us = [v * 1e6 for v in values]
        print(f"{name}: median {statistics.median(us):.2f} µs/message (min {min(us):.2f}, max {max(us):.2f}, "
              f"{args.rounds} rounds of {args.messages})")
    show("shaping gate per message (rule cached)", gate)
    show("rule lookup uncached (once per destination a minute)", uncached)


if __name__ == "__main__":
    main()
