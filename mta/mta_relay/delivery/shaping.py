"""Per-destination shaping: which limits a destination gets, and the counters that hold it to them.

The limits are data: the built-in table ``shaping.toml`` beside this module (large providers, each entry
citing its sources) under the user's ``delivery.shaping`` (``mta_relay.config.Shaping``). A destination
is a recipient domain (MX routes) or a route's smarthosts. ``ShapingTable.match`` picks its rule, in
this order, the first that applies winning:

1. a user rule listing the recipient domain (``domains``, exact);
2. a user rule with an ``mx_hosts`` pattern matching one of the domain's MX hosts (a smarthost route: one
   of its smarthosts' names); the longest pattern wins (an exact host beats a suffix), then the earlier
   rule;
3. a built-in rule by domain, then 4. a built-in rule by MX host, the same way;
5. the default.

Each limit a rule leaves unset comes from the user's default, then the built-in default. Counters are
per destination key: a rule matched by domain (and the default) counts each domain on its own; a rule
matched by MX host counts every domain it matched together (all Google Workspace domains share Gmail's
connections and rate, as they share its MX hosts); a smarthost route counts as one destination.

``Shaper`` keeps the counters: transactions in progress, a sliding window per rate, and suspensions. A
throttle reply (``is_throttle``: 421, or a 4xx with an enhanced 4.7.x code) suspends the destination for
``suspend_first`` seconds, doubling on each further throttle up to ``suspend_max``; a delivery resets
it. Nothing here waits or sleeps: ``try_acquire`` says yes or no, and the queue runner parks mail that
got a no until ``ready_at`` or a release (``on_free``), so one throttled destination never holds up the
others. A suspension started (``SuspensionStarted``) and one ended by a delivery (``SuspensionEnded``)
are reported through ``on_suspend`` and ``on_end``; this module owns their log lines' fields.

A config reload keeps the ``Shaper`` (``reconfigure``): transactions in progress, rate windows and
suspensions carry over, and each destination takes its new rule's limits at its next attempt.
"""

from __future__ import annotations

import functools
import re
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from mta_relay import config as rc
from mta_relay.ratelimit import SlidingWindowLimit

TABLE_FILE = "shaping.toml"
_ENHANCED = re.compile(r"^\s*4\.7\.\d{1,3}\b")
_DATA_KEYS = frozenset({"sources", "note"})

Origin = Literal["user", "builtin", "default"]


@dataclass(frozen=True)
class Limits:
    """The limits in force for one destination, every field set."""

    max_connections: int
    messages_per_connection: int
    rate: tuple[int, float] | None  # (messages, period seconds); None: no rate limit
    connect_timeout: float
    transaction_timeout: float


@dataclass(frozen=True)
class Match:
    """The rule a destination got: ``key`` scopes its counters, ``rule`` names it (logs, metrics)."""

    key: str
    rule: str
    origin: Origin
    limits: Limits


@dataclass(frozen=True)
class BuiltinTable:
    """``shaping.toml`` parsed: the default and the rules, each with its ``sources``."""

    default: rc.ShapingLimits
    rules: tuple[rc.ShapingRule, ...]
    sources: dict[str, tuple[str, ...]]  # rule name ("default" too) → its sources


class TableError(ValueError):
    """The built-in table is malformed; the message names the entry."""


def parse_table(text: str) -> BuiltinTable:
    data = tomllib.loads(text)
    sources: dict[str, tuple[str, ...]] = {}

    def limits(name: str, entry: dict[str, Any]) -> dict[str, Any]:
        cited = entry.get("sources")
        if not isinstance(cited, list) or not cited or not all(isinstance(s, str) and s for s in cited):
            raise TableError(f"{TABLE_FILE}: {name}: every entry needs sources (a list of URLs)")
        sources[name] = tuple(cited)
        return {k: v for k, v in entry.items() if k not in _DATA_KEYS}

    try:
        default = rc.ShapingLimits.model_validate(limits("default", data.get("default", {})))
        rules = tuple(rc.ShapingRule.model_validate(limits(str(entry.get("name", f"rule {i}")), entry))
                      for i, entry in enumerate(data.get("rule", [])))
    except ValueError as error:  # pydantic's ValidationError is one
        raise TableError(f"{TABLE_FILE}: {error}") from None
    if set(data) - {"default", "rule"}:
        raise TableError(f"{TABLE_FILE}: unknown sections {sorted(set(data) - {'default', 'rule'})}")
    if len({r.name for r in rules}) != len(rules):
        raise TableError(f"{TABLE_FILE}: rule names must be unique")
    return BuiltinTable(default, rules, sources)


@functools.cache
def builtin_table() -> BuiltinTable:
    return parse_table(resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8"))


def host_matches(pattern: str, host: str) -> bool:
    """``.google.com`` matches any host under google.com; a pattern without the dot only that host."""
    host = host.lower().rstrip(".")
    return host.endswith(pattern) if pattern.startswith(".") else host == pattern


def _by_host(rules: Sequence[rc.ShapingRule], hosts: Sequence[str]) -> rc.ShapingRule | None:
    best: tuple[int, int, rc.ShapingRule] | None = None
    for index, rule in enumerate(rules):
        for pattern in rule.mx_hosts:
            if any(host_matches(pattern, host) for host in hosts):
                # An exact host beats any suffix; a longer suffix beats a shorter; then rule order.
                weight = 1000 if not pattern.startswith(".") else len(pattern)
                if best is None or (weight, -index) > (best[0], -best[1]):
                    best = (weight, index, rule)
    return best[2] if best else None


class ShapingTable:
    """The user's shaping settings over the built-in table; ``match`` applies the precedence above."""

    def __init__(self, settings: rc.Shaping | None = None, builtin: BuiltinTable | None = None) -> None:
        settings = settings or rc.Shaping()
        table = builtin or builtin_table()
        self.user_rules = tuple(settings.rules)
        self.builtin_rules = table.rules if settings.builtin else ()
        self.default = _resolve(settings.default, _floor(table.default))

    def limits_of(self, rule: rc.ShapingLimits) -> Limits:
        return _resolve(rule, self.default)

    def match(self, domain: str | None, hosts: Sequence[str], *, route: str | None = None) -> Match:
        """The rule for recipient ``domain`` whose MX hosts are ``hosts`` or, for a smarthost ``route``
        (``domain`` None), for the route whose smarthosts are ``hosts``."""
        scope = f"route:{route}" if route is not None else f"domain:{domain}"
        tables: tuple[tuple[Origin, Sequence[rc.ShapingRule]], ...] = (
            ("user", self.user_rules), ("builtin", self.builtin_rules))
        for origin, rules in tables:
            if domain is not None:
                found = next((r for r in rules if domain in r.domains), None)
                if found is not None:
                    return Match(scope, found.name, origin, self.limits_of(found))
            found = _by_host(rules, hosts)
            if found is not None:
                key = scope if route is not None else f"rule:{origin}:{found.name}"
                return Match(key, found.name, origin, self.limits_of(found))
        return Match(scope, "default", "default", self.default)


def _resolve(rule: rc.ShapingLimits, floor: Limits) -> Limits:
    """``rule``'s limits, each unset one taken from ``floor``."""
    def pick(value: Any, fallback: Any) -> Any:
        return fallback if value is None else value
    return Limits(
        max_connections=pick(rule.max_connections, floor.max_connections),
        messages_per_connection=pick(rule.messages_per_connection, floor.messages_per_connection),
        rate=(rule.rate.messages, rule.rate.period_seconds) if rule.rate is not None else floor.rate,
        connect_timeout=pick(rule.connect_timeout_seconds, floor.connect_timeout),
        transaction_timeout=pick(rule.transaction_timeout_seconds, floor.transaction_timeout))


def _floor(default: rc.ShapingLimits) -> Limits:
    """The built-in default: it must set every limit but the rate."""
    needed = (default.max_connections, default.messages_per_connection, default.connect_timeout_seconds,
              default.transaction_timeout_seconds)
    if any(value is None for value in needed):
        raise TableError(f"{TABLE_FILE}: [default] must set every limit but rate")
    return _resolve(default, Limits(1, 1, None, 1.0, 1.0))


def is_throttle(code: int, text: str) -> bool:
    """A reply that says "slow down": 421 (service closing, the usual throttle), or any 4xx whose
    enhanced code is 4.7.x (Gmail's 421 4.7.28, Microsoft's 451 4.7.650, Yahoo's 421 4.7.0 [TSS04])."""
    return code == 421 or (400 <= code < 500 and _ENHANCED.match(text) is not None)


@dataclass(frozen=True)
class Throttle:
    """The throttle reply a destination gave: code, enhanced status code ("4.7.0"; "4.0.0" derived
    when the text has none) and the remote server's text. Never anything of the message."""

    code: int
    status: str
    text: str


@dataclass(frozen=True)
class SuspensionStarted:
    """A destination was suspended after ``reply``: for ``seconds``, its ``strikes``-th in a row."""

    key: str
    rule: str
    seconds: float
    strikes: int
    reply: Throttle

    def log_fields(self) -> dict[str, object]:
        return {"event": "destination_suspended", "destination": self.key, "rule": self.rule,
                "suspended_seconds": round(self.seconds, 3), "strikes": self.strikes,
                "code": self.reply.code, "status": self.reply.status, "reply": self.reply.text}


@dataclass(frozen=True)
class SuspensionEnded:
    """A destination took mail again after ``strikes`` suspensions in a row, ``throttled_seconds`` after
    the first of them started: the next throttle starts from the first step."""

    key: str
    rule: str
    strikes: int
    throttled_seconds: float

    def log_fields(self) -> dict[str, object]:
        return {"event": "destination_suspension_ended", "destination": self.key, "rule": self.rule,
                "strikes": self.strikes, "throttled_seconds": round(self.throttled_seconds, 3)}


@dataclass
class _Suspension:
    until: float
    strikes: int
    rule: str
    since: float  # when the first suspension of this row started


class Shaper:
    """The counters of every destination of one route set. Single event loop, no locks."""

    def __init__(self, table: ShapingTable | None = None, *, suspend_first: float = 60.0,
                 suspend_max: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table or ShapingTable()
        self.suspend_first, self.suspend_max = suspend_first, suspend_max
        self._clock = clock
        self._in_use: dict[str, int] = {}
        self._limits: dict[str, Limits] = {}
        self._windows: dict[str, SlidingWindowLimit] = {}
        self._suspended: dict[str, _Suspension] = {}
        self.on_free: Callable[[], None] | None = None  # a connection was released: parked mail may go
        self.on_suspend: Callable[[SuspensionStarted], None] | None = None  # a suspension started
        self.on_end: Callable[[SuspensionEnded], None] | None = None  # a delivery after suspensions
        self.throttles = 0  # suspensions started, for tests

    def reconfigure(self, table: ShapingTable, *, suspend_first: float, suspend_max: float) -> None:
        """A reload's rules and suspension steps. The counters stay: transactions in progress (they
        release here), rate windows (their starts), suspensions (their end, and their count for the next
        step). The limits remembered per destination are the old rules': they are dropped, and each
        destination takes its new rule's limits at its next ``try_acquire``."""
        self.table = table
        self.suspend_first, self.suspend_max = suspend_first, suspend_max
        self._limits.clear()

    def try_acquire(self, match: Match) -> bool:
        """Take a transaction slot at ``match``'s destination if it is not suspended and has a connection
        and a rate slot free. Pair every True with ``release``."""
        key, limits, now = match.key, match.limits, self._clock()
        self._limits[key] = limits
        if self.suspended_until(key, now) is not None:
            return False
        if self._in_use.get(key, 0) >= limits.max_connections:
            return False
        window = self._window(key, limits)
        if window is not None and not window.try_acquire(now):
            return False
        self._in_use[key] = self._in_use.get(key, 0) + 1
        return True

    def release(self, key: str) -> None:
        self._in_use[key] -= 1
        if not self._in_use[key]:
            del self._in_use[key]
        if self.on_free is not None:
            self.on_free()

    def _window(self, key: str, limits: Limits) -> SlidingWindowLimit | None:
        if limits.rate is None:
            self._windows.pop(key, None)
            return None
        window = self._windows.get(key)
        if window is None or (window.messages, window.period) != limits.rate:
            window = self._windows[key] = SlidingWindowLimit(*limits.rate, window.starts if window else ())
        return window

    def in_use(self, key: str) -> int:
        return self._in_use.get(key, 0)

    def suspended_until(self, key: str, now: float | None = None) -> float | None:
        suspension = self._suspended.get(key)
        now = self._clock() if now is None else now
        return suspension.until if suspension is not None and suspension.until > now else None

    def free(self, key: str, now: float | None = None) -> int:
        """How many transactions could start at ``key`` now (0 while suspended)."""
        now = self._clock() if now is None else now
        if self.suspended_until(key, now) is not None:
            return 0
        limits = self._limits.get(key)
        if limits is None:
            return 1  # never seen, or not since a reload: one attempt finds out
        free = limits.max_connections - self._in_use.get(key, 0)
        window = self._windows.get(key)
        if window is not None:
            window.next_free(now)  # expires old starts
            free = min(free, window.messages - len(window.starts))
        return max(0, free)

    def ready_at(self, key: str, now: float | None = None) -> float | None:
        """When ``key`` may take mail again by the clock (suspension end, the rate window's next slot);
        None when only a released connection can free it (``on_free`` says when)."""
        now = self._clock() if now is None else now
        until = self.suspended_until(key, now)
        if until is not None:
            return until
        window = self._windows.get(key)
        if window is not None and window.next_free(now) > now:
            return window.next_free(now)
        return None

    def throttled(self, match: Match, reply: Throttle) -> float:
        """``match``'s destination answered ``reply``, a throttle: suspend it (longer on each repeat);
        returns until when."""
        key, now = match.key, self._clock()
        previous = self._suspended.get(key)
        if previous is not None and previous.until > now:
            return previous.until  # the transactions in flight when it was suspended report it again
        strikes = previous.strikes + 1 if previous is not None else 1
        seconds = min(self.suspend_max, self.suspend_first * 2.0 ** (strikes - 1))
        since = previous.since if previous is not None else now
        self._suspended[key] = _Suspension(now + seconds, strikes, match.rule, since)
        self.throttles += 1
        if self.on_suspend is not None:
            self.on_suspend(SuspensionStarted(key, match.rule, seconds, strikes, reply))
        return now + seconds

    def delivered(self, key: str) -> None:
        """A transaction went through: the next throttle starts from the first suspension again."""
        now = self._clock()
        suspension = self._suspended.get(key)
        if suspension is not None and suspension.until <= now:
            del self._suspended[key]
            if self.on_end is not None:
                self.on_end(SuspensionEnded(key, suspension.rule, suspension.strikes, now - suspension.since))

    def suspended(self) -> list[tuple[str, float]]:
        """Destinations suspended now, with until when (the metrics count them at each scrape)."""
        now = self._clock()
        return [(key, s.until) for key, s in self._suspended.items() if s.until > now]
