"""`kubectl mta messages`' pure part: the query it sends, the merge of the MTAs' answers, the text."""

from __future__ import annotations

from typing import Any

import pytest
from mta_operator.kubectl_plugin import message_view
from mta_relay.events.record import Event, EventType, Response

pytestmark = pytest.mark.unit


def _event(kind: EventType, mta: str, at: float, **extra: Any) -> dict[str, Any]:
    event = Event(kind, queue_id="q1", sender="app@example.com", recipient="bob@example.net",
                  credential="billing", timestamp=at, message_id="<m1@example.com>", mta=mta, **extra)
    return event.to_json()


def test_since_takes_durations_and_times_and_names_the_option_when_wrong() -> None:
    assert message_view.since_seconds("90m", now=10_000.0) == 10_000.0 - 5400
    assert message_view.since_seconds("7d", now=10 * 86400.0) == 3 * 86400.0
    assert message_view.since_seconds("2026-01-01T00:00:00Z") == 1767225600.0
    with pytest.raises(ValueError, match="--since 'yesterday'"):
        message_view.since_seconds("yesterday")


def test_query_checks_the_types_and_leaves_out_what_is_not_asked() -> None:
    assert message_view.query(recipient="b@x", sender=None, credential=None, message_id=None, since=None,
                              types=["Bounce", "Delivery"], limit=10) == [
        ("recipient", "b@x"), ("type", "Bounce,Delivery"), ("limit", "10")]
    with pytest.raises(ValueError, match="--type 'Delivered'"):
        message_view.query(recipient=None, sender=None, credential=None, message_id=None, since=None,
                           types=["Delivered"], limit=10)


def test_merge_orders_by_time_across_mtas_and_keeps_one_copy_of_each_event() -> None:
    reception = _event(EventType.RECEPTION, "main-mta-1", 100.0, source_address="10.0.0.7",
                       reception_protocol="ESMTPSA")
    deferral = _event(EventType.TRANSIENT_FAILURE, "main-mta-1", 101.0, num_attempts=1,
                      response=Response.parse(451, "4.2.0 Mailbox busy"),
                      peer_address={"name": "mx.example.net", "addr": "192.0.2.1"},
                      tls_protocol_version="TLSv1.3", bounce_classification="TransientFailure",
                      bounce_kind="soft")
    delivery = _event(EventType.DELIVERY, "main-mta-0", 105.0, num_attempts=2,
                      response=Response.parse(250, "2.0.0 OK"))
    # the MTA that took the message over holds the history it was handed, too
    merged = message_view.merge([{"events": [delivery, reception, deferral]},
                                 {"events": [reception, deferral]}])
    assert [e["type"] for e in merged] == ["Reception", "TransientFailure", "Delivery"]
    text = message_view.render(merged, {"main-mta-2": "HTTP 403: forbidden"})
    lines = text.splitlines()
    assert lines[0] == "<m1@example.com>  app@example.com -> bob@example.net  queue id q1"
    assert "Reception" in lines[1]
    assert "on main-mta-1" in lines[1]
    assert "as billing (ESMTPSA)" in lines[1]
    assert "attempt 1" in lines[2]
    assert "at mx.example.net (TLSv1.3)" in lines[2]
    assert "451 4.2.0 Mailbox busy" in lines[2]
    assert "[soft TransientFailure]" in lines[2]
    assert "Delivery" in lines[3]
    assert "on main-mta-0" in lines[3]
    assert "250 2.0.0 OK" in lines[3]
    assert lines[4] == "warning: main-mta-2 did not answer (HTTP 403: forbidden); its events are not shown"
    assert message_view.render([]) == "no events match"
