"""CRAM-MD5 in the renderer and the API models, pure: who gets the mechanism, where the password goes (only
into the opted-in credential's table entry, a Secret), and what is refused at the door."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mta_operator.api import Cluster, SmtpCredential
from mta_operator.reconcile.credential import served_outcome
from mta_operator.render import relay_config
from mta_relay import config_loader
from mta_relay.passwords import fast_verifier
from pydantic import ValidationError

pytestmark = pytest.mark.unit

PASSWORD = "Cram-Md5-Password-" + "q" * 14


def _cluster(mechanisms: list[str] | None = None) -> Cluster:
    smtp = {"authMechanisms": mechanisms} if mechanisms is not None else {}
    return Cluster.model_validate({"apiVersion": "mta-operator.io/v1alpha1", "kind": "Cluster",
                                   "metadata": {"name": "main", "namespace": "mail"},
                                   "spec": {"hostname": "smtp.example.com", "smtp": smtp}})


def _cred(name: str, **spec: Any) -> SmtpCredential:
    return SmtpCredential.model_validate({
        "apiVersion": "mta-operator.io/v1alpha1", "kind": "SmtpCredential",
        "metadata": {"name": name, "namespace": "mail", "uid": f"uid-{name}"},
        "spec": {"clusterRef": {"name": "main"}, "domains": {"mode": "Specific", "names": ["example.com"]},
                 **spec}})


def test_cram_md5_goes_only_to_credentials_that_opt_in_on_a_cluster_that_offers_it() -> None:
    offering = _cluster(["PLAIN", "LOGIN", "CRAM-MD5"])
    assert relay_config.mechanisms(offering, _cred("plain")) == ["PLAIN", "LOGIN"]
    assert relay_config.mechanisms(offering, _cred("cram", cramMd5=True)) == ["PLAIN", "LOGIN", "CRAM-MD5"]
    assert relay_config.mechanisms(offering) == ["PLAIN", "LOGIN"]
    default = _cluster()
    assert relay_config.mechanisms(default, _cred("cram", cramMd5=True)) == ["PLAIN", "LOGIN"]
    assert relay_config.mechanisms(_cluster(["LOGIN"]), _cred("login")) == ["LOGIN"]


def test_the_password_enters_only_the_opted_in_entry_and_only_the_credential_files(tmp_path: Path) -> None:
    cluster = _cluster(["PLAIN", "CRAM-MD5"])
    cram, plain = _cred("cram", cramMd5=True), _cred("plain")
    entries = [relay_config.credential(c, fast_verifier(PASSWORD), relay_config.mechanisms(cluster, c),
                                       PASSWORD if relay_config.wants_cram_md5(c) else None)
               for c in (cram, plain)]
    # Handed a password it did not ask for, an entry without CRAM-MD5 still leaves it out.
    unasked = relay_config.credential(plain, fast_verifier(PASSWORD), ["PLAIN"], PASSWORD)
    assert unasked.cram_md5_secret is None
    assert PASSWORD not in repr(entries)
    files = relay_config.relay_files(relay_config.relay_settings(cluster, []), entries)
    assert PASSWORD not in files["relay.yaml"]  # the ConfigMap part
    (shard,) = [text for name, text in files.items() if name.startswith("credentials/")]
    assert shard.count(PASSWORD) == 1
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    loaded = {c.username: c for c in config_loader.load(tmp_path).credentials}
    assert loaded["cram"].mechanisms == ["PLAIN", "CRAM-MD5"]
    assert loaded["cram"].cram_md5_secret == PASSWORD
    assert loaded["plain"].mechanisms == ["PLAIN"]
    assert loaded["plain"].cram_md5_secret is None


def test_an_entry_with_cram_md5_and_no_password_is_a_bug_not_a_table_entry() -> None:
    with pytest.raises(ValueError, match="CRAM-MD5 needs the credential's password"):
        relay_config.credential(_cred("cram", cramMd5=True), fast_verifier(PASSWORD), ["PLAIN", "CRAM-MD5"])


def test_ready_says_when_the_cluster_does_not_offer_cram_md5() -> None:
    cram = _cred("cram", cramMd5=True)
    missing = served_outcome(cram, _cluster(["PLAIN", "LOGIN"]))
    assert (missing.ok, missing.reason) == (False, "CramMd5NotOffered")
    assert "spec.smtp.authMechanisms" in missing.message
    assert "PLAIN, LOGIN" in missing.message
    assert served_outcome(cram, _cluster(["PLAIN", "CRAM-MD5"])).ok
    assert served_outcome(_cred("plain"), _cluster(["PLAIN"])).ok


def test_cram_md5_is_refused_for_source_ip_credentials() -> None:
    with pytest.raises(ValidationError, match="cramMd5 is only allowed when authentication is Password"):
        _cred("scanner", cramMd5=True, authentication="SourceIP", allowedIPs=["192.0.2.1"])


def test_a_cluster_must_offer_plain_or_login_besides_cram_md5() -> None:
    with pytest.raises(ValidationError, match="authMechanisms must offer PLAIN or LOGIN"):
        _cluster(["CRAM-MD5"])
