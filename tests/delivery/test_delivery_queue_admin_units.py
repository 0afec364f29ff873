"""Queue administration's pure parts: the requests' parameters (``queue_admin``: selectors, reasons,
targets, each bad one named), the summary and its merge across MTAs, the suspensions' state file and the
in-memory holds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from mta_relay import queue_admin, state_files
from mta_relay.delivery.holds import Holds
from mta_relay.queue_admin import BadParameter, Row, Selector, Target
from mta_relay.state_files import Hold

pytestmark = pytest.mark.unit
QID = "18ec03b5ae0be5f241a84d953c"


def bad(call: Any, *args: Any) -> str:
    with pytest.raises(BadParameter) as caught:
        call(*args)
    return caught.value.name


def test_selectors_take_exactly_one_and_normalize_it() -> None:
    everything = ("id", "domain", "sender", "all")
    assert queue_admin.parse_selector({"id": QID}, everything) == Selector("id", QID)
    assert queue_admin.parse_selector({"domain": " Example.NET. "}, everything) == Selector("domain",
                                                                                            "example.net")
    assert queue_admin.parse_selector({"sender": "<App@Example.com>"}, everything) == Selector(
        "sender", "app@example.com")
    assert queue_admin.parse_selector({"sender": "<>"}, everything) == Selector("sender", "")
    assert queue_admin.parse_selector({"all": True}, everything) == Selector("all")
    assert queue_admin.parse_selector({"domain": "bücher.example"}, everything).value == "bücher.example"


@pytest.mark.parametrize(("raw", "name"), [
    ({}, "selector"), ({"id": QID, "domain": "x.example"}, "domain"), ({"id": "18ec"}, "id"),
    ({"id": 42}, "id"), ({"domain": "a@b.example"}, "domain"), ({"domain": "has space.example"}, "domain"),
    ({"domain": ""}, "domain"), ({"domain": "x" * 254}, "domain"), ({"sender": "nobody"}, "sender"),
    ({"sender": "a@b\r\nRCPT TO:<c@d>"}, "sender"), ({"all": "true"}, "all"), ({"all": 1}, "all"),
])
def test_a_bad_selector_is_named(raw: dict[str, Any], name: str) -> None:
    assert bad(queue_admin.parse_selector, raw, ("id", "domain", "sender", "all")) == name


def test_selectors_match_entries_and_pick_their_recipients() -> None:
    rcpts = ["a@x.example", "b@Y.example", "c@x.example."]
    assert Selector("domain", "x.example").matches(QID, "s@e.com", rcpts)
    assert Selector("domain", "x.example").recipients(rcpts) == ["a@x.example", "c@x.example."]
    assert Selector("domain", "y.example").recipients(rcpts) == ["b@Y.example"]
    assert not Selector("domain", "z.example").matches(QID, "s@e.com", rcpts)
    assert Selector("sender", "s@e.com").matches(QID, "S@E.com", rcpts)
    assert Selector("sender", "").matches(QID, "", rcpts)
    assert not Selector("sender", "").matches(QID, "s@e.com", rcpts)
    assert Selector("id", QID).matches(QID, "", [])
    assert not Selector("id", QID).matches("0" * 26, "", [])
    assert Selector("all").recipients(rcpts) == rcpts
    for selector in (Selector("id", QID), Selector("sender", ""), Selector("domain", "x.example"),
                     Selector("all")):  # what the channel carries parses back to the same selector
        assert queue_admin.parse_selector(selector.to_json(), ("id", "domain", "sender", "all")) == selector


def test_action_requests_are_checked_and_carry_who_asked() -> None:
    assert queue_admin.action_request("retry", {"all": True}, "alice") == {
        "op": "queue_retry", "by": "alice", "selector": {"all": True}}
    assert queue_admin.action_request("bounce", {"domain": "x.example", "reason": " moved "}, "bob") == {
        "op": "queue_bounce", "by": "bob", "selector": {"domain": "x.example"}, "reason": "moved"}
    assert queue_admin.action_request("suspend", {"credential": "billing"}, "c")["target"] == {
        "credential": "billing"}
    assert bad(queue_admin.action_request, "bounce", {"id": QID}, "a") == "reason"
    assert bad(queue_admin.action_request, "bounce", {"id": QID, "reason": "a\nb"}, "a") == "reason"
    assert bad(queue_admin.action_request, "bounce", {"id": QID, "reason": "x" * 201}, "a") == "reason"
    assert bad(queue_admin.action_request, "bounce", {"all": True, "reason": "x"}, "a") == "all"
    assert bad(queue_admin.action_request, "retry", {"sender": "a@b.c"}, "a") == "sender"
    assert bad(queue_admin.action_request, "retry", {"id": QID, "when": "now"}, "a") == "when"
    assert bad(queue_admin.action_request, "retry", ["id"], "a") == "body"
    assert bad(queue_admin.action_request, "explode", {}, "a") == "action"
    assert bad(queue_admin.action_request, "suspend", {"credential": "no spaces"}, "a") == "credential"
    assert bad(queue_admin.action_request, "resume", {}, "a") == "target"
    assert queue_admin.action_request("retry", {"all": True}, "x" * 500)["by"] == "x" * queue_admin.MAX_BY


def test_show_and_list_requests() -> None:
    assert queue_admin.show_request(QID, {}) == ({"op": "queue_show", "qid": QID}, False)
    assert queue_admin.show_request(QID, {"body": "true"})[1] is True
    assert bad(queue_admin.show_request, QID, {"body": "yes please"}) == "body"
    assert bad(queue_admin.show_request, "../../etc/passwd", {}) == "id"
    assert bad(queue_admin.list_request, {"state": "deferred"}) == "state"


def test_the_summary_counts_messages_per_destination_state_and_age() -> None:
    now = 1_000_000.0
    rows = [Row("x.example", "deferred", now - 10), Row("x.example", "deferred", now - 7200),
            Row("x.example", "suspended", now - 90000), Row("a.example", "queued", now - 400)]
    summary = queue_admin.summarize(rows, now)
    assert [(g["domain"], g["state"], g["messages"]) for g in summary] == [
        ("a.example", "queued", 1), ("x.example", "suspended", 1), ("x.example", "deferred", 2)]
    deferred = summary[2]
    assert deferred["oldest"] == now - 7200
    assert deferred["ages"] == {"<5m": 1, "5m-1h": 0, "1h-6h": 1, "6h-1d": 0, ">1d": 0}
    assert summary[1]["ages"][">1d"] == 1
    assert queue_admin.summarize([], now) == []


def test_summaries_of_several_mtas_merge_into_one() -> None:
    now = 1_000_000.0
    mta0 = {"mta": "m-0", "summary": queue_admin.summarize([Row("x.example", "deferred", now - 10)], now)}
    mta1 = {"mta": "m-1", "summary": queue_admin.summarize(
        [Row("x.example", "deferred", now - 4000), Row("y.example", "in flight", now)], now)}
    merged = queue_admin.merge_summaries(json.loads(json.dumps([mta0, mta1, {"mta": "m-2", "summary": []}])))
    assert [(g["domain"], g["state"], g["messages"], g["oldest"]) for g in merged] == [
        ("x.example", "deferred", 2, now - 4000), ("y.example", "in flight", 1, now)]
    assert merged[0]["ages"] == {"<5m": 1, "5m-1h": 0, "1h-6h": 1, "6h-1d": 0, ">1d": 0}


def test_suspensions_merge_with_the_mtas_that_hold_them() -> None:
    hold = {"by": "alice", "at": 5.0}
    merged = queue_admin.merge_suspensions([
        {"mta": "m-0", "suspensions": {"domains": {"x.example": hold}, "credentials": {"billing": hold}}},
        {"mta": "m-1", "suspensions": {"domains": {"x.example": hold}, "credentials": {}}}])
    assert merged == [
        {"kind": "credential", "value": "billing", "by": "alice", "at": 5.0, "mtas": ["m-0"]},
        {"kind": "domain", "value": "x.example", "by": "alice", "at": 5.0, "mtas": ["m-0", "m-1"]}]


def test_the_suspensions_file_round_trips_and_refuses_what_is_not_it() -> None:
    holds = ({"x.example": Hold("alice", 12.5)}, {"billing": Hold("bob", 13.0)})
    assert state_files.decode_suspensions(state_files.encode_suspensions(holds)) == holds
    for broken in (b"{}", b'{"version": 1, "domains": {}}', b'{"version": 1, "domains": {"x": 1}, '
                   b'"credentials": {}}', b'{"version": 1, "domains": {"x": {"by": 1, "at": 2}}, '
                   b'"credentials": {}}', b"not json"):
        with pytest.raises(ValueError):  # noqa: PT011 - each shape fails its own way; any ValueError will do
            state_files.decode_suspensions(broken)


def test_holds_persist_and_say_what_waits(tmp_path: Path) -> None:
    path = state_files.suspensions_path(tmp_path)

    async def change() -> None:
        holds = Holds.load(path)
        assert not holds.held("billing", "a@x.example")
        assert await holds.suspend(Target("domain", "x.example"), "alice", 1.0)
        assert not await holds.suspend(Target("domain", "x.example"), "bob", 2.0)  # kept as first asked
        assert await holds.suspend(Target("credential", "billing"), "alice", 3.0)
        assert await holds.resume(Target("credential", "billing")) == Hold("alice", 3.0)
        assert await holds.resume(Target("credential", "billing")) is None
    asyncio.run(change())
    again = Holds.load(path)
    assert again.domains == {"x.example": Hold("alice", 1.0)}
    assert again.credentials == {}
    assert again.held("", "Someone@X.Example.")
    assert not again.held("billing", "a@y.example")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text("garbage")
    assert Holds.load(path).domains == {}  # unusable: logged, as if none (a fresh start)
