"""The event's wire form (``Event.to_json``), built from the instance's fields on every log line and
stored row: the same keys, in the same order, with the same values as the field-by-field definition."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest
from eventkit import event
from mta_relay.events.record import Event, EventType, Response

pytestmark = pytest.mark.unit
_SPECIAL = ("type", "queue_id", "response", "peer_address")


def defined(e: Event) -> dict[str, Any]:
    """The definition: every plain field in declaration order, then type, id, response, peer address."""
    data = {f.name: getattr(e, f.name) for f in fields(Event) if f.name not in _SPECIAL}
    data["type"] = str(e.type)
    data["id"] = e.queue_id
    data["response"] = e.response.to_json() if e.response else None
    data["peer_address"] = dict(e.peer_address) if e.peer_address else None
    return data


@pytest.mark.parametrize("made", [
    lambda: event(EventType.BOUNCE),
    lambda: Event(EventType.REJECTION, queue_id="", sender="", recipient="", credential="",
                  reason="rate_limited"),
    lambda: Event(EventType.TRANSIENT_FAILURE, "0" * 26, "a@example.com", "b@example.net", "app",
                  response=Response.parse(451, "4.4.1 try later"), bounce_classification="Other")])
def test_to_json_is_the_field_by_field_definition_keys_in_order(made: Any) -> None:
    e = made()
    data = e.to_json()
    assert list(data) == list(defined(e))
    assert json.dumps(data) == json.dumps(defined(e))
    data["recipient"] = "changed@example.net"
    assert data["peer_address"] is not e.peer_address or e.peer_address is None  # a copy, not the event's
    assert e.recipient != "changed@example.net"  # the event is untouched
    assert Event.from_json(e.to_json()) == e
