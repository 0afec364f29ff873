"""Pure parts of delivery: rate limit, backoff, reply classes, recipient grouping, MX order, DSN."""

from __future__ import annotations

import email
import random
from datetime import UTC, datetime
from email.message import Message

import pytest
from deliverykit import message
from mta_relay.delivery.backoff import RetryPolicy
from mta_relay.delivery.mx import order_mx
from mta_relay.delivery.outcome import Result, classify, outcome
from mta_relay.delivery.router import group_recipients
from mta_relay.dsn import build_dsn, header_section
from mta_relay.ratelimit import SlidingWindowLimit

pytestmark = pytest.mark.unit


def test_sliding_window_allows_n_per_period_and_says_when_next() -> None:
    limit = SlidingWindowLimit(messages=3, period=10.0)
    assert [limit.try_acquire(t) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert limit.next_free(3.0) == 10.0
    assert not limit.try_acquire(9.99)
    assert limit.try_acquire(10.0)
    assert not limit.try_acquire(10.5)  # the starts at 1.0 and 2.0 are still in the window
    assert limit.next_free(10.5) == 11.0


def test_sliding_window_never_exceeds_limit_in_any_window() -> None:
    limit = SlidingWindowLimit(messages=10, period=1.0)
    rng = random.Random(7)
    times, taken, t = [], [], 0.0
    for _ in range(2000):
        t += rng.uniform(0, 0.05)
        times.append(t)
        if limit.try_acquire(t):
            taken.append(t)
    for i, start in enumerate(taken):
        assert sum(1 for x in taken[i:] if x < start + 1.0) <= 10
    assert len(taken) >= 10 * int(times[-1]) - 10  # and it does not starve either


def test_rate_limit_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="messages >= 1"):
        SlidingWindowLimit(0, 1.0)


def test_backoff_grows_caps_and_jitters() -> None:
    policy = RetryPolicy(first=10, cap=100, max_age=1000)
    rng = random.Random(1)
    delays = [[policy.delay(n, rng) for _ in range(200)] for n in (1, 2, 3, 5, 9)]
    for steps, step in zip(delays, (10, 20, 40, 100, 100), strict=True):
        assert min(steps) >= step / 2
        assert max(steps) <= step
        assert max(steps) - min(steps) > step / 4  # jittered, not fixed
    assert policy.expired(1000)
    assert not policy.expired(999.9)


@pytest.mark.parametrize(("code", "result"), [(250, Result.DELIVERED), (251, Result.DELIVERED),
                                              (421, Result.DEFERRED), (452, Result.DEFERRED),
                                              (550, Result.FAILED), (554, Result.FAILED)])
def test_reply_classes(code: int, result: Result) -> None:
    assert classify(code) is result


def test_status_comes_from_enhanced_code_when_consistent() -> None:
    assert outcome("a@b", 550, "5.1.1 no such user").status == "5.1.1"
    assert outcome("a@b", 550, "no such user").status == "5.0.0"
    assert outcome("a@b", 451, "5.1.1 confused server").status == "4.0.0"


def test_recipients_grouped_by_domain_case_insensitively() -> None:
    rcpts = ["a@X.example", "b@y.example", "c@x.example", "d@Y.EXAMPLE."]
    assert group_recipients(rcpts, by_domain=True) == {"x.example": ["a@X.example", "c@x.example"],
                                                       "y.example": ["b@y.example", "d@Y.EXAMPLE."]}
    assert group_recipients(rcpts, by_domain=False) == {"smarthost": rcpts}


def test_mx_order_lowest_preference_first_ties_shuffled() -> None:
    records = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
    orders = {tuple(order_mx(records, random.Random(seed))) for seed in range(20)}
    assert orders == {("a", "b", "c", "d"), ("b", "a", "c", "d")}


def _dsn() -> Message:
    original = message(body=b"secret body line\r\n")
    failures = [outcome("bob@example.net", 550, "5.1.1 <bob@example.net>: no such\r\nuser", "mx.example.net"),
                outcome("eve@example.net", 451, "4.4.1 timed out", "")]
    raw = build_dsn(original=original, envelope_sender="app@example.com", failures=failures,
                    reporting_mta="mta.example.org", queue_id="q1", expired=False,
                    arrival=datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    assert b"secret body line" not in raw  # headers only, never the body
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    return email.message_from_bytes(raw)


def test_dsn_is_a_delivery_status_report() -> None:
    dsn = _dsn()
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["To"] == "<app@example.com>"
    assert dsn["Auto-Submitted"] == "auto-replied"
    human, status, headers = dsn.get_payload()
    assert "bob@example.net" in human.get_payload()
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Subject: Hello" in headers.get_payload()
    per_message, bob, eve = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mta.example.org"
    assert bob["Final-Recipient"] == "rfc822; bob@example.net"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx.example.net"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: no such user"
    assert eve["Status"] == "4.4.1"
    assert eve["Remote-MTA"] is None


def test_header_section_stops_at_blank_line() -> None:
    assert header_section(b"A: 1\nB: 2\n\nbody\n") == b"A: 1\r\nB: 2\r\n"
