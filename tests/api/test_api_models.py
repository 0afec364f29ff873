"""The models: defaults, the rules' Python mirror (same table as the API server tests), examples, helpers."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from api_cases import INVALID, IP_PARITY, VALID, Invalid, cred
from api_kube import EXAMPLES
from mta_operator.api import (
    KINDS,
    Authentication,
    Cluster,
    DomainsMode,
    SendingDomain,
    SmtpCredential,
    duration_seconds,
)
from mta_operator.api.strings import is_ip_or_cidr, is_masked
from pydantic import ValidationError

pytestmark = pytest.mark.unit

BY_KIND = {kind.crd.kind: kind for kind in KINDS}


def _path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location in the API server's notation: spec.allowedIPs[1]."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_manifest_is_refused_by_the_models(case: Invalid) -> None:
    with pytest.raises(ValidationError) as info:
        BY_KIND[case.manifest["kind"]].model_validate(case.manifest)
    errors = info.value.errors()
    # The model names the same field as the API server, or the object holding it (object-level rules).
    paths = [_path(e["loc"]) for e in errors]
    assert any(p.startswith("spec") and case.field.startswith(p) for p in paths), (case.field, errors)
    if case.rule_message:
        assert any(case.message in e["msg"] for e in errors), errors


@pytest.mark.parametrize(("name", "manifest"), VALID, ids=[v[0] for v in VALID])
def test_valid_edge_case_is_accepted_by_the_models(name: str, manifest: dict[str, Any]) -> None:
    obj = BY_KIND[manifest["kind"]].model_validate(manifest)
    assert obj.metadata.name == manifest["metadata"]["name"]


@pytest.mark.parametrize(("text", "accepted"), IP_PARITY, ids=[t for t, _ in IP_PARITY])
def test_ip_rules_mirror_the_kubernetes_cel_libraries(text: str, accepted: bool) -> None:
    assert (is_ip_or_cidr(text) and is_masked(text)) is accepted


def test_defaults_follow_the_api_sketch() -> None:
    cluster = Cluster.model_validate({"kind": "Cluster", "metadata": {"name": "m"},
                                      "spec": {"hostname": "smtp.example.com"}})
    assert cluster.spec.smtp.ports == [25, 587, 2587]
    assert cluster.spec.mtas == 2
    assert cluster.spec.rate_limit is None
    assert cluster.spec.suppression.enabled is True
    assert cluster.spec.suppression.classes == ["InvalidRecipient"]
    assert cluster.spec.suppression.expire_after is None
    domain = SendingDomain.model_validate({"kind": "SendingDomain", "metadata": {"name": "d"},
                                           "spec": {"clusterRef": {"name": "m"}, "domain": "example.com"}})
    assert domain.spec.dkim.enabled is True
    credential = SmtpCredential.model_validate(cred("app"))
    assert credential.spec.domains.mode is DomainsMode.SPECIFIC
    assert credential.spec.authentication is Authentication.PASSWORD
    assert credential.spec.allowed_ips == []
    assert credential.spec.quota is None
    assert credential.spec.bypass_suppression_list is False


def test_username_defaults_to_the_object_name() -> None:
    assert SmtpCredential.model_validate(cred("billing")).effective_username == "billing"
    named = SmtpCredential.model_validate(cred("billing", username="billing@example.com"))
    assert named.effective_username == "billing@example.com"


def test_models_speak_camel_case_both_ways() -> None:
    manifest = cred("ips", allowedIPs=["192.0.2.1"], passwordSecretRef={"name": "pw"})
    credential = SmtpCredential.model_validate(manifest)
    assert credential.spec.allowed_ips == ["192.0.2.1"]
    dumped = credential.model_dump(mode="json", exclude_none=True)
    assert dumped["apiVersion"] == "mta-operator.io/v1alpha1"
    assert dumped["spec"]["allowedIPs"] == ["192.0.2.1"]
    assert dumped["spec"]["passwordSecretRef"] == {"name": "pw", "key": "password"}


def test_unknown_fields_are_dropped_like_the_api_server_prunes_them() -> None:
    credential = SmtpCredential.model_validate(cred("x", surprise=True))
    assert "surprise" not in credential.spec.model_dump()


def test_condition_lookup_reads_status() -> None:
    manifest = cred("c")
    manifest["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending",
                                          "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    credential = SmtpCredential.model_validate(manifest)
    assert credential.condition("Ready").reason == "Pending"
    assert credential.condition("Verified") is None


def _example_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_examples_parse_and_cover_every_mode() -> None:
    docs = [d for d in _example_documents() if d["apiVersion"].startswith("mta-operator.io/")]
    objs = [BY_KIND[d["kind"]].model_validate(d) for d in docs]
    creds = [o for o in objs if isinstance(o, SmtpCredential)]
    assert sum(isinstance(o, Cluster) for o in objs) == 1
    assert sum(isinstance(o, SendingDomain) for o in objs) == 2
    assert {c.spec.domains.mode for c in creds} == set(DomainsMode)
    assert any(c.spec.authentication is Authentication.SOURCE_IP for c in creds)
    assert any(c.spec.allowed_ips and c.spec.authentication is Authentication.PASSWORD for c in creds)
    byo = [c for c in creds if c.spec.password_secret_ref]
    secrets = {d["metadata"]["name"] for d in _example_documents() if d["kind"] == "Secret"}
    assert byo
    assert {c.spec.password_secret_ref.name for c in byo} <= secrets
    assert {o.metadata.namespace for o in objs} == {"mail"}


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("90m", 5400), ("120h", 432000)])
def test_duration_seconds(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


USERNAMES = [("app", True), ("a" * 255, True), ("x+y=z,w.v@u_t-s", True), ("", False), ("a" * 256, False),
             ("app user", False), ("jürgen", False), ("team/app", False), ("user:pass", False),
             ("app\n", False)]


@pytest.mark.parametrize(("username", "valid"), USERNAMES,
                         ids=[f"{i}-{v}" for i, (_, v) in enumerate(USERNAMES)])
def test_username_rule_is_the_same_for_the_api_and_the_relay(username: str, valid: bool) -> None:
    from mta_relay.config import Credential
    from mta_relay.usernames import is_username

    def accepted(check: Any) -> bool:
        try:
            check()
        except ValidationError:
            return False
        return True

    api = accepted(lambda: SmtpCredential.model_validate(cred("c", username=username)))
    relay = accepted(lambda: Credential.model_validate({"username": username, "passwordVerifier": "x",
                                                        "domains": {"mode": "AnyDomain"}}))
    assert (api, relay, is_username(username)) == (valid, valid, valid)
