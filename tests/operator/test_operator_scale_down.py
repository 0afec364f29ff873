"""The scale-down decisions, without an API server: who leaves, when the StatefulSet may shrink, what a
hand-off that does not finish leaves behind."""

from __future__ import annotations

import pytest
from mta_operator.reconcile.scale_down import Plan, QueueReport, plan, summary, webhook_backlog

pytestmark = pytest.mark.unit


def test_no_scale_down_runs_spec_mtas() -> None:
    assert plan(3, None, {}, 0, 60) == Plan(replicas=3, leaving=())
    assert plan(3, 2, {}, 0, 60) == Plan(replicas=3, leaving=())
    assert plan(3, 3, {}, 0, 60) == Plan(replicas=3, leaving=())


def test_leaving_mtas_are_the_highest_ordinals_and_the_statefulset_waits() -> None:
    step = plan(1, 3, {1: QueueReport(5, True), 2: None}, 10, 60)
    assert step.replicas == 3
    assert step.leaving == (1, 2)
    assert not step.done
    assert step.queued == {1: 5, 2: None}


def test_shrinks_only_once_every_leaving_mta_knows_it_and_is_empty() -> None:
    # Empty but not yet told it is leaving: it could still take mail.
    assert not plan(1, 2, {1: QueueReport(0, False)}, 10, 60).done
    done = plan(1, 3, {1: QueueReport(0, True), 2: QueueReport(0, True)}, 10, 60)
    assert (done.replicas, done.done, done.timed_out) == (1, True, False)


def test_waits_for_the_webhook_events_to_move_too() -> None:
    # The mail is gone, but events for a webhook still wait on the volume the shrink would delete.
    assert not plan(1, 2, {1: QueueReport(0, True, pending_events=12)}, 10, 60).done
    assert plan(1, 2, {1: QueueReport(0, True, pending_events=0)}, 10, 60).done


def test_past_the_timeout_it_shrinks_and_says_what_is_left() -> None:
    late = plan(2, 3, {2: QueueReport(40, True)}, 61, 60)
    assert (late.replicas, late.done, late.timed_out, late.queued) == (2, True, True, {2: 40})


def test_summary_names_each_leaving_mta() -> None:
    names = {1: "x-mta-1", 2: "x-mta-2"}
    assert summary(names, {1: 3, 2: None}) == "x-mta-2: not answering, x-mta-1: 3 messages"


def test_webhook_backlog_sums_the_mtas_and_keeps_the_oldest() -> None:
    reports = [QueueReport(0, False, 3, {"a": (3, 12.5, 0)}),
               QueueReport(0, False, 7, {"a": (5, 700.0, 2), "b": (2, 1.0, 0)})]
    assert webhook_backlog(reports) == {"a": (8, 700.0, 2), "b": (2, 1.0, 0)}
    assert webhook_backlog([]) == {}
