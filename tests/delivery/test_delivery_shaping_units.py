"""Pure parts of shaping and routes: the built-in table, rule precedence, field fallback, throttle replies,
the shaper's counters and suspensions, route selection."""

from __future__ import annotations

import pytest
from mta_relay import config as rc
from mta_relay.delivery.client import HopPolicy, TlsMode
from mta_relay.delivery.router import Routes, route_groups, smarthost_route, smarthosts_route
from mta_relay.delivery.shaping import (
    Shaper,
    ShapingTable,
    SuspensionEnded,
    SuspensionStarted,
    TableError,
    Throttle,
    builtin_table,
    host_matches,
    is_throttle,
    parse_table,
)

pytestmark = pytest.mark.unit

TSS04 = Throttle(421, "4.7.0", "4.7.0 [TSS04] Messages temporarily deferred")
GMAIL_MX = ["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"]


def rule(name: str, **fields: object) -> rc.ShapingRule:
    return rc.ShapingRule.model_validate({"name": name, **fields})


def test_builtin_table_loads_and_every_entry_cites_a_source() -> None:
    table = builtin_table()
    names = [r.name for r in table.rules]
    assert {"google", "microsoft-consumer", "microsoft-365", "yahoo", "apple"} <= set(names)
    assert set(table.sources) == {"default", *names}
    for name, sources in table.sources.items():
        assert sources, name
        assert all(s.startswith("https://") for s in sources), name
    # Every rule matches something and sets at least one limit of its own.
    for r in table.rules:
        assert r.domains or r.mx_hosts
        assert any(getattr(r, f) is not None for f in rc.ShapingLimits.model_fields), r.name


def test_a_table_entry_without_sources_is_refused() -> None:
    with pytest.raises(TableError, match="sources"):
        parse_table('[default]\nmax_connections = 1\nsources = ["https://x"]\n'
                    '[[rule]]\nname = "a"\ndomains = ["a.example"]\nmax_connections = 2\n')


def test_builtin_default_keeps_the_previous_ten_connections_and_no_rate() -> None:
    default = ShapingTable().default
    assert (default.max_connections, default.rate) == (10, None)


def test_google_workspace_domains_share_gmails_rule_and_counters() -> None:
    table = ShapingTable()
    gmail = table.match("gmail.com", GMAIL_MX)
    workspace = table.match("corp.example", ["aspmx.l.google.com", "alt1.aspmx.l.google.com"])
    assert gmail.rule == workspace.rule == "google"
    assert gmail.key == workspace.key  # one set of counters for the provider
    assert gmail.limits.max_connections == 5


def test_default_counts_each_domain_on_its_own() -> None:
    table = ShapingTable()
    a, b = table.match("a.example", ["mx.a.example"]), table.match("b.example", ["mx.b.example"])
    assert a.rule == b.rule == "default"
    assert a.key != b.key


def test_precedence_user_domain_then_user_mx_then_builtin_domain_then_builtin_mx_then_default() -> None:
    settings = rc.Shaping(rules=[
        rule("by-mx", mx_hosts=[".google.com"], max_connections=2),
        rule("by-domain", domains=["gmail.com", "comcast.net"], max_connections=1),
    ])
    table = ShapingTable(settings)
    assert table.match("gmail.com", GMAIL_MX).rule == "by-domain"  # 1: user, by domain
    assert table.match("corp.example", ["aspmx.l.google.com"]).rule == "by-mx"  # 2: user, by MX
    assert table.match("comcast.net", ["mx.comcast.net"]).rule == "by-domain"
    plain = ShapingTable()
    assert plain.match("comcast.net", ["mx.comcast.net"]).origin == "builtin"  # 3: built-in by domain
    assert plain.match("x.example", ["mx1.mail.icloud.com"]).rule == "apple"  # 4: built-in by MX
    assert plain.match("x.example", ["mx.x.example"]).origin == "default"  # 5


def test_longest_mx_pattern_wins_and_exact_beats_suffix() -> None:
    table = ShapingTable(rc.Shaping(builtin=False, rules=[
        rule("broad", mx_hosts=[".com"], max_connections=1),
        rule("narrow", mx_hosts=[".google.com"], max_connections=2),
        rule("exact", mx_hosts=["aspmx.l.google.com"], max_connections=3),
    ]))
    assert table.match("a.example", ["alt1.aspmx.l.google.com"]).rule == "narrow"
    assert table.match("a.example", ["aspmx.l.google.com"]).rule == "exact"
    assert table.match("a.example", ["mx.other.com"]).rule == "broad"


def test_host_patterns() -> None:
    assert host_matches(".google.com", "ASPMX.L.GOOGLE.COM.")
    assert not host_matches(".google.com", "google.com.evil.example")
    assert not host_matches(".google.com", "notgoogle.com")
    assert host_matches("aspmx.l.google.com", "aspmx.l.google.com")
    assert not host_matches("aspmx.l.google.com", "alt1.aspmx.l.google.com")


def test_unset_fields_come_from_the_users_default_then_the_builtin_default() -> None:
    table = ShapingTable(rc.Shaping(
        default=rc.ShapingLimits(messages_per_connection=7),
        rules=[rule("slow", domains=["slow.example"], rate=rc.ShapingRate(messages=5, period_seconds=60))]))
    slow = table.match("slow.example", ["mx.slow.example"]).limits
    assert slow.rate == (5, 60.0)
    assert slow.messages_per_connection == 7  # the user's default
    assert slow.max_connections == 10  # the built-in default
    # A user rule replaces a built-in one wholesale: Gmail's 5 connections do not leak into it.
    mine = ShapingTable(rc.Shaping(rules=[rule("g", mx_hosts=[".google.com"], rate=rc.ShapingRate(
        messages=1, period_seconds=1))])).match("gmail.com", GMAIL_MX).limits
    assert (mine.max_connections, mine.rate) == (10, (1, 1.0))


def test_builtin_table_can_be_switched_off() -> None:
    assert ShapingTable(rc.Shaping(builtin=False)).match("gmail.com", GMAIL_MX).rule == "default"


def test_smarthost_routes_match_their_hosts_and_count_as_one_destination() -> None:
    table = ShapingTable(rc.Shaping(rules=[rule("relay", mx_hosts=["relay.example.net"], max_connections=3)]))
    match = table.match(None, ["relay.example.net"], route="default")
    assert (match.rule, match.key, match.limits.max_connections) == ("relay", "route:default", 3)


@pytest.mark.parametrize(("code", "text", "throttle"), [
    (421, "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred", True),
    (421, "4.7.28 Our system has detected an unusual rate of unsolicited mail", True),
    (451, "4.7.650 The mail server has been temporarily rate limited", True),
    (421, "Service not available, closing transmission channel", True),
    (450, "4.2.0 Greylisted, try again later", False),
    (451, "4.3.0 Temporary local problem", False),
    (550, "5.7.1 Rejected by policy", False),
])
def test_throttle_replies(code: int, text: str, throttle: bool) -> None:
    assert is_throttle(code, text) is throttle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_shaper_counts_connections_and_rate_and_says_when_there_is_room() -> None:
    clock = Clock()
    table = ShapingTable(rc.Shaping(builtin=False, rules=[rule(
        "r", domains=["r.example"], max_connections=2, rate=rc.ShapingRate(messages=3, period_seconds=10))]))
    shaper = Shaper(table, clock=clock)
    match = table.match("r.example", [])
    assert shaper.free(match.key) == 1  # never seen: one attempt finds out
    assert shaper.try_acquire(match)
    assert shaper.try_acquire(match)
    assert not shaper.try_acquire(match)  # both connections in use
    assert shaper.ready_at(match.key) is None  # only a release frees it
    shaper.release(match.key)
    assert shaper.free(match.key) == 1
    assert shaper.try_acquire(match)  # the third start in the window
    shaper.release(match.key)
    shaper.release(match.key)
    assert shaper.free(match.key) == 0  # the rate: three starts in 10 s
    assert shaper.ready_at(match.key) == 10.0
    clock.now = 10.0
    assert shaper.free(match.key) == 2


def test_throttle_suspends_growing_on_repeats_and_a_delivery_resets_it() -> None:
    clock = Clock()
    freed: list[int] = []
    shaper = Shaper(ShapingTable(), suspend_first=10, suspend_max=25, clock=clock)
    shaper.on_free = lambda: freed.append(1)
    started: list[SuspensionStarted] = []
    ended: list[SuspensionEnded] = []
    shaper.on_suspend, shaper.on_end = started.append, ended.append
    match = shaper.table.match("t.example", [])
    assert shaper.throttled(match, TSS04) == 10
    assert shaper.throttled(match, TSS04) == 10  # transactions in flight report it again: same suspension
    assert not shaper.try_acquire(match)
    assert shaper.free(match.key) == 0
    assert shaper.ready_at(match.key) == 10
    clock.now = 10
    assert shaper.try_acquire(match)
    shaper.release(match.key)
    assert freed == [1]
    assert shaper.throttled(match, TSS04) == 30  # second strike: 20 s
    clock.now = 30
    assert shaper.throttled(match, TSS04) == 55  # capped at 25 s
    clock.now = 55
    shaper.delivered(match.key)
    assert shaper.throttled(match, TSS04) == 65  # back to the first step
    # Once per suspension started (the metric, the log line), never per repeat.
    assert [(s.rule, s.seconds, s.strikes) for s in started] == [("default", 10, 1), ("default", 20, 2),
                                                                  ("default", 25, 3), ("default", 10, 1)]
    assert [(e.key, e.strikes, e.throttled_seconds) for e in ended] == [(match.key, 3, 55)]
    assert started[0].log_fields() == {
        "event": "destination_suspended", "destination": "domain:t.example", "rule": "default",
        "suspended_seconds": 10, "strikes": 1, "code": 421, "status": "4.7.0",
        "reply": "4.7.0 [TSS04] Messages temporarily deferred"}


def test_a_reconfigured_shaper_keeps_its_counters_and_takes_the_new_limits() -> None:
    clock = Clock()
    old = ShapingTable(rc.Shaping(rules=[rule("paced", domains=["p.example"], max_connections=1,
                                              rate={"messages": 2, "period_seconds": 10}),
                                         rule("busy", domains=["b.example"])]))
    shaper = Shaper(old, suspend_first=10, suspend_max=100, clock=clock)
    paced, busy = old.match("p.example", []), old.match("b.example", [])
    assert shaper.try_acquire(paced)  # in progress across the reload
    shaper.throttled(busy, TSS04)
    new = ShapingTable(rc.Shaping(rules=[rule("paced", domains=["p.example"], max_connections=3,
                                              rate={"messages": 3, "period_seconds": 10}),
                                         rule("busy", domains=["b.example"], max_connections=5)]))
    shaper.reconfigure(new, suspend_first=20, suspend_max=100)
    assert shaper.table is new
    assert shaper.in_use(paced.key) == 1
    assert shaper.free(busy.key) == 0  # still suspended, whatever its rule now
    assert shaper.ready_at(busy.key) == 10
    assert not shaper.try_acquire(new.match("b.example", []))
    paced = new.match("p.example", [])
    assert shaper.try_acquire(paced)  # the new limits: three at once, three starts in the window
    assert shaper.try_acquire(paced)
    assert not shaper.try_acquire(paced)  # the window kept the start made before the reload
    assert shaper.in_use(paced.key) == 3
    for _ in range(3):
        shaper.release(paced.key)  # the first one releases what it took before the reload
    assert shaper.free(paced.key) == 0
    clock.now = 10
    assert shaper.free(paced.key) == 3
    shaper.throttled(busy, TSS04)
    assert shaper.suspended() == [(busy.key, 50)]  # the second strike, of the new first step: 40 s


def policy(port: int = 25) -> HopPolicy:
    return HopPolicy(helo_name="mta.test", port=port, tls=TlsMode.NONE)


def test_route_selection_recipient_then_sender_then_default() -> None:
    default = smarthost_route("default.example", policy())
    by_rcpt = smarthosts_route([("a.example", policy()), ("b.example", policy(2525))], "partners")
    by_sender = smarthost_route("marketing-relay.example", policy(), "marketing")
    routes = Routes(default, {"partner.example": by_rcpt}, {"news.example.com": by_sender})
    assert routes.select("app@example.com", "x@Partner.Example") is by_rcpt
    assert routes.select("app@news.example.com", "x@partner.example") is by_rcpt  # recipient first
    assert routes.select("app@news.example.com", "x@other.example") is by_sender
    assert routes.select("app@example.com", "x@other.example") is default
    assert routes.select("", "x@other.example") is default  # a bounce has no sender domain
    assert by_rcpt.policy_at(1).port == 2525


def test_route_groups_split_by_route_and_by_domain_for_mx() -> None:
    default = smarthost_route("default.example", policy())
    partners = smarthost_route("relay.partner.example", policy(), "partners")
    groups = route_groups(Routes(default, {"p.example": partners}), "a@example.com",
                          ["x@p.example", "y@q.example", "z@p.example", "w@r.example"])
    assert {k: v[1] for k, v in groups.items()} == {
        ("partners", "partners"): ["x@p.example", "z@p.example"],
        ("default", "default"): ["y@q.example", "w@r.example"]}


def test_relay_config_refuses_inconsistent_routes_and_rules() -> None:
    with pytest.raises(ValueError, match="needs recipientDomains or senderDomains"):
        rc.Route(name="r", mode="MX")
    with pytest.raises(ValueError, match="smarthosts are for mode Smarthost"):
        rc.Route(name="r", recipient_domains=["a.example"], mode="Smarthost")
    with pytest.raises(ValueError, match="needs domains or mxHosts"):
        rc.ShapingRule(name="r")
    with pytest.raises(ValueError, match="names must be unique"):
        rc.Shaping(rules=[rule("a", domains=["a.example"]), rule("a", domains=["b.example"])])
