"""Outbound TLS policy, the pure parts: MTA-STS TXT and policy parsing, MX patterns, cache rules and
cache file; TLSA matching (DANE-EE, DANE-TA; selectors and matching types); the settings."""

from __future__ import annotations

import datetime

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mta_relay.config import DeliveryTls
from mta_relay.delivery import dane, mta_sts
from mta_relay.delivery.mta_sts import CachedPolicy, Mode, Policy, PolicyError, Step
from pydantic import ValidationError

pytestmark = pytest.mark.unit
DAY = 86400.0


# --- MTA-STS: the TXT record --------------------------------------------------------------------------
@pytest.mark.parametrize(("records", "expected"), [
    (["v=STSv1; id=20260101T000000"], "20260101T000000"),
    (["v=STSv1;id=abc;"], "abc"),
    (["v=spf1 -all", "v=STSv1; id=x1"], "x1"),  # other TXT records at the name are ignored
    (["v=STSv1; id=a", "v=STSv1; id=b"], None),  # two STS records: no record (§3.1)
    (["v=STSv1"], None),  # no id
    (["v=STSv1; id=has-dash"], None),  # id is 1-32 letters and digits
    (["v=STSv1; id=" + "a" * 33], None),
    (["v=STSv2; id=a"], None),
    ([], None),
])
def test_txt_record(records: list[str], expected: str | None) -> None:
    assert mta_sts.parse_txt(records) == expected


# --- MTA-STS: the policy file ---------------------------------------------------------------------------
def test_policy_parses_crlf_and_lf_and_ignores_unknown_keys() -> None:
    text = ("version: STSv1\r\nmode: enforce\r\nmx: mail.Example.NET\nmx: *.backup.example.net.\r\n"
            "max_age: 604800\r\nextension: whatever\r\n")
    assert mta_sts.parse_policy(text) == Policy(Mode.ENFORCE, ("mail.example.net", "*.backup.example.net"),
                                                604800)


def test_policy_repeated_key_counts_first_and_max_age_is_capped() -> None:
    policy = mta_sts.parse_policy("version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\n"
                                  "max_age: 9999999999\n")
    assert policy.mode is Mode.TESTING
    assert policy.max_age == mta_sts.MAX_AGE_LIMIT


def test_policy_mode_none_needs_no_mx() -> None:
    policy = mta_sts.parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n")
    assert policy == Policy(Mode.NONE, (), 86400)


@pytest.mark.parametrize("text", [
    "mode: enforce\nmx: a.example\nmax_age: 1\n",  # no version
    "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
    "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
    "version: STSv1\nmode: enforce\nmax_age: 1\n",  # no mx
    "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
    "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",  # more than 10 digits
    "version: STSv1\nmode: enforce\nmx: a.example\n",  # no max_age
    "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",  # wildcard only leftmost
    "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n",
    "version: STSv1\nnot a field\nmode: enforce\nmx: a.example\nmax_age: 1\n",
])
def test_invalid_policies_are_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        mta_sts.parse_policy(text)


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("mail.example.net", "mail.example.net", True),
    ("mail.example.net", "MAIL.example.net.", True),
    ("mail.example.net", "mail2.example.net", False),
    ("*.example.net", "mx1.example.net", True),
    ("*.example.net", "example.net", False),  # the wildcard stands for exactly one label
    ("*.example.net", "a.b.example.net", False),
    ("*.example.net", ".example.net", False),
    ("*.example.net", "mx1.example.net.evil", False),
])
def test_mx_patterns(pattern: str, host: str, expected: bool) -> None:
    assert mta_sts.mx_matches(pattern, host) is expected


# --- MTA-STS: cache rules -------------------------------------------------------------------------------
POLICY = Policy(Mode.ENFORCE, ("mx.example.net",), int(7 * DAY))


def test_plan_fetches_when_nothing_cached_and_a_record_exists() -> None:
    assert mta_sts.plan(None, "id1", 1000.0) is Step.FETCH
    assert mta_sts.plan(None, None, 1000.0) is Step.NO_POLICY


def test_plan_uses_the_cache_while_the_id_is_unchanged_and_refreshes_daily() -> None:
    cached = CachedPolicy("id1", POLICY, 1000.0)
    assert mta_sts.plan(cached, "id1", 1000.0 + 3600) is Step.USE_CACHED
    assert mta_sts.plan(cached, "id1", 1000.0 + DAY) is Step.FETCH  # refreshed before max_age runs out
    assert mta_sts.plan(cached, "id2", 1000.0 + 60) is Step.FETCH  # a new id: a new policy


def test_plan_keeps_a_fresh_cached_policy_when_the_txt_record_is_gone() -> None:
    cached = CachedPolicy("id1", POLICY, 1000.0)
    assert mta_sts.plan(cached, None, 1000.0 + 6 * DAY) is Step.USE_CACHED  # stripped TXT: still enforced
    assert mta_sts.plan(cached, None, 1000.0 + 7 * DAY) is Step.NO_POLICY  # past max_age


def test_a_failed_fetch_keeps_the_cached_policy_until_max_age() -> None:
    cached = CachedPolicy("id1", POLICY, 1000.0)
    assert mta_sts.after_fetch(cached, "id2", None, 1000.0 + DAY) is cached
    assert mta_sts.after_fetch(cached, "id2", None, 1000.0 + 8 * DAY) is None
    assert mta_sts.after_fetch(None, "id2", None, 1000.0) is None
    new = Policy(Mode.TESTING, ("*.example.net",), 3600)
    assert mta_sts.after_fetch(cached, "id2", new, 5000.0) == CachedPolicy("id2", new, 5000.0)


def test_cache_file_round_trip_drops_expired_policies() -> None:
    policies = {"example.net": CachedPolicy("id1", POLICY, 1000.0),
                "old.example": CachedPolicy("id9", Policy(Mode.TESTING, ("*.old.example",), 60), 1000.0)}
    data = mta_sts.encode_cache(policies, now=1000.0 + 3600)
    assert mta_sts.decode_cache(data) == {"example.net": policies["example.net"]}


@pytest.mark.parametrize("data", [
    b"[]", b'{"version": 2, "policies": {}}', b'{"version": 1, "policies": []}',
    b'{"version": 1, "policies": {"a.example": {"id": "x", "mode": "strict", "mx": [], "maxAge": 1, '
    b'"fetchedAt": 1}}}',
    b'{"version": 1, "policies": {"a.example": {"id": "x", "mode": "enforce", "mx": ["a..b"], "maxAge": 1, '
    b'"fetchedAt": 1}}}',
])
def test_malformed_cache_files_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - state_files.load treats any ValueError as unusable
        mta_sts.decode_cache(data)


# --- DANE: TLSA matching ------------------------------------------------------------------------------
def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def chain() -> tuple[list[bytes], bytes]:
    """(server chain [leaf, intermediate, root], a leaf of an unrelated CA) for mx.example.net."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("mx.example.net")
    other = trustme.CA().issue_cert("mx.example.net")
    return ([_der(blob.bytes()) for blob in leaf.cert_chain_pems] + [_der(root.cert_pem.bytes())],
            _der(other.cert_chain_pems[0].bytes()))


@pytest.mark.parametrize("selector", [dane.CERT, dane.SPKI])
@pytest.mark.parametrize("mtype", [dane.FULL, dane.SHA256, dane.SHA512])
def test_dane_ee_matches_the_server_certificate(chain: tuple[list[bytes], bytes], selector: int,
                                                mtype: int) -> None:
    certs, other = chain
    record = dane.association(dane.DANE_EE, selector, mtype, certs[0])
    assert dane.check_chain([record], certs, ["any.name.at.all"]).ok  # DANE-EE checks no name
    assert not dane.check_chain([record], [other], ["mx.example.net"]).ok


@pytest.mark.parametrize("anchor", [1, 2])  # the intermediate, or the root
def test_dane_ta_matches_an_issuer_in_the_chain_and_checks_the_name(chain: tuple[list[bytes], bytes],
                                                                    anchor: int) -> None:
    certs, _other = chain
    record = dane.association(dane.DANE_TA, dane.SPKI, dane.SHA256, certs[anchor])
    assert dane.check_chain([record], certs, ["mx.example.net", "example.net"]).ok
    assert not dane.check_chain([record], certs, ["mx.other.example"]).ok  # name not on the certificate
    # a TA record never matches the server's own certificate
    leaf_as_ta = dane.association(dane.DANE_TA, dane.CERT, dane.SHA256, certs[0])
    assert not dane.check_chain([leaf_as_ta], certs, ["mx.example.net"]).ok


def test_dane_ta_checks_the_validity_period(chain: tuple[list[bytes], bytes]) -> None:
    certs, _other = chain
    record = dane.association(dane.DANE_TA, dane.CERT, dane.SHA256, certs[2])
    before = datetime.datetime(1999, 1, 1, tzinfo=datetime.UTC)  # trustme certificates start in 2000
    assert not dane.check_chain([record], certs, ["mx.example.net"], now=before).ok


def test_any_matching_record_of_the_set_is_enough(chain: tuple[list[bytes], bytes]) -> None:
    certs, other = chain
    records = [dane.association(dane.DANE_EE, dane.SPKI, dane.SHA256, other),
               dane.association(dane.DANE_EE, dane.CERT, dane.SHA512, certs[0])]
    assert dane.check_chain(records, certs, []).ok


def test_pkix_usages_and_unknown_parameters_are_unusable(chain: tuple[list[bytes], bytes]) -> None:
    certs, _other = chain
    good = dane.association(dane.DANE_EE, dane.SPKI, dane.SHA256, certs[0])
    records = [dane.Tlsa(1, good.selector, good.mtype, good.data), dane.Tlsa(0, 1, 1, good.data),
               dane.Tlsa(3, 2, 1, good.data), dane.Tlsa(3, 1, 3, good.data)]
    assert dane.usable(records) == []
    match = dane.check_chain(records, certs, ["mx.example.net"])
    assert not match.ok
    assert match.detail == "no usable TLSA record"


# --- settings -------------------------------------------------------------------------------------------
def test_dane_policy_needs_a_trusted_resolver() -> None:
    with pytest.raises(ValidationError, match="dnssecResolver"):
        DeliveryTls(policy="Dane")
    tls = DeliveryTls.model_validate({"policy": "Dane", "dnssecResolver": {"nameservers": ["127.0.0.1"]}})
    assert tls.dnssec_resolver is not None
    assert DeliveryTls().policy == "Auto"
    assert DeliveryTls().ca_file is None  # the system CAs unless a test or private PKI says otherwise
