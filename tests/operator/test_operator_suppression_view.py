"""`kubectl mta suppressions`: the pure part (input files and options checked as the MTA checks them, the
table, the export lines) and the command's requests, against a fake of the plugin's API reader."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from mta_operator.kubectl_plugin import cli, suppression_view
from mta_relay.admin_api import ACTOR_HEADER, MAX_LIMIT, TOKEN_HEADER, parse_entries
from mta_relay.suppressions import store

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
TOKEN = "admin-token-not-to-be-printed"


def test_expires_in_takes_seconds_to_days_and_names_the_option() -> None:
    assert suppression_view.duration_seconds("30d", "--expires-in") == 30 * 86400
    assert suppression_view.duration_seconds("90m", "--expires-in") == 5400
    for bad in ("30", "1w", "0d", "-1d", ""):
        with pytest.raises(suppression_view.BadInput, match="--expires-in"):
            suppression_view.duration_seconds(bad, "--expires-in")


def test_manual_entries_are_normalised_and_every_bad_address_is_named() -> None:
    entries = suppression_view.manual_entries(["<Bob@Example.NET>", "carol@example.org"], reason="Complaint",
                                              detail="asked by phone", expires_in="30d", now=NOW)
    assert entries == [
        {"address": "bob@example.net", "reason": "Complaint", "detail": "asked by phone",
         "expires": NOW + 30 * 86400},
        {"address": "carol@example.org", "reason": "Complaint", "detail": "asked by phone",
         "expires": NOW + 30 * 86400}]
    # What the plugin sends is what the MTA takes (its own parser, one owner of the format).
    body = json.dumps(suppression_view.add_body(entries, "Manual")).encode()
    assert [e.address for e in parse_entries(body, "alice", now=NOW)] == ["bob@example.net",
                                                                          "carol@example.org"]
    with pytest.raises(suppression_view.BadInput) as info:
        suppression_view.manual_entries(["ok@example.com", "nobody", "@example.com"], reason="Manual",
                                        detail="", expires_in=None, now=NOW)
    assert str(info.value).count("address:") == 2
    assert "'nobody'" in str(info.value)
    with pytest.raises(suppression_view.BadInput, match="reason:"):
        suppression_view.manual_entries(["ok@example.com"], reason="not a word", detail="", expires_in=None,
                                        now=NOW)


def test_import_reads_csv_plain_text_and_json_lines_and_skips_headers_and_comments() -> None:
    exported = store.entry("dave@example.com", reason="InvalidRecipient", source="Bounce", added_by="billing",
                           detail="550 5.1.1 no such user", now=NOW - 100, expires=NOW + 3600).to_json()
    lines = [
        "\ufeffemail,name,reason",
        "# from the old provider",
        "",
        '"Alice@Example.com",Alice,hard bounce',
        "bob@example.net;Bob",
        "carol@example.org\tCarol",
        "erin@example.com",
        json.dumps(exported),
        "ALICE@example.com",  # the same address again: once, as the last line says
    ]
    parsed = suppression_view.parse_import(lines, reason="Manual", now=NOW)
    assert [e["address"] for e in parsed.entries] == [
        "bob@example.net", "carol@example.org", "erin@example.com", "dave@example.com", "alice@example.com"]
    assert parsed.entries[3] == {"address": "dave@example.com", "reason": "InvalidRecipient",
                                 "detail": "550 5.1.1 no such user", "expires": NOW + 3600}
    assert parsed.entries[0] == {"address": "bob@example.net", "reason": "Manual"}
    assert (parsed.duplicates, parsed.expired) == (1, 0)


def test_a_header_is_only_a_header_on_the_first_line() -> None:
    with pytest.raises(suppression_view.BadInput, match="line 2: address: 'address'"):
        suppression_view.parse_import(["a@example.com", "address"], reason="Manual", now=NOW)


def test_import_names_every_bad_line_and_sends_nothing() -> None:
    lines = ["a@example.com", "not-an-address", '{"address": 5}',
             '{"address": "b@example.com", "expires": "x"}', "{broken",
             '{"address": "c@example.com", "reason": "two words"}', "d@example.com"]
    with pytest.raises(suppression_view.BadInput) as info:
        suppression_view.parse_import(lines, reason="Manual", now=NOW)
    text = str(info.value)
    assert "line 2: address: 'not-an-address'" in text
    assert "line 3: address: a string expected" in text
    assert "line 4: expires: Unix seconds or null" in text
    assert "line 5: not a JSON object" in text
    assert "line 6: reason:" in text
    assert "line 1" not in text
    assert "line 7" not in text
    assert text.endswith("nothing was sent")


def test_import_caps_the_error_list() -> None:
    with pytest.raises(suppression_view.BadInput) as info:
        suppression_view.parse_import([f"bad{i}" for i in range(50)], reason="Manual", now=NOW)
    assert "line 20:" in str(info.value)
    assert "line 21:" not in str(info.value)
    assert "... and 30 more" in str(info.value)


def test_import_leaves_out_entries_that_expired_since_the_export() -> None:
    lines = [json.dumps({"address": "old@example.com", "expires": NOW - 5}),
             json.dumps({"address": "soon@example.com", "expires": NOW + 10}),
             json.dumps({"address": "later@example.com", "expires": NOW + 7200, "source": "Bounce"})]
    parsed = suppression_view.parse_import(lines, reason="Manual", now=NOW)
    assert [e["address"] for e in parsed.entries] == ["later@example.com"]
    assert parsed.expired == 2


def test_batches_split_at_the_import_size() -> None:
    entries = [{"address": f"u{i}@example.com"} for i in range(12_001)]
    sizes = [len(b) for b in suppression_view.batches(entries)]
    assert sizes == [5000, 5000, 2001]
    assert suppression_view.IMPORT_BATCH <= MAX_LIMIT


def test_list_query_and_its_limit() -> None:
    assert suppression_view.list_query(prefix="Bob@", reason=None, after=None, limit=10) == [
        ("prefix", "bob@"), ("limit", "10")]
    assert suppression_view.list_query(prefix=None, reason="Manual", after="a@x.com", limit=1) == [
        ("reason", "Manual"), ("after", "a@x.com"), ("limit", "1")]
    with pytest.raises(suppression_view.BadInput, match="--limit"):
        suppression_view.list_query(prefix=None, reason=None, after=None, limit=MAX_LIMIT + 1)


def test_render_shows_age_expiry_and_the_total() -> None:
    entries = [
        store.entry("bob@example.net", reason="InvalidRecipient", source="Bounce", added_by="billing",
                    now=NOW - 3 * 86400).to_json(),
        store.entry("carol@example.org", reason="Manual", source="Manual", added_by="", now=NOW - 90,
                    expires=NOW + 29 * 86400 + 5).to_json(),
    ]
    text = suppression_view.render(entries, total=7, now=NOW, more=True)
    header, bob, carol, summary = text.splitlines()
    assert header.split() == ["ADDRESS", "REASON", "SOURCE", "ADDED", "BY", "ADDED", "EXPIRES"]
    assert bob.split() == ["bob@example.net", "InvalidRecipient", "Bounce", "billing", "3d", "never"]
    assert carol.split()[:6] == ["carol@example.org", "Manual", "Manual", "-", "1m", "in"]
    assert "29d" in carol
    assert summary.startswith("2 shown of 7 on the list; more match")
    assert suppression_view.render([], total=0, now=NOW, more=False) == "the suppression list is empty"
    assert suppression_view.render([], total=3, now=NOW, more=False) == "no entries match of 3 on the list"


def test_export_line_is_the_admin_api_entry_and_reads_back() -> None:
    entry = store.entry("zoë@example.com", reason="Manual", source="Import", added_by="alice",
                        detail="from the CRM", now=NOW).to_json()
    line = suppression_view.export_line(entry)
    assert "\n" not in line
    assert json.loads(line) == entry
    assert suppression_view.parse_import([line], reason="Manual", now=NOW).entries == [
        {"address": "zoë@example.com", "reason": "Manual", "detail": "from the CRM"}]


class FakeKube:
    """The plugin's API reader, as far as the suppression commands use it; ``answers`` by pod."""

    namespace = "mail"
    user = "alice@example.com"

    def __init__(self, pods: list[str], down: frozenset[str] = frozenset(), total: int = 3) -> None:
        self.ready, self.down, self.total = pods, down, total
        self.calls: list[tuple[str, str, list[tuple[str, str]], dict[str, str], Any]] = []
        self.entries = sorted((store.entry(f"u{i}@example.com", reason="Manual", source="Manual", added_by="",
                                           now=NOW).to_json() for i in range(total)),
                              key=lambda e: str(e["address"]))  # the MTA pages by address

    def list(self, kind: str) -> list[dict[str, Any]]:
        return [{"metadata": {"name": "main"}}]

    def secret_data(self, name: str) -> dict[str, str]:
        assert name == "main-mta-admin"
        return {"token": TOKEN}

    def ready_pods(self, selector: dict[str, str]) -> list[str]:
        return list(self.ready)

    def pod_proxy(self, method: str, pod: str, port: str, path: str, query: list[tuple[str, str]],
                  headers: dict[str, str], body: object = None, timeout: float = 15) -> tuple[int, bytes]:
        assert (port, path) == ("https:8080", "admin/v1/suppressions")
        self.calls.append((method, pod, query, headers, body))
        if pod in self.down:
            return 503, b'{"kind":"Status","message":"error trying to reach service: connection refused"}'
        if method == "POST":
            assert isinstance(body, dict)
            return 200, json.dumps({"mta": pod, "received": len(body["entries"]),
                                    "changed": len(body["entries"]) - 1}).encode()
        if method == "DELETE":
            return 200, json.dumps({"mta": pod, "address": query[0][1],
                                    "removed": query[0][1] == "u0@example.com"}).encode()
        params = dict(query)
        limit = int(params["limit"])
        page = [e for e in self.entries if str(e["address"]) > params.get("after", "")][:limit]
        return 200, json.dumps({"mta": pod, "total": self.total, "entries": page,
                                "next": page[-1]["address"] if len(page) == limit else None}).encode()


def _run(kube: FakeKube, argv: list[str], monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(cli.KubeconfigReader, "connect", classmethod(lambda *a, **k: kube))
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    return code, out, err


def test_list_pages_through_one_ready_mta_and_says_when_more_match(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(["main-mta-0", "main-mta-1"], down=frozenset({"main-mta-0"}))
    code, out, _ = _run(kube, ["suppressions", "list", "--limit", "2"], monkeypatch, capsys)
    assert code == 0
    assert "u0@example.com" in out
    assert "u1@example.com" in out
    assert "u2@example.com" not in out
    assert out.strip().endswith("2 shown of 3 on the list; more match: raise --limit or narrow with "
                                "--prefix / --reason")
    assert [c[1] for c in kube.calls] == ["main-mta-0", "main-mta-1", "main-mta-1"]  # the next Ready one
    headers = kube.calls[-1][3]
    assert headers == {TOKEN_HEADER: TOKEN, ACTOR_HEADER: "alice@example.com"}
    code, out, _ = _run(FakeKube(["main-mta-0"]), ["suppressions", "list", "-o", "json"], monkeypatch, capsys)
    assert json.loads(out)["more"] is False
    assert len(json.loads(out)["entries"]) == 3


def test_export_follows_next_until_null(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(["main-mta-0"], total=10_001)
    code, out, _ = _run(kube, ["suppressions", "export"], monkeypatch, capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 10_001
    assert json.loads(lines[0]) == kube.entries[0]
    assert [dict(c[2]).get("after") for c in kube.calls] == [None, kube.entries[MAX_LIMIT - 1]["address"]]
    assert {dict(c[2])["limit"] for c in kube.calls} == {str(MAX_LIMIT)}


def test_import_checks_the_whole_file_before_sending_and_posts_batches(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("email\na@example.com\nnot an address\n")
    kube = FakeKube(["main-mta-0"])
    code, _, err = _run(kube, ["suppressions", "import", str(bad)], monkeypatch, capsys)
    assert code == 1
    assert "line 3: address:" in err
    assert kube.calls == []
    good = tmp_path / "good.txt"
    good.write_text("".join(f"user{i}@example.com\n" for i in range(7_000)))
    code, out, _ = _run(kube, ["suppressions", "import", str(good)], monkeypatch, capsys)
    assert code == 0
    assert [(c[0], len(c[4]["entries"]), c[4]["source"]) for c in kube.calls] == [
        ("POST", 5000, "Import"), ("POST", 2000, "Import")]
    assert out.strip() == "7000 received through main-mta-0, 6998 new or changed"
    code, _, err = _run(kube, ["suppressions", "import", str(tmp_path / "missing")], monkeypatch, capsys)
    assert code == 1
    assert "No such file" in err


def test_add_and_remove(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(["main-mta-0"])
    code, out, _ = _run(kube, ["suppressions", "add", "a@example.com", "B@example.com", "--reason",
                               "Complaint", "--expires-in", "7d"], monkeypatch, capsys)
    assert code == 0
    assert out.startswith("2 added through main-mta-0")
    (method, _, _, _, body), = kube.calls
    assert method == "POST"
    assert body["source"] == "Manual"
    assert [e["address"] for e in body["entries"]] == ["a@example.com", "b@example.com"]
    code, out, _ = _run(kube, ["suppressions", "remove", "U0@example.com", "x@example.com"], monkeypatch,
                        capsys)
    assert code == 0
    assert out.splitlines() == ["u0@example.com removed", "x@example.com was not on the list"]
    code, _, err = _run(kube, ["suppressions", "remove", "nobody"], monkeypatch, capsys)
    assert code == 1
    assert "address: 'nobody'" in err


def test_no_ready_mta_and_refusals_are_errors(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(FakeKube([]), ["suppressions", "list"], monkeypatch, capsys)
    assert code == 1
    assert "no Ready MTA pod of Cluster 'main'" in err
    down = FakeKube(["main-mta-0", "main-mta-1"], down=frozenset({"main-mta-0", "main-mta-1"}))
    code, _, err = _run(down, ["suppressions", "add", "a@example.com"], monkeypatch, capsys)
    assert code == 1
    assert "no Ready MTA answered" in err
    assert "connection refused" in err
    assert "nothing was sent" in err

    class Forbidden(FakeKube):
        def pod_proxy(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
            return 403, json.dumps({"kind": "Status", "message": 'pods "main-mta-0" is forbidden: cannot '
                                    'create resource "pods/proxy"'}).encode()

    code, _, err = _run(Forbidden(["main-mta-0"]), ["suppressions", "add", "a@example.com"], monkeypatch,
                        capsys)
    assert code == 1
    assert 'cannot create resource "pods/proxy"' in err


def test_the_user_of_the_context_is_the_actor(tmp_path: Any) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "dev",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "alice@example.com", "user": {"token": "t"}}, {"name": "bob", "user": {}}],
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "alice@example.com"}},
                     {"name": "ops", "context": {"cluster": "c", "user": "bob", "namespace": "mail"}}]}))
    reader = cli.KubeconfigReader.connect(str(kubeconfig), None, None, all_namespaces=False)
    assert (reader.user, reader.namespace) == ("alice@example.com", "default")
    reader = cli.KubeconfigReader.connect(str(kubeconfig), "ops", None, all_namespaces=False)
    assert (reader.user, reader.namespace) == ("bob", "mail")


def test_only_ready_pods_are_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def pod(name: str, ready: str | None) -> Any:
        conditions = None if ready is None else [client.V1PodCondition(type="Ready", status=ready)]
        return client.V1Pod(metadata=client.V1ObjectMeta(name=name),
                            status=client.V1PodStatus(conditions=conditions))

    listed = client.V1PodList(items=[pod("main-mta-1", "True"), pod("main-mta-0", "False"),
                                     pod("main-mta-2", None), pod("main-mta-3", "True")])
    monkeypatch.setattr(client.CoreV1Api, "list_namespaced_pod", lambda *a, **k: listed)
    reader = cli.KubeconfigReader(client.ApiClient(), "mail")
    assert reader.ready_pods({"app": "x"}) == ["main-mta-1", "main-mta-3"]
