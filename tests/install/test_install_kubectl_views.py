"""kubectl mta's pure views: zone-file lines, the status view of objects not reconciled yet, masking."""

from __future__ import annotations

import dns.zone
from mta_operator.kubectl_plugin import credential_view, status_view, zone_records


def test_long_txt_values_split_into_255_byte_strings_that_join_back() -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 600
    rdata = zone_records.txt_rdata(value)
    assert rdata.count('" "') == 2
    zone = dns.zone.from_text(f"k._domainkey.example.com. 3600 IN TXT {rdata}\n", origin="example.com.",
                              relativize=False, check_origin=False)
    (txt,) = [r for _, rs in zone.iterate_rdatasets("TXT") for r in rs]
    assert [len(s) for s in txt.strings] == [255, 255, 108]
    assert b"".join(txt.strings).decode() == value


def test_quotes_and_backslashes_are_escaped() -> None:
    line = zone_records.zone_lines([{"purpose": "Ownership", "name": "x.example.com", "value": 'a"b\\c'}])
    zone = dns.zone.from_text(line, origin="example.com.", relativize=False, check_origin=False)
    (txt,) = [r for _, rs in zone.iterate_rdatasets("TXT") for r in rs]
    assert txt.strings == (b'a"b\\c',)
    assert "; Ownership: not found in DNS yet" in line


def test_status_view_before_the_first_reconcile() -> None:
    cluster = {"metadata": {"name": "main", "namespace": "mail"}, "spec": {"hostname": "smtp.example.com"}}
    out = status_view.render([cluster], [], [], all_namespaces=True)
    header, row = out.split("\n\n")[0].splitlines()[1:3]
    assert header.split() == ["NAMESPACE", "NAME", "HOSTNAME", "MTAS", "SMTP", "READY"]
    assert row.split() == ["mail", "main", "smtp.example.com", "Pending"]
    assert out.count("(none)") == 2


def test_ready_false_shows_its_reason() -> None:
    cred = {"metadata": {"name": "b2", "namespace": "mail"}, "spec": {"clusterRef": {"name": "main"}},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "UsernameConflict"}]}}
    out = status_view.render([], [], [cred], all_namespaces=False)
    assert out.splitlines()[-1].split()[-2:] == ["False", "(UsernameConflict)"]


def test_password_is_masked_unless_shown() -> None:
    conn = credential_view.Connection("billing", "smtp.example.com", 587, "main-mta.mail.svc", "s3cret-value")
    assert "s3cret-value" not in credential_view.render("billing", conn, show_password=False)
    assert "Password:       s3cret-value" in credential_view.render("billing", conn, show_password=True)


def test_credential_show_includes_usage() -> None:
    usage = {"sent": 42, "periodStart": "2026-11-01T00:00:00Z", "remaining": 958,
             "lastUsedTime": "2026-11-27T21:40:03Z", "lastUsedFrom": "192.0.2.7"}
    credential = {"metadata": {"name": "billing"}, "spec": {}, "status": {"usage": usage}}
    conn = credential_view.connection(credential, {"username": "billing", "host": "smtp.example.com"}, None)
    out = credential_view.render("billing", conn, show_password=False)
    assert "Sent:           42 since 2026-11-01T00:00:00Z (958 left in the quota)" in out
    assert "Last used:      2026-11-27T21:40:03Z from 192.0.2.7" in out
    fresh = credential_view.Connection("billing", "smtp.example.com", 587, "main-mta.mail.svc", None)
    assert "nothing reported yet" in credential_view.render("billing", fresh, show_password=False)
