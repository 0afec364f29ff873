"""Pure pieces: quota periods and counts, AUTH throttling, address normalisation, queue ids."""

from __future__ import annotations

import datetime as dt

import pytest
from mta_relay.auth_throttle import AuthThrottle
from mta_relay.config import Limits, Quota, QuotaPeriod
from mta_relay.policy import client_address, domain_of, ip_in
from mta_relay.quota import QuotaTracker, period_end, period_start
from mta_relay.spool import new_queue_id

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_quota_counts_calendar_periods_and_refunds() -> None:
    clock = Clock(dt.datetime(2026, 3, 31, 23, 59, tzinfo=dt.UTC).timestamp())
    tracker = QuotaTracker(clock)
    quota = Quota(messages=3, period="Month")
    assert [tracker.charge("u", quota) for _ in range(4)] == [True, True, True, False]
    tracker.refund("u", quota)
    assert tracker.charge("u", quota)
    clock.now += 60  # 1 April, 00:00:00 UTC: a new calendar month
    assert not tracker.exhausted("u", quota)
    assert tracker.used("u", quota) == 0
    assert tracker.charge("u", Quota(messages=0))  # 0 = unlimited
    assert tracker.charge("u", None)
    assert tracker.used("u", None) == 2  # counted per UTC day all the same (usage in status)


def _utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(("kind", "now", "start", "end"), [
    ("Month", _utc(2028, 2, 29, 23, 59, 59), _utc(2028, 2, 1), _utc(2028, 3, 1)),  # a leap February
    ("Month", _utc(2027, 2, 1), _utc(2027, 2, 1), _utc(2027, 3, 1)),  # 28 days
    ("Month", _utc(2026, 12, 31, 12), _utc(2026, 12, 1), _utc(2027, 1, 1)),  # into the next year
    ("Month", _utc(2026, 7, 15), _utc(2026, 7, 1), _utc(2026, 8, 1)),  # 31 days, not 30
    ("Day", _utc(2026, 7, 15, 23, 59, 59), _utc(2026, 7, 15), _utc(2026, 7, 16)),
    ("Hour", _utc(2026, 7, 15, 8, 30), _utc(2026, 7, 15, 8), _utc(2026, 7, 15, 9)),
])
def test_quota_periods_are_utc_calendar_periods(kind: QuotaPeriod, now: float, start: float,
                                                end: float) -> None:
    assert period_start(kind, now) == start
    assert period_end(kind, start) == end
    assert period_start(kind, end - 0.001) == start
    assert period_start(kind, end) == end


def test_a_monthly_quota_resets_on_the_first_of_the_month_not_after_30_days() -> None:
    clock = Clock(_utc(2026, 1, 1))
    tracker, quota = QuotaTracker(clock), Quota(messages=2, period="Month")
    assert tracker.charge("u", quota)
    assert tracker.charge("u", quota)
    clock.now = _utc(2026, 1, 31, 23, 59, 59)  # 30 days later, still January
    assert tracker.exhausted("u", quota)
    clock.now = _utc(2026, 2, 1)
    assert not tracker.exhausted("u", quota)


def test_the_quota_counts_the_peers_last_known_counts_of_the_current_period() -> None:
    clock = Clock(_utc(2026, 5, 10, 12))
    here, there = QuotaTracker(clock), QuotaTracker(clock)
    quota = Quota(messages=5, period="Day")
    assert all(there.charge("u", quota) for _ in range(3))
    full, counts = there.changes(None, 0)
    here.merge("mta-1", counts, full)
    assert full
    assert here.used("u", quota) == 3
    assert [here.charge("u", quota) for _ in range(3)] == [True, True, False]  # 3 there + 2 here
    there.charge("u", quota)
    full, counts = there.changes(there.epoch, there.seq - 1)  # only what changed since
    assert not full
    assert set(counts) == {"u"}
    here.merge("mta-1", counts, full)
    assert here.used("u", quota) == 6  # over by one: what the peer accepted between two exchanges
    _, none = there.changes(there.epoch, there.seq)
    assert none == {}
    clock.now = _utc(2026, 5, 11)  # a new day: yesterday's counts, here and there, count for nothing
    assert here.used("u", quota) == 0


def test_throttle_delays_then_disconnects_and_forgets() -> None:
    clock = Clock()
    throttle = AuthThrottle(Limits(auth_failures_before_delay=2, auth_failures_before_disconnect=4,
                                   auth_failure_delay_seconds=1.5, auth_failure_window_seconds=60), clock)
    verdicts = []
    for _ in range(5):
        verdicts.append(throttle.verdict("192.0.2.1", "u"))
        throttle.failed("192.0.2.1", "u")
    assert [(v.disconnect, v.delay) for v in verdicts] == [
        (False, 0.0), (False, 0.0), (False, 1.5), (False, 3.0), (True, 0.0)]
    assert throttle.verdict("192.0.2.9", "u").disconnect  # per username, from any address
    assert throttle.verdict("192.0.2.1", "other").disconnect  # per address, for any username
    assert not throttle.verdict("192.0.2.9", "other").disconnect
    clock.now += 61
    assert throttle.verdict("192.0.2.1", "u") == verdicts[0]


@pytest.mark.parametrize(("ip", "networks", "inside"), [
    ("::ffff:10.1.2.3", ["10.0.0.0/8"], True),
    ("10.1.2.3", ["10.0.0.0/8"], True),
    ("11.0.0.1", ["10.0.0.0/8"], False),
    ("2001:db8::1", ["2001:db8::/32"], True),
    ("fe80::1%eth0", ["fe80::/10"], True),
    ("2001:db9::1", ["2001:db8::/32"], False),
    ("10.0.0.1", ["2001:db8::/32"], False),
])
def test_ip_matching(ip: str, networks: list[str], inside: bool) -> None:
    import ipaddress

    assert ip_in(ip, [ipaddress.ip_network(n) for n in networks]) is inside
    assert client_address(ip).version in (4, 6)


def test_domain_of() -> None:
    assert domain_of("A@Example.COM") == "example.com"
    assert domain_of('"x@example.com"@evil.com') == "evil.com"
    assert domain_of("nodomain") is None
    assert domain_of("@example.com") is None


def test_queue_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_queue_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    times = [i[:16] for i in ids]  # the time part orders them; the random part only breaks ties
    assert times == sorted(times)
