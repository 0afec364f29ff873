"""The front-door report: timed runs give the speed, the traced pass only the sync counts."""

from __future__ import annotations

from bench.frontdoor.peers import CEILING, POSTFIX, RELAY
from bench.frontdoor.report import Result, checks, render


def _result(peer: str, rate: float, syncs: int | None, messages: int = 1000) -> Result:
    summary = {"messages": messages, "msgs_per_s": rate, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0,
               "client_cpu_s": 0.5}
    return Result(peer, 100, 10, summary, syncs, 1.0)


def test_the_fsyncs_column_comes_from_the_traced_run_and_the_floors_from_the_timed_one() -> None:
    results = [_result(CEILING, 1000, None), _result(POSTFIX, 500, None), _result(RELAY, 850, None),
               # traced: the relay slower and Postfix faster than untraced; must not decide the floors
               _result(CEILING, 900, 0, 300), _result(POSTFIX, 600, 330, 300), _result(RELAY, 100, 360, 300)]

    ratios = {row.check.floor.describe(): row.check.median_ratio for row in checks(results)}
    assert ratios == {"relay msgs/s ≥ 1.2 x Postfix": 1.7, "relay server CPU ms/msg ≤ 0.6 x Postfix": 1.0,
                      "relay msgs/s ≥ 0.8 x the aiosmtpd ceiling": 0.85}
    table = render(results, {"cpus": "2"}, "bounds", [])
    assert "| 100 per connection | 10 | mta-relay | 1 | 850 | 1.0 | 2.0 | 1.00 | 0.50 | 1.20 | 0 |" in table
    assert "| 100 per connection | 10 | Postfix | 1 | 500 | 1.0 | 2.0 | 1.00 | 0.50 | 1.10 | 0 |" in table
    assert "| 100 per connection | 10 | mta-relay | 300 | 100 | 1.20 |" in table
