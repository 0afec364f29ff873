"""Lease decisions without an API server: who may hold the Lease, and what a holder writes."""

from __future__ import annotations

import datetime as dt

import pytest
from mta_operator.controller.leader import DURATION, claim, micro_time

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def _held_by(holder: str, seconds_ago: float) -> dict:
    return {"holderIdentity": holder, "leaseDurationSeconds": DURATION,
            "renewTime": micro_time(NOW - dt.timedelta(seconds=seconds_ago)),
            "acquireTime": micro_time(NOW - dt.timedelta(hours=1)), "leaseTransitions": 3}


def test_a_free_lease_is_taken() -> None:
    decided = claim({}, "b", NOW)
    assert decided.spec is not None
    assert decided.spec["holderIdentity"] == "b"
    assert decided.spec["renewTime"] == micro_time(NOW)
    assert decided.spec["leaseTransitions"] == 0


def test_a_live_holder_keeps_it() -> None:
    assert claim(_held_by("a", DURATION - 1), "b", NOW).spec is None


def test_an_expired_holder_loses_it_and_the_transition_is_counted() -> None:
    decided = claim(_held_by("a", DURATION + 0.5), "b", NOW)
    assert decided.spec is not None
    assert decided.transition
    assert decided.spec["leaseTransitions"] == 4
    assert decided.spec["acquireTime"] == micro_time(NOW)


def test_the_holder_renews_without_a_transition() -> None:
    decided = claim(_held_by("a", 1), "a", NOW)
    assert decided.spec is not None
    assert not decided.transition
    assert decided.spec["leaseTransitions"] == 3
    assert decided.spec["acquireTime"] == micro_time(NOW - dt.timedelta(hours=1))


def test_a_released_lease_is_free_at_once() -> None:
    released = {**_held_by("a", 0.5), "holderIdentity": "", "leaseDurationSeconds": 1}
    assert claim(released, "b", NOW).spec is not None
