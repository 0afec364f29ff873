"""Bounce classification: every line of the real-world corpus classified as expected, the relay's own
outcome texts too, and the rule table checked as data (schema, sources, categories, no dead rule)."""

from __future__ import annotations

import csv
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
from mta_relay.events.classify import (
    CATEGORIES,
    RULES_FILE,
    Classification,
    Kind,
    RulesError,
    classify,
    parse_rules,
    rules,
)

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bounce_corpus.tsv"


@dataclass(frozen=True)
class Line:
    provider: str
    source: str
    code: int
    kind: Kind
    category: str
    text: str


def _corpus() -> list[Line]:
    with CORPUS.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader((line for line in handle if not line.startswith("#")), delimiter="\t",
                          quoting=csv.QUOTE_NONE)
        header = next(rows)
        assert header == ["provider", "source", "code", "kind", "category", "text"]
        return [Line(p, s, int(c), _kind(k), cat, t) for p, s, c, k, cat, t in rows]


def _kind(text: str) -> Kind:
    assert text in ("hard", "soft"), text
    return cast("Kind", text)


LINES = _corpus()


def _id(number: int, line: Line) -> str:
    return f"{number}-{line.provider}-{urlsplit(line.source).netloc}"


# The relay's own outcome texts (delivery/mx.py and delivery/client.py), with the exception names its
# hops raise; and the shapes named when classification was specified.
OWN = [
    (550, "5.1.2 domain example.test does not exist", "hard", "BadDomain"),
    (451, "4.4.3 MX lookup for example.test failed: LifetimeTimeout", "soft", "DNSFailure"),
    (556, "5.1.10 domain example.test accepts no mail (null MX)", "hard", "BadDomain"),
    (451, "4.4.4 no address for any mail host of example.test", "soft", "DNSFailure"),
    (451, "4.4.4 No MX or A record for example.test", "soft", "DNSFailure"),
    (451, "4.7.0 mx.example.test does not offer STARTTLS, which is required", "soft", "TLSFailure"),
    (451, "4.4.1 mx.example.test [192.0.2.1]: SSLCertVerificationError", "soft", "TLSFailure"),
    (451, "4.4.1 mx.example.test [192.0.2.1]: SSLError", "soft", "TLSFailure"),
    (451, "4.7.5 TLS handshake failed", "soft", "TLSFailure"),
    (451, "4.4.1 mx.example.test [192.0.2.1]: ConnectionRefusedError", "soft", "BadConnection"),
    (451, "4.4.1 connection refused", "soft", "BadConnection"),
    (451, "4.4.1 mx.example.test [192.0.2.1]: SMTPConnectTimeoutError", "soft", "NoAnswerFromHost"),
    (451, "4.4.1 mx.example.test [192.0.2.1]: SMTPConnectError", "soft", "BadConnection"),
    (451, "4.4.1 mx.example.test [192.0.2.1]: OSError", "soft", "NoAnswerFromHost"),
    (451, "4.4.2 connection to mx.example.test lost: SMTPServerDisconnected", "soft", "BadConnection"),
    (451, "4.4.0 mx.example.test said: 535 5.7.8 Error: authentication failed", "soft",
     "AuthenticationFailed"),
    (553, "5.6.7 next hop does not support SMTPUTF8", "hard", "ProtocolErrors"),
]


@pytest.mark.parametrize("line", LINES, ids=[_id(n, line) for n, line in enumerate(LINES, 1)])
def test_corpus_line_is_classified_as_expected(line: Line) -> None:
    assert classify(line.code, line.text) == Classification(line.kind, line.category)


@pytest.mark.parametrize(("code", "text", "kind", "category"), OWN, ids=[t for _, t, _, _ in OWN])
def test_the_relays_own_outcomes_are_classified(code: int, text: str, kind: str, category: str) -> None:
    assert classify(code, text) == Classification(_kind(kind), category)


def test_corpus_is_large_and_sourced() -> None:
    assert len(LINES) >= 120
    for line in LINES:
        assert urlsplit(line.source).scheme in ("http", "https"), line
        assert line.category in CATEGORIES, line


def test_every_rule_is_exercised_by_some_line() -> None:
    table = rules()
    used = {rule.index for code, text in _all_replies() if (rule := table.classify(code, text)[1])}
    dead = [(rule.index, rule.category, rule.text.pattern if rule.text else "")
            for rule in table.rules if rule.index not in used]
    assert not dead, f"rules no corpus line reaches (index, category, text): {dead}"


def _all_replies() -> Iterator[tuple[int, str]]:
    yield from ((line.code, line.text) for line in LINES)
    yield from ((code, text) for code, text, _, _ in OWN)


def _packaged() -> dict[str, Any]:
    return tomllib.loads(resources.files("mta_relay.events").joinpath(RULES_FILE).read_text("utf-8"))


def test_every_rule_cites_a_source_and_a_documented_category() -> None:
    data = _packaged()
    for index, entry in enumerate(data["rule"]):
        assert entry.get("source", "").strip(), f"rule {index} has no source"
        assert entry["category"] in CATEGORIES, f"rule {index}: {entry['category']}"
    for table in ("enhanced", "basic"):
        assert set(data[table].values()) <= CATEGORIES


def test_every_category_is_documented_in_the_module_docstring() -> None:
    import mta_relay.events.classify as module

    assert module.__doc__ is not None
    for category in CATEGORIES:
        assert f"\n{category} " in module.__doc__, category


@pytest.mark.parametrize(("document", "message"), [
    ('[[rule]]\ncategory = "BadDomain"\ntext = "x"\nsource = "RFC 3463"\nregex = "y"\n',
     "rule 0: unknown key 'regex'"),
    ('[[rule]]\ncategory = "BadDomain"\ntext = "x"\nsource = "s"\n[[rule]]\ncategory = "Nope"\ntext = "x"\n'
     'source = "s"\n', "rule 1: key 'category': 'Nope' is not a documented category"),
    ('[[rule]]\ncategory = "BadDomain"\ntext = "x"\n', "rule 0: key 'source' is required"),
    ('[[rule]]\ncategory = "BadDomain"\ntext = "x"\nsource = "s"\nkind = "medium"\n',
     "rule 0: key 'kind': 'medium' is neither"),
    ('[[rule]]\ncategory = "BadDomain"\nsource = "s"\n', "rule 0: needs at least one of"),
    ('[[rule]]\ncategory = "BadDomain"\ntext = "("\nsource = "s"\n', "rule 0: key 'text': bad regex"),
    ('[fallback]\n"1.1" = "BadDomain"\n', "unknown top-level key(s) ['fallback']"),
    ('[basic]\n"5" = "Bounced"\n', "[basic] key '5': 'Bounced' is not a documented category"),
])
def test_a_malformed_table_is_refused_with_the_rule_and_key(document: str, message: str) -> None:
    with pytest.raises(RulesError, match=re.escape(message)):
        parse_rules(document)


def test_the_packaged_table_parses() -> None:
    assert len(rules().rules) == len(_packaged()["rule"])


def test_kind_follows_the_reply_class_in_the_fallback() -> None:
    assert classify(550, "no idea") == Classification("hard", "Uncategorized")
    assert classify(450, "no idea") == Classification("soft", "TransientFailure")
