"""Queue administration's wire formats, in one place: the HTTP paths and parameters of
``/admin/v1/queue...`` on each MTA, the channel ops that carry them from the front door to the delivery
process (which owns the queue), and the shape of their answers, including the summary that
``kubectl mta queue ls`` merges across MTAs. Pure: parsing, checking, summing; no I/O.

Paths (all JSON; reached through the API server's pod proxy, see ``admin_api``)::

    GET  /admin/v1/queue                   summary by destination, state and age; the suspensions
    GET  /admin/v1/queue/messages/<id>     one entry: envelope, state per recipient (?body=true: the message)
    POST /admin/v1/queue/retry             {"id"|"domain"|"all": ...}            try now
    POST /admin/v1/queue/bounce            {"id"|"domain"|"sender": ..., "reason"}  DSN + AdminBounce events
    POST /admin/v1/queue/suspend           {"domain"|"credential": ...}          hold, never bounce
    POST /admin/v1/queue/resume            {"domain"|"credential": ...}

A bad parameter is a 400 whose error names it (``BadParameter``); an unknown queue id a 404.

Channel ops (front door → delivery, ``delivery.channel``): ``queue_list``, ``queue_show``, ``queue_retry``,
``queue_bounce``, ``queue_suspend``, ``queue_resume``, each with the request ``id`` the channel adds, the
checked parameters and ``by`` (who asked); the answer is ``queue_answer`` (``id``, ``status``, ``body``):
the HTTP status and JSON body the front door passes on. Message bytes never cross the channel here: the
front door reads a body it was asked for from its own spool.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mta_relay.usernames import USERNAME_MAX, is_username

QUEUE_PATH = "/admin/v1/queue"
MESSAGES_PATH = f"{QUEUE_PATH}/messages"  # /<queue id>
ACTIONS = ("retry", "bounce", "suspend", "resume")  # POST {QUEUE_PATH}/<action>

OP_LIST, OP_SHOW = "queue_list", "queue_show"
OP_RETRY, OP_BOUNCE, OP_SUSPEND, OP_RESUME = "queue_retry", "queue_bounce", "queue_suspend", "queue_resume"
OPS = frozenset({OP_LIST, OP_SHOW, OP_RETRY, OP_BOUNCE, OP_SUSPEND, OP_RESUME})
ACTION_OPS = {"retry": OP_RETRY, "bounce": OP_BOUNCE, "suspend": OP_SUSPEND, "resume": OP_RESUME}
REPLY = "queue_answer"

# A message's state for one destination: being tried now, held by a suspension, waiting to retry after a
# failed attempt, or waiting for its first attempt (or for a delivery slot or the rate limit).
STATES = ("in flight", "suspended", "deferred", "queued")
State = Literal["in flight", "suspended", "deferred", "queued"]
AGE_BUCKETS: tuple[tuple[float, str], ...] = (
    (300, "<5m"), (3600, "5m-1h"), (21600, "1h-6h"), (86400, "6h-1d"), (math.inf, ">1d"))
AGE_LABELS = tuple(label for _, label in AGE_BUCKETS)

MAX_REASON = 200
MAX_BY = 200
MAX_BODY = 64 << 10  # an action's JSON body: a few short fields
_QID = re.compile(r"^[0-9a-f]{26}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[\w-]+(\.[\w-]+)*$")  # letters (IDN too), digits, - and _
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadParameter(ValueError):
    """A parameter the queue API cannot use; ``str()`` names it first (``domain: ...``)."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name}: {why}")
        self.name = name


def domain_of(address: str) -> str:
    """A recipient's destination: its domain, compared case-insensitively, without a trailing dot."""
    return address.rsplit("@", 1)[-1].lower().rstrip(".")


# --- selectors --------------------------------------------------------------------------------------
SelectorKind = Literal["id", "domain", "sender", "all"]


@dataclass(frozen=True)
class Selector:
    """Which queued mail an action applies to: one entry, every entry with a recipient in a domain, every
    entry from an envelope sender (``""``: the null sender), or everything."""

    by: SelectorKind
    value: str = ""

    def matches(self, queue_id: str, mail_from: str, rcpts: Iterable[str]) -> bool:
        if self.by == "all":
            return True
        if self.by == "id":
            return queue_id == self.value
        if self.by == "sender":
            return mail_from.lower() == self.value
        return any(domain_of(r) == self.value for r in rcpts)

    def recipients(self, rcpts: Iterable[str]) -> list[str]:
        """The recipients of a matching entry the action is for: a domain's own, else all of them."""
        if self.by == "domain":
            return [r for r in rcpts if domain_of(r) == self.value]
        return list(rcpts)

    def to_json(self) -> dict[str, Any]:
        return {self.by: True if self.by == "all" else self.value}

    def __str__(self) -> str:
        return "all" if self.by == "all" else f"{self.by} {self.value or '<>'}"


def _text(raw: Mapping[str, object], name: str) -> str:
    value = raw[name]
    if not isinstance(value, str) or not value.strip():
        raise BadParameter(name, "a non-empty string expected")
    return value.strip()


def check_domain(value: str, name: str = "domain") -> str:
    domain = value.strip().lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise BadParameter(name, "a domain such as example.net expected")
    return domain


def check_queue_id(value: str, name: str = "id") -> str:
    if not _QID.match(value):
        raise BadParameter(name, "a queue id (26 hex digits) expected")
    return value


def parse_selector(raw: Mapping[str, object], allowed: Sequence[SelectorKind]) -> Selector:
    """Exactly one of ``allowed`` (``id``, ``domain``, ``sender``, ``all``) in ``raw``."""
    given = [k for k in allowed if k in raw]
    if len(given) != 1:
        raise BadParameter(given[1] if given else "selector",
                           f"exactly one of {', '.join(allowed)} expected")
    kind = given[0]
    if kind == "all":
        if raw["all"] is not True:
            raise BadParameter("all", "true expected")
        return Selector("all")
    if kind == "sender":
        value = raw["sender"]
        if not isinstance(value, str) or _CONTROL.search(value) or len(value) > 998:
            raise BadParameter("sender", "an address, or <> for the null sender, expected")
        value = value.strip()
        if value in ("<>", ""):
            return Selector("sender", "")
        if "@" not in value:
            raise BadParameter("sender", "an address, or <> for the null sender, expected")
        return Selector("sender", value.strip("<>").lower())
    text = _text(raw, kind)
    return Selector(kind, check_queue_id(text) if kind == "id" else check_domain(text))


def parse_reason(raw: Mapping[str, object]) -> str:
    if "reason" not in raw:
        raise BadParameter("reason", "required: why the mail is bounced (it goes into the DSN)")
    reason = _text(raw, "reason")
    if len(reason) > MAX_REASON or _CONTROL.search(reason):
        raise BadParameter("reason", f"one line of at most {MAX_REASON} characters expected")
    return reason


# --- suspensions ------------------------------------------------------------------------------------
TargetKind = Literal["domain", "credential"]


@dataclass(frozen=True)
class Target:
    """What a suspension holds: mail to a recipient domain, or mail a credential (username) sent."""

    kind: TargetKind
    value: str

    def to_json(self) -> dict[str, str]:
        return {self.kind: self.value}


def parse_target(raw: Mapping[str, object]) -> Target:
    given = [k for k in ("domain", "credential") if k in raw]
    if len(given) != 1:
        raise BadParameter(given[1] if given else "target", "exactly one of domain, credential expected")
    if given[0] == "domain":
        return Target("domain", check_domain(_text(raw, "domain")))
    username = raw["credential"]
    if not isinstance(username, str) or not is_username(username):
        raise BadParameter("credential", f"a username (1-{USERNAME_MAX} letters, digits, +=,.@_-) expected")
    return Target("credential", username)


# --- requests as the channel carries them -----------------------------------------------------------
_UNKNOWN_OK = frozenset({"by"})


def _no_unknown(raw: Mapping[str, object], known: Iterable[str]) -> None:
    unknown = sorted(set(raw) - set(known) - _UNKNOWN_OK)
    if unknown:
        raise BadParameter(unknown[0], "unknown parameter")


def list_request(query: Mapping[str, str]) -> dict[str, Any]:
    _no_unknown(query, ())
    return {"op": OP_LIST}


def show_request(queue_id: str, query: Mapping[str, str]) -> tuple[dict[str, Any], bool]:
    """The op, and whether the message itself was asked for (``?body=true``)."""
    _no_unknown(query, ("body",))
    body = query.get("body", "false").lower()
    if body not in ("true", "false", "1", "0"):
        raise BadParameter("body", "true or false expected")
    return {"op": OP_SHOW, "qid": check_queue_id(queue_id)}, body in ("true", "1")


def action_request(action: str, raw: object, by: str) -> dict[str, Any]:
    """The channel op for ``POST /admin/v1/queue/<action>`` with the JSON body ``raw``."""
    if action not in ACTION_OPS:
        raise BadParameter("action", f"one of {', '.join(ACTIONS)} expected")
    if not isinstance(raw, dict):
        raise BadParameter("body", "a JSON object expected")
    request: dict[str, Any] = {"op": ACTION_OPS[action], "by": by[:MAX_BY]}
    if action == "retry":
        _no_unknown(raw, ("id", "domain", "all"))
        request["selector"] = parse_selector(raw, ("id", "domain", "all")).to_json()
    elif action == "bounce":
        _no_unknown(raw, ("id", "domain", "sender", "reason"))
        request["selector"] = parse_selector(raw, ("id", "domain", "sender")).to_json()
        request["reason"] = parse_reason(raw)
    else:
        _no_unknown(raw, ("domain", "credential"))
        request["target"] = parse_target(raw).to_json()
    return request


def selector_of(request: Mapping[str, Any]) -> Selector:
    """The selector of a request built by ``action_request`` (trusted: the front door checked it)."""
    return parse_selector(request["selector"], ("id", "domain", "sender", "all"))


def target_of(request: Mapping[str, Any]) -> Target:
    return parse_target(request["target"])


# --- the summary (ls) -------------------------------------------------------------------------------
def age_bucket(age: float) -> str:
    return next(label for limit, label in AGE_BUCKETS if age < limit)


@dataclass(frozen=True)
class Row:
    """One queued message as seen for one destination."""

    domain: str
    state: State
    received_at: float  # Unix time of acceptance


def summarize(rows: Iterable[Row], now: float) -> list[dict[str, Any]]:
    """Per destination and state: messages, the oldest acceptance time, and messages per age bucket."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        group = groups.setdefault((row.domain, row.state), {
            "domain": row.domain, "state": row.state, "messages": 0, "oldest": row.received_at,
            "ages": dict.fromkeys(AGE_LABELS, 0)})
        group["messages"] += 1
        group["oldest"] = min(group["oldest"], row.received_at)
        group["ages"][age_bucket(max(0.0, now - row.received_at))] += 1
    return _ordered(groups.values())


def merge_summaries(answers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every MTA's summary as one: counts summed, the oldest of the oldest."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for answer in answers:
        for item in answer.get("summary") or []:
            key = (str(item["domain"]), str(item["state"]))
            group = groups.setdefault(key, {"domain": key[0], "state": key[1], "messages": 0,
                                            "oldest": float(item["oldest"]),
                                            "ages": dict.fromkeys(AGE_LABELS, 0)})
            group["messages"] += int(item["messages"])
            group["oldest"] = min(group["oldest"], float(item["oldest"]))
            for label, count in (item.get("ages") or {}).items():
                group["ages"][label] = group["ages"].get(label, 0) + int(count)
    return _ordered(groups.values())


def _ordered(groups: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {state: i for i, state in enumerate(STATES)}
    return sorted(groups, key=lambda g: (g["domain"], order.get(g["state"], len(order))))


def merge_suspensions(answers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every suspension any MTA holds, with the MTAs that hold it (an MTA added after a suspend does
    not hold it: the list shows it)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for answer in answers:
        mta = str(answer.get("mta") or "?")
        suspensions = answer.get("suspensions") or {}
        for kind in ("domain", "credential"):
            for value, hold in (suspensions.get(f"{kind}s") or {}).items():
                item = found.setdefault((kind, value), {
                    "kind": kind, "value": value, "by": hold.get("by", ""), "at": hold.get("at", 0.0),
                    "mtas": []})
                item["mtas"].append(mta)
    return [found[key] | {"mtas": sorted(found[key]["mtas"])} for key in sorted(found)]
