"""Bounce classification: one SMTP reply (the next hop's, or the relay's own for DNS, connection and TLS
trouble) becomes a kind, hard or soft, and a category, for the event record's ``bounce_kind`` and
``bounce_classification``.

The rules are data, ``bounce_rules.toml`` beside this module: ordered regexes on the reply text and
patterns on the reply code and enhanced status code, each citing where its wording comes from; then a
fallback by enhanced status code (RFC 3463 and the IANA registry), then by reply code and class. The kind
follows the reply class (5xx hard, everything else soft) unless the matching rule says otherwise: a 5xx
"mailbox full" empties, a 5xx daily sending limit resets.

The categories are KumoMTA's bounce classes where it has one, so that tools written for its logs read
ours; ``RateLimited`` and ``TLSFailure`` are ours. In plain words:

======================  ===========================================================================
category                what it means
======================  ===========================================================================
InvalidRecipient        bad mailbox: no such user at that domain
InactiveMailbox         the mailbox exists but is disabled, closed, archived or has moved
BadDomain               bad domain: it does not exist or accepts no mail (null MX, 521/556)
InvalidSender           our envelope sender is refused (its domain does not resolve, bad syntax)
QuotaIssues             mailbox full, or the message is over a size limit
RateLimited             rate limited or throttled: too fast, too many connections, daily limits
TooManyRecipients       too many recipients in one transaction
SpamBlock               policy/spam: the sending IP or domain is on a block list or has a poor reputation
SpamContent             policy/spam: the message itself was judged spam
VirusRelated            the message was judged to carry malware or a security risk
ProhibitedAttachment    an attachment is not allowed
ContentRelated          the message is malformed or not RFC 5322 compliant
PolicyRelated           refused by the receiver's local policy (allow lists, rules, anti-spoofing)
AuthenticationFailed    sender identity: SMTP AUTH refused, or SPF, DKIM, DMARC or reverse DNS failed
RelayDenied             the host will not relay for that domain
RoutingErrors           no route to the mailbox, or a mail loop
DNSFailure              DNS: the lookup for the domain's mail hosts failed or gave no address
BadConnection           the connection was refused, reset or lost
NoAnswerFromHost        the host did not answer in time
TLSFailure              TLS: required but not offered, handshake or certificate failure
ProtocolErrors          SMTP protocol trouble: syntax, sequence, unsupported extension (SMTPUTF8)
MessageExpired          delivery time expired
TransientFailure        a temporary problem at the other end: busy, greylisting, try again later
Uncategorized           none of the above: a 5xx that says nothing more
======================  ===========================================================================

Classification runs for every recipient outcome, so the table is loaded and its regexes compiled once,
and a call walks a few dozen precompiled regexes.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, cast

from mta_relay.events.record import Response

Kind = Literal["hard", "soft"]

CATEGORIES: frozenset[str] = frozenset({
    "InvalidRecipient", "InactiveMailbox", "BadDomain", "InvalidSender", "QuotaIssues", "RateLimited",
    "TooManyRecipients", "SpamBlock", "SpamContent", "VirusRelated", "ProhibitedAttachment",
    "ContentRelated", "PolicyRelated", "AuthenticationFailed", "RelayDenied", "RoutingErrors",
    "DNSFailure", "BadConnection", "NoAnswerFromHost", "TLSFailure", "ProtocolErrors", "MessageExpired",
    "TransientFailure", "Uncategorized",
})
RULES_FILE = "bounce_rules.toml"
_RULE_KEYS = frozenset({"category", "kind", "text", "code", "enhanced", "source", "note"})
_KINDS: frozenset[str] = frozenset({"hard", "soft"})


@dataclass(frozen=True)
class Classification:
    kind: Kind
    category: str


class RulesError(ValueError):
    """The rule table is malformed; the message names the rule (by index) and the key."""


@dataclass(frozen=True)
class Rule:
    index: int
    category: str
    source: str
    kind: Kind | None = None
    text: re.Pattern[str] | None = None
    code: re.Pattern[str] | None = None
    enhanced: re.Pattern[str] | None = None

    def matches(self, code: str, enhanced: str | None, folded: str) -> bool:
        """``folded``: the reply text in lower case, as the text patterns are."""
        if self.code is not None and not self.code.fullmatch(code):
            return False
        if self.enhanced is not None and (enhanced is None or not self.enhanced.fullmatch(enhanced)):
            return False
        return self.text is None or self.text.search(folded) is not None


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    enhanced: Mapping[str, str]  # "subject.detail" or "subject.*" -> category
    basic: Mapping[str, str]  # reply code or its class digit -> category

    def classify(self, code: int, text: str) -> tuple[Classification, Rule | None]:
        """The classification, and the rule that decided it (None for a fallback)."""
        reply = Response.parse(code, text)
        enhanced = str(reply.enhanced_code) if reply.enhanced_code else None
        code_text, folded = str(code), text.lower()
        for rule in self.rules:
            if rule.matches(code_text, enhanced, folded):
                return Classification(rule.kind or _kind_of(code), rule.category), rule
        return Classification(_kind_of(code), self._fallback(code_text, reply)), None

    def _fallback(self, code: str, reply: Response) -> str:
        if reply.enhanced_code is not None:
            subject, detail = reply.enhanced_code.subject, reply.enhanced_code.detail
            category = self.enhanced.get(f"{subject}.{detail}") or self.enhanced.get(f"{subject}.*")
            if category:
                return category
        return self.basic.get(code) or self.basic.get(code[:1]) or "Uncategorized"


def classify(code: int, text: str) -> Classification:
    """Hard or soft, and a category, for one reply: ``text`` as the reply's text, which may begin with
    an enhanced status code ("5.1.1 ..."). Meant for failures; anything below 500 is soft."""
    return rules().classify(code, text)[0]


@cache
def rules() -> Rules:
    """The packaged table, parsed and compiled on first use."""
    return parse_rules(resources.files("mta_relay.events").joinpath(RULES_FILE).read_text("utf-8"))


def parse_rules(document: str) -> Rules:
    """The table in ``document`` (TOML), checked: unknown keys, categories and kinds are refused."""
    data = tomllib.loads(document)
    unknown = set(data) - {"rule", "enhanced", "basic"}
    if unknown:
        raise RulesError(f"{RULES_FILE}: unknown top-level key(s) {sorted(unknown)}")
    parsed = tuple(_rule(index, entry) for index, entry in enumerate(data.get("rule", [])))
    return Rules(parsed, _fallback_table("enhanced", data.get("enhanced", {})),
                 _fallback_table("basic", data.get("basic", {})))


def _rule(index: int, entry: Any) -> Rule:
    where = f"{RULES_FILE}: rule {index}"
    if not isinstance(entry, dict):
        raise RulesError(f"{where}: not a table")
    for key in entry:
        if key not in _RULE_KEYS:
            raise RulesError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_RULE_KEYS))})")
    for key, value in entry.items():
        if not isinstance(value, str):
            raise RulesError(f"{where}: {key!r} must be a string")
    category, source, kind = entry.get("category"), entry.get("source"), entry.get("kind")
    if category not in CATEGORIES:
        raise RulesError(f"{where}: key 'category': {category!r} is not a documented category")
    if not source:
        raise RulesError(f"{where}: key 'source' is required: cite where the wording comes from")
    if kind is not None and kind not in _KINDS:
        raise RulesError(f"{where}: key 'kind': {kind!r} is neither 'hard' nor 'soft'")
    if not any(key in entry for key in ("text", "code", "enhanced")):
        raise RulesError(f"{where}: needs at least one of 'text', 'code', 'enhanced'")

    def compiled(key: str, fold: bool = False) -> re.Pattern[str] | None:
        if key not in entry:
            return None
        try:
            return re.compile(_lower_literals(entry[key]) if fold else entry[key])
        except re.error as error:
            raise RulesError(f"{where}: key {key!r}: bad regex: {error}") from None

    return Rule(index, category, source, cast("Kind | None", kind), compiled("text", fold=True),
                compiled("code"), compiled("enhanced"))


def _fallback_table(name: str, table: Any) -> dict[str, str]:
    if not isinstance(table, dict):
        raise RulesError(f"{RULES_FILE}: [{name}] is not a table")
    for key, category in table.items():
        if category not in CATEGORIES:
            raise RulesError(f"{RULES_FILE}: [{name}] key {key!r}: {category!r} is not a documented category")
    return dict(table)


def _lower_literals(pattern: str) -> str:
    """``pattern`` in lower case, escapes kept: ``\\S`` stays "not space", it must not become ``\\s``.

    Matching lower-cased patterns against lower-cased text is what case-insensitive means here; it runs
    several times faster than re.IGNORECASE, and classification runs per recipient outcome."""
    out, escaped = [], False
    for char in pattern:
        out.append(char if escaped else char.lower())
        escaped = not escaped and char == "\\"
    return "".join(out)


def _kind_of(code: int) -> Kind:
    return "hard" if code >= 500 else "soft"
