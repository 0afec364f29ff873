"""`kubectl mta queue`'s pure part: options checked before any MTA is asked, and the MTAs' answers merged
and rendered."""

from __future__ import annotations

import pytest
from mta_operator.kubectl_plugin import cli, queue_view
from mta_relay import queue_admin
from mta_relay.queue_admin import Row

pytestmark = pytest.mark.unit
QID = "18ec03b5ae0be5f241a84d953c"
NOW = 1_800_000_000.0


def test_selector_options_need_exactly_one_and_name_the_bad_one() -> None:
    retry = ("id", "domain", "all")
    assert queue_view.selector(retry, queue_id=QID) == {"id": QID}
    assert queue_view.selector(retry, domain="Example.NET") == {"domain": "example.net"}
    assert queue_view.selector(retry, everything=True) == {"all": True}
    assert queue_view.selector(("id", "domain", "sender"), sender="<>") == {"sender": ""}
    with pytest.raises(ValueError, match="exactly one of ID, --domain, --all"):
        queue_view.selector(retry)
    with pytest.raises(ValueError, match=r"\(got ID, --domain\)"):
        queue_view.selector(retry, queue_id=QID, domain="x.example")
    with pytest.raises(ValueError, match="exactly one of ID, --domain, --sender"):
        queue_view.selector(("id", "domain", "sender"), everything=True)
    with pytest.raises(ValueError, match="--domain 'not a domain'"):
        queue_view.selector(retry, domain="not a domain")
    with pytest.raises(ValueError, match="ID 'abc'"):
        queue_view.selector(retry, queue_id="abc")
    assert queue_view.target(domain="x.example", credential=None) == {"domain": "x.example"}
    with pytest.raises(ValueError, match="exactly one of --domain, --credential"):
        queue_view.target(domain=None, credential=None)
    with pytest.raises(ValueError, match="--credential 'a b'"):
        queue_view.target(domain=None, credential="a b")
    with pytest.raises(ValueError, match="--reason"):
        queue_view.reason("two\nlines")


def test_the_command_line_parses_each_action() -> None:
    parser = cli._parser()
    args = parser.parse_args(["queue", "bounce", "--domain", "x.example", "--reason", "moved", "--cluster",
                              "main"])
    assert (args.command, args.action, args.domain, args.reason, args.cluster) == (
        "queue", "bounce", "x.example", "moved", "main")
    assert parser.parse_args(["queue", "show", QID, "--body"]).body is True
    assert parser.parse_args(["queue", "suspend", "--credential", "billing"]).credential == "billing"
    assert parser.parse_args(["queue", "retry", "--all", "-o", "json"]).output == "json"
    with pytest.raises(SystemExit):
        parser.parse_args(["queue", "bounce", QID])  # --reason is required


def _answer(mta: str, rows: list[Row], **extra: object) -> dict[str, object]:
    return {"mta": mta, "messages": len(rows), "summary": queue_admin.summarize(rows, NOW),
            "suspensions": {"domains": {}, "credentials": {}}, **extra}


def test_ls_merges_every_mta_and_says_which_did_not_answer() -> None:
    hold = {"by": "alice", "at": NOW - 60}
    answers = {
        "main-mta-0": _answer("main-mta-0", [Row("slow.example", "deferred", NOW - 7200)],
                              suspensions={"domains": {"held.example": hold}, "credentials": {}}),
        "main-mta-1": _answer("main-mta-1", [Row("slow.example", "deferred", NOW - 30),
                                             Row("held.example", "suspended", NOW - 100)],
                              suspensions={"domains": {"held.example": hold}, "credentials": {}}),
    }
    text = queue_view.render_ls(answers, {"main-mta-2": "HTTP 503: restarting"}, NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["DESTINATION", "STATE", "MESSAGES", "OLDEST", "<5m", "5m-1h", "1h-6h",
                                "6h-1d", ">1d"]
    assert lines[1].split() == ["held.example", "suspended", "1", "1m", "1", "0", "0", "0", "0"]
    assert lines[2].split() == ["slow.example", "deferred", "2", "2h", "1", "0", "1", "0", "0"]
    assert "3 messages queued on 2 MTAs (main-mta-0: 1, main-mta-1: 2)" in text
    assert "suspended: domain held.example by alice" in text
    assert "(every MTA)" in text
    assert "warning: main-mta-2 did not answer (HTTP 503: restarting)" in text
    answers["main-mta-1"]["suspensions"] = {"domains": {}, "credentials": {}}
    assert "only on main-mta-0: suspend again" in queue_view.render_ls(answers, {}, NOW)
    assert queue_view.render_ls({"m": _answer("m", [])}, {}, NOW).startswith("the queue is empty")


def test_show_renders_the_envelope_and_recipients_and_the_body_only_when_given() -> None:
    answer = {"mta": "main-mta-1", "id": QID, "state": "deferred", "attempts": 2, "next_attempt": NOW + 300,
              "envelope": {"sender": "app@example.com", "recipients": ["a@x.example", "b@y.example"],
                           "credential": "billing", "client_ip": "10.0.0.7", "received_at": NOW - 600,
                           "source": "smtp", "size": 2381, "message_id": "<m1@example.com>",
                           "smtputf8": False},
              "recipients": [{"recipient": "a@x.example", "state": "deferred", "reply": "451 4.2.0 busy",
                              "at": NOW - 60},
                             {"recipient": "b@y.example", "state": "delivered", "reply": "250 2.0.0 OK",
                              "at": NOW - 590}]}
    text = queue_view.render_show(answer, NOW)
    assert f"queue id {QID}  on main-mta-1  deferred  attempts 2" in text
    assert "(in 5m)" in text
    assert "(10m ago)" in text
    assert "credential billing" in text
    assert any(line.split()[:2] == ["a@x.example", "deferred"] and "451 4.2.0 busy" in line
               for line in text.splitlines())
    assert "--- message ---" not in text
    shown = queue_view.render_show(answer, NOW, b"Subject: hi\r\n\r\nbody\r\n")
    assert shown.endswith("--- message ---\nSubject: hi\n\nbody")


def test_actions_sum_what_every_mta_did() -> None:
    retried = queue_view.render_action("retry", {
        "m-0": {"retried": [QID], "in_flight": [], "suspended": ["q2"]},
        "m-1": {"retried": ["q3", "q4"], "in_flight": ["q5"], "suspended": []}}, {})
    assert retried.splitlines() == ["retrying now: 3 messages (m-0: 1, m-1: 2)", "1 being delivered already",
                                    "1 held by a suspension: resume it first"]
    bounced = queue_view.render_action("bounce", {
        "m-0": {"bounced": [{"id": QID, "recipients": ["a@x", "b@x"], "dsn": True}], "in_flight": []},
        "m-1": {"bounced": [{"id": "q2", "recipients": ["c@x"], "dsn": False}], "in_flight": []}},
        {"m-2": "HTTP 403: forbidden"})
    assert bounced.splitlines()[0] == ("returned to the sender: 3 recipients of 2 messages (m-0: 1, m-1: 1); "
                                       "1 DSNs queued (none to the null sender)")
    assert "warning: m-2 did not answer (HTTP 403: forbidden); it was not asked" in bounced
    suspended = queue_view.render_action("suspend", {
        m: {"suspended": {"domain": "x.example"}, "held": 2, "changed": True} for m in ("m-0", "m-1")}, {})
    assert suspended.startswith("suspended domain x.example on 2 MTAs: 4 messages held now")
    resumed = queue_view.render_action("resume", {
        "m-0": {"resumed": {"domain": "x.example"}, "released": 3, "changed": True},
        "m-1": {"resumed": {"domain": "x.example"}, "released": 0, "changed": False}}, {})
    assert resumed == "resumed domain x.example on 2 MTAs (1 had it): 3 messages due now"


def test_durations_read_like_kubectl_ages() -> None:
    assert [queue_view.duration(s) for s in (-5, 42, 61, 7200, 90000)] == ["0s", "42s", "1m", "2h", "1d"]
