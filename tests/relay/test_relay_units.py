"""Pure pieces: quota windows and shares, AUTH throttling, address normalisation, queue ids."""

from __future__ import annotations

import pytest
from mta_relay.auth_throttle import AuthThrottle
from mta_relay.config import Limits, Quota
from mta_relay.policy import client_address, domain_of, ip_in
from mta_relay.quota import QuotaTracker
from mta_relay.spool import new_queue_id

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_quota_share_and_windows() -> None:
    clock = Clock(3600 * 100)  # at a window boundary
    tracker = QuotaTracker(clock)
    quota = Quota(messages=5, period_seconds=3600)
    assert QuotaTracker.share(quota, 2) == 3  # ceil(5 / 2)
    assert [tracker.charge("u", quota, 2) for _ in range(4)] == [True, True, True, False]
    tracker.refund("u", quota)
    assert tracker.charge("u", quota, 2)
    clock.now += 3600  # the next window
    assert not tracker.exhausted("u", quota, 2)
    assert tracker.charge("u", Quota(messages=0), 2)  # 0 = unlimited
    assert tracker.charge("u", None, 2)


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
