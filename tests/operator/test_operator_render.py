"""Pure renderer tests: CRs in, desired objects out, no API server."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from mta_operator import naming
from mta_operator.api import Cluster, DkimAlgorithm, SendingDomain, SmtpCredential
from mta_operator.keys import dkim as dkim_keys
from mta_operator.keys import managed_tls
from mta_operator.reconcile.cluster import domain_entries
from mta_operator.reconcile.index import DkimState, Index
from mta_operator.render import conditions, dns_records, relay_config, secrets, services, workload
from mta_relay import config_loader
from mta_relay.passwords import fast_verifier, verify_fast

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _examples(kind: str) -> list[dict]:
    docs = [d for f in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return [d for d in docs if d["kind"] == kind]


def _with_uid(doc: dict) -> dict:
    return {**doc, "metadata": {**doc["metadata"], "uid": f"uid-{doc['metadata']['name']}"}}


@pytest.fixture
def cluster() -> Cluster:
    return Cluster.model_validate(_with_uid(_examples("Cluster")[0]))


@pytest.fixture
def creds() -> list[SmtpCredential]:
    return [SmtpCredential.model_validate(_with_uid(d)) for d in _examples("SmtpCredential")]


def _entries() -> list[relay_config.DomainEntry]:
    return [relay_config.DomainEntry("example.com", "mta2025", DkimAlgorithm.RSA, True),
            relay_config.DomainEntry("notify.example.org", "mta", DkimAlgorithm.ED25519, False)]


def test_operator_relay_files_load_in_the_relay(cluster: Cluster, creds: list[SmtpCredential],
                                               tmp_path: Path) -> None:
    settings = relay_config.relay_settings(cluster, _entries())
    mechs = relay_config.mechanisms(cluster)
    entries = [relay_config.credential(c, fast_verifier("pw-" + c.metadata.name), mechs) for c in creds]
    for path, text in relay_config.relay_files(settings, entries).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    loaded = config_loader.load(tmp_path)
    assert loaded.settings.hostname == "smtp.example.com"
    assert [(s.port, s.public_port) for s in loaded.settings.smtp_listeners] == [
        (10025, 25), (10587, 587), (12587, 2587)]
    assert loaded.settings.rate_limit is not None
    assert loaded.settings.rate_limit.period_seconds == 60
    assert loaded.settings.domains[0].dkim is not None
    assert loaded.settings.domains[0].dkim.key_file == "dkim/example.com.pem"  # in the watcher's snapshot
    assert loaded.settings.tls.cert_file == "tls/tls.crt"
    assert loaded.settings.queue.min_retry_interval_seconds == 300
    assert loaded.settings.domains[1].dkim is None
    by_user = {c.username: c for c in loaded.credentials}
    assert set(by_user) == {"billing", "newsletter@example.com", "helpdesk", "scanner-3rd-floor",
                            "crm+mailer@example.com"}
    assert verify_fast(by_user["billing"].password_verifier or "", b"pw-billing")
    assert by_user["billing"].quota is not None
    assert by_user["billing"].quota.messages == 10000
    assert by_user["scanner-3rd-floor"].password_verifier is None
    assert [str(n) for n in by_user["newsletter@example.com"].allowed_ips] == ["10.20.0.0/16",
                                                                              "2001:db8:20::/48"]


def test_operator_summary(creds: list[SmtpCredential]) -> None:
    got = {c.metadata.name: relay_config.summary(c) for c in creds}
    assert got == {"billing": "1 domain, all IPs", "newsletter": "Cluster domains, 2 IPs",
                   "helpdesk": "All domains, all IPs", "scanner-3rd-floor": "1 domain, 2 IPs",
                   "crm": "2 domains, all IPs"}


def _spec(cluster: Cluster, **update: object) -> Cluster:
    return cluster.model_copy(update={"spec": cluster.spec.model_copy(update=update)})


def _template(cluster: Cluster, image: str = "relay:1") -> dict:
    return workload.statefulset(cluster, "main-mta-tls", workload.Image(image), 3)["spec"]["template"]


def test_operator_settings_the_relay_applies_in_place_roll_no_pod(cluster: Cluster) -> None:
    """Only image, resources, ports and pod settings are in the pod template; the rest reaches running
    MTAs through the watcher."""
    same = [_spec(cluster, mtas=7), _spec(cluster, rate_limit=None),
            _spec(cluster, queue=cluster.spec.queue.model_copy(update={"max_retry_age": "1h"})),
            _spec(cluster, smtp=cluster.spec.smtp.model_copy(update={"max_message_size": 2048}))]
    for changed in same:
        assert _template(changed) == _template(cluster)
    assert _template(cluster, "relay:2") != _template(cluster)
    ports = _spec(cluster, smtp=cluster.spec.smtp.model_copy(update={"ports": [25]}))
    assert _template(ports) != _template(cluster)
    assert "annotations" not in _template(cluster)["metadata"]


def test_operator_smtp_workers_reach_the_relay_command_and_roll_the_mtas(cluster: Cluster) -> None:
    relay = _template(cluster)["spec"]["containers"][0]
    assert "--workers" not in relay["args"]  # unset: the relay sizes itself from its CPU limit
    four = _spec(cluster, smtp=cluster.spec.smtp.model_copy(update={"workers": 4}))
    args = _template(four)["spec"]["containers"][0]["args"]
    assert args[args.index("--workers") + 1] == "4"
    with pytest.raises(ValueError, match="workers"):
        Cluster.model_validate({**cluster.model_dump(by_alias=True, mode="json"),
                                "spec": {**cluster.spec.model_dump(by_alias=True, mode="json"),
                                         "smtp": {"workers": 9}}})


def test_operator_statefulset_is_restricted_owned_and_keeps_volumes(cluster: Cluster) -> None:
    sts = workload.statefulset(cluster, "main-mta-tls", workload.Image("relay:1"), 4)
    assert sts["kind"] == "StatefulSet"
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "uid-main"
    assert sts["metadata"]["ownerReferences"][0]["controller"] is True
    assert sts["spec"]["replicas"] == 4  # what the caller decided (spec.mtas or more during a hand-off)
    assert sts["spec"]["serviceName"] == naming.headless("main")
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                                   "whenScaled": "Retain"}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool"
    assert claim["spec"]["resources"]["requests"]["storage"] == cluster.spec.queue.storage.size
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert sts["spec"]["selector"]["matchLabels"] == naming.workload_selector("main")
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    for container in pod["containers"] + pod["initContainers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    relay = pod["containers"][0]
    assert all(p["containerPort"] >= 1024 for p in relay["ports"])
    assert relay["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert relay["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                  "limits": {"memory": "512Mi"}}
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in relay["env"]
    watcher = pod["initContainers"][0]
    assert watcher["restartPolicy"] == "Always"
    assert "secret/main-mta-tls=tls" in watcher["command"]
    assert "configmap/main-mta-settings" in watcher["command"]
    mounts = {m["mountPath"]: m["name"] for m in relay["volumeMounts"]}
    assert mounts["/var/spool/mta"] == "spool"
    assert {"/tmp", relay_config.CREDENTIALS_DIR, relay_config.CONFIG_DIR} <= set(mounts)
    assert all("secret" not in v and "configMap" not in v for v in pod["volumes"])  # the watcher's job


def test_operator_ephemeral_spool_is_an_empty_dir(cluster: Cluster) -> None:
    storage = cluster.spec.queue.storage.model_copy(update={"ephemeral": True, "storage_class_name": None})
    ephemeral = _spec(cluster, queue=cluster.spec.queue.model_copy(update={"storage": storage}))
    sts = workload.statefulset(ephemeral, "main-mta-tls", workload.Image("relay:1"), 3)
    assert "volumeClaimTemplates" not in sts["spec"]
    (spool,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "spool"]
    assert spool["emptyDir"]["sizeLimit"] == storage.size


def test_operator_role_is_limited_to_what_the_watcher_follows(cluster: Cluster) -> None:
    secrets_rule, maps_rule = workload.role(cluster, "main-mta-tls")["rules"]
    assert secrets_rule["resources"] == ["secrets"]
    assert set(secrets_rule["verbs"]) == {"get", "list", "watch"}
    names = secrets_rule["resourceNames"]
    assert names[:2] == ["main-mta-credentials", "main-mta-credentials-000"]
    assert {"main-mta-tls", "main-mta-dkim", "main-mta-peer", "main-mta-admin"} <= set(names)
    assert len(names) == naming.MAX_SHARDS + 1 + 4 + (1 if cluster.spec.delivery.smarthost else 0)
    assert maps_rule == {"apiGroups": [""], "resources": ["configmaps"],
                         "resourceNames": ["main-mta-settings"], "verbs": ["get", "list", "watch"]}


def test_operator_handoff_settings_name_the_peers_by_pod_ip(cluster: Cluster) -> None:
    section = relay_config.handoff(leaving=["main-mta-2"], peers=[("main-mta-1", "198.18.0.7"),
                                                                 ("main-mta-0", "fd00::5")])
    settings = relay_config.relay_settings(cluster, _entries(), section)
    assert settings.handoff is not None
    assert settings.handoff.token_file == "peer/token"
    assert settings.handoff.leaving == ["main-mta-2"]
    assert [(p.name, p.url) for p in settings.handoff.peers] == [
        ("main-mta-0", "https://[fd00::5]:8080"), ("main-mta-1", "https://198.18.0.7:8080")]


def test_operator_services(cluster: Cluster) -> None:
    svc = services.client_service(cluster)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    assert [p["port"] for p in svc["spec"]["ports"]] == [25, 587, 2587, 8443]
    head = services.headless_service(cluster)
    assert head["spec"]["clusterIP"] == "None"
    assert head["spec"]["publishNotReadyAddresses"] is False
    assert "annotations" not in head["metadata"]  # LoadBalancer publishes its own address
    internal = cluster.model_copy(update={"spec": cluster.spec.model_copy(update={
        "service": cluster.spec.service.model_copy(update={"type": "ClusterIP",
                                                           "external_traffic_policy": None})})})
    assert services.headless_service(internal)["metadata"]["annotations"] == {
        services.EXTERNAL_DNS: "smtp.example.com"}
    assert services.EXTERNAL_DNS not in services.client_service(internal)["metadata"].get("annotations", {})
    assert services.disruption_budget(cluster) is not None
    single = cluster.model_copy(update={"spec": cluster.spec.model_copy(update={"mtas": 1})})
    assert services.disruption_budget(single) is None


def test_operator_table_manifest_names_digests(cluster: Cluster, creds: list[SmtpCredential]) -> None:
    from mta_relay.shards import MANIFEST_KEY, decode_manifest, digest, render_shards

    entries = [relay_config.credential(c, fast_verifier("x"), ["PLAIN"]) for c in creds]
    shards = render_shards(entries)
    objects, manifest = secrets.table(cluster, shards)
    listing = decode_manifest(base64.b64decode(manifest["data"][MANIFEST_KEY]).decode())
    assert [ref.secret for ref in listing] == sorted(objects)
    for ref in listing:
        text = base64.b64decode(objects[ref.secret]["data"][ref.key]).decode()
        assert digest(text) == ref.sha256


def test_operator_connection_secret(cluster: Cluster, creds: list[SmtpCredential]) -> None:
    newsletter = next(c for c in creds if c.metadata.name == "newsletter")
    obj = secrets.connection_secret(newsletter, cluster, "p@ss/word")
    data = {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
    assert data["username"] == "newsletter@example.com"
    assert data["port"] == "587"
    assert data["url"] == "smtp://newsletter%40example.com:p%40ss%2Fword@smtp.example.com:587"
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "SmtpCredential"
    byo = secrets.connection_secret(newsletter, cluster, None)
    assert "password" not in byo["data"]


@pytest.mark.parametrize("algorithm", [DkimAlgorithm.RSA, DkimAlgorithm.ED25519])
def test_operator_dkim_records_verify(algorithm: DkimAlgorithm) -> None:
    domain = SendingDomain.model_validate({"kind": "SendingDomain", "metadata": {"name": "d", "uid": "u1"},
                                           "spec": {"clusterRef": {"name": "main"}, "domain": "example.com",
                                                    "dkim": {"algorithm": str(algorithm)}}})
    pem = dkim_keys.generate(algorithm, 2048)
    assert dkim_keys.algorithm_of(pem) == algorithm
    wanted = dns_records.records(domain, "_spf.smtp.example.com", dkim_keys.txt_value(pem))
    published = {r.name: [r.value] for r in wanted}
    checked, message = dns_records.verify(wanted, published)
    assert all(r.verified for r in checked)
    assert message == ""
    other = dkim_keys.txt_value(dkim_keys.generate(algorithm, 2048))
    published["mta._domainkey.example.com"] = [other]
    del published["_mta-operator.example.com"]
    checked, message = dns_records.verify(wanted, published)
    assert [r.purpose for r in checked if not r.verified] == ["DKIM", "Ownership"]
    assert "DKIM TXT at mta._domainkey.example.com does not match" in message
    assert "Ownership TXT at _mta-operator.example.com is missing" in message


def test_operator_managed_tls_renews_before_expiry() -> None:
    ca = managed_tls.new_ca("main CA", NOW)
    serving = managed_tls.issue(ca, "smtp.example.com", NOW)
    assert not managed_tls.needs_reissue(serving, ca, "smtp.example.com", NOW)
    assert managed_tls.needs_reissue(serving, ca, "other.example.com", NOW)
    assert managed_tls.needs_reissue(serving, ca, "smtp.example.com", NOW + dt.timedelta(days=61))
    assert managed_tls.needs_reissue(serving, managed_tls.new_ca("x", NOW), "smtp.example.com", NOW)
    assert not managed_tls.needs_new_ca(ca, NOW)


def test_operator_condition_transition_time_changes_only_on_flip() -> None:
    first = conditions.put([], "Ready", False, "Reconciling", "", 1, NOW)
    later = NOW + dt.timedelta(minutes=1)
    same = conditions.put(first, "Ready", False, "Waiting", "x", 2, later)
    assert same[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    flipped = conditions.put(same, "Ready", True, "Ready", "", 2, later)
    assert flipped[0]["lastTransitionTime"] == conditions.now_text(later)
    assert conditions.status_of(flipped, "Ready") == "True"


def test_operator_table_renders_only_changed_shards_and_matches_a_full_render() -> None:
    from mta_operator.reconcile.table import render
    from mta_relay import config as rc
    from mta_relay.shards import render_shards

    def entry(i: int, ip: str = "10.0.0.0/8") -> rc.Credential:
        return rc.Credential(username=f"app-{i:04d}", password_verifier=fast_verifier("x" * 32),
                             domains=rc.Domains(mode="AnyDomain"), allowed_ips=[ip])

    entries = [entry(i) for i in range(3000)]
    first = render(entries, {}, set(), budget=64 * 1024)
    assert first == render_shards(entries, budget=64 * 1024)
    assert len(first) > 4
    entries[7] = entry(7, "192.0.2.1")
    del entries[100]
    again = render(entries, first, {"app-0007", "app-0100"}, budget=64 * 1024)
    assert again == render_shards(entries, budget=64 * 1024)
    assert sum(again[name] != first[name] for name in first) <= 2


def test_operator_table_mixed_assignment_is_fully_rerendered() -> None:
    from mta_operator.reconcile.table import consistent, render
    from mta_relay import config as rc
    from mta_relay.shards import render_shards

    entries = [rc.Credential(username=f"u{i}", password_verifier=fast_verifier("x" * 32),
                             domains=rc.Domains(mode="AnyDomain")) for i in range(50)]
    two = render_shards(entries, budget=4096)
    users = {name: [c["username"] for c in json.loads(text)["credentials"]] for name, text in two.items()}
    assert consistent(users)
    names = sorted(users)
    swapped = {names[0]: users[names[1]], names[1]: users[names[0]], **{n: users[n] for n in names[2:]}}
    assert not consistent(swapped)
    assert render(entries, {name: "" for name in two}, set(), budget=4096) == two


def test_operator_a_domain_waits_for_its_dkim_key(cluster: Cluster) -> None:
    """A signing domain enters the relay settings only with its key: its mail is refused for the seconds
    until the key exists, never sent unsigned."""
    index = Index()
    ck = ("mail", "main")
    index.clusters[ck] = cluster
    for doc in _examples("SendingDomain"):
        domain = SendingDomain.model_validate(_with_uid(doc))
        index.domains[Index.key(domain)] = domain
    ctl = SimpleNamespace(index=index)
    signing = [k for k, d in index.domains.items() if d.spec.dkim.enabled]
    assert signing
    entries, keys = domain_entries(ctl, ck)  # type: ignore[arg-type]
    assert {e.domain for e in entries} == {d.spec.domain for d in index.domains.values()
                                          if not d.spec.dkim.enabled}
    assert keys == {}
    pem = dkim_keys.generate(DkimAlgorithm.ED25519, 2048)
    for key in signing:
        index.dkim[key] = DkimState(pem, DkimAlgorithm.ED25519)
    entries, keys = domain_entries(ctl, ck)  # type: ignore[arg-type]
    assert {e.domain for e in entries} == {d.spec.domain for d in index.domains.values()}
    assert all(e.dkim for e in entries if e.domain in {index.domains[k].spec.domain for k in signing})
    assert set(keys) == {relay_config.dkim_file_name(index.domains[k].spec.domain) for k in signing}


def test_operator_implicit_tls_ports_reach_service_pod_and_relay(cluster: Cluster) -> None:
    smtp = cluster.spec.smtp.model_copy(update={"implicit_tls_ports": [465], "trace_client_address": False})
    with_465 = _spec(cluster, smtp=smtp)
    service = services.client_service(with_465)
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert service_ports["smtps-465"] == (465, 10465)
    assert service_ports["smtp-587"] == (587, 10587)
    relay = workload.statefulset(with_465, "main-mta-tls", workload.Image("relay:1"), 3)[
        "spec"]["template"]["spec"]["containers"][0]
    assert {"name": "smtps-465", "containerPort": 10465, "protocol": "TCP"} in relay["ports"]
    settings = relay_config.relay_settings(with_465, _entries())
    listeners = {lst.public_port: lst.implicit_tls for lst in settings.smtp_listeners}
    assert listeners == {25: False, 587: False, 2587: False, 465: True}
    assert settings.trace.client_address is False


def test_operator_webhook_secrets_are_watched_optional_and_named_in_the_settings(cluster: Cluster) -> None:
    events = cluster.spec.events.model_validate({"webhooks": [
        {"name": "app-events", "url": "https://hooks.example.com/mta", "secretRef": {"name": "hook"},
         "types": ["Delivery", "Bounce"], "credentials": ["billing"]}]})
    with_hook = _spec(cluster, events=events)
    names = workload.role(with_hook, "main-mta-tls")["rules"][0]["resourceNames"]
    assert "hook" in names
    sts = workload.statefulset(with_hook, "main-mta-tls", workload.Image("relay:1"), 3)
    (watcher,) = sts["spec"]["template"]["spec"]["initContainers"]
    assert "secret/hook=webhook-app-events?" in watcher["command"]
    assert "secret/main-mta-admin=admin" in watcher["command"]
    settings = relay_config.relay_settings(with_hook, [])
    (hook,) = settings.events.webhooks
    assert (hook.url, hook.secret_file, hook.types, hook.credentials) == (
        "https://hooks.example.com/mta", "webhook-app-events/secret", ["Delivery", "Bounce"], ["billing"])
    assert settings.cluster == cluster.metadata.name


def test_operator_suppression_settings_and_bypass_reach_the_relay(
        cluster: Cluster, creds: list[SmtpCredential], tmp_path: Path) -> None:
    default = relay_config.relay_settings(cluster, [])
    assert default.suppression.model_dump() == {"enabled": True, "classes": ["InvalidRecipient"],
                                                "expire_after_seconds": None}
    spec = cluster.spec.suppression.model_validate(
        {"enabled": False, "classes": ["InvalidRecipient", "BadDomain"], "expireAfter": "720h"})
    settings = relay_config.relay_settings(_spec(cluster, suppression=spec), [])
    assert settings.suppression.model_dump() == {
        "enabled": False, "classes": ["InvalidRecipient", "BadDomain"], "expire_after_seconds": 720 * 3600}
    bypass = creds[0].model_copy(update={"spec": creds[0].spec.model_copy(
        update={"bypass_suppression_list": True})})
    mechs = relay_config.mechanisms(cluster)
    entries = [relay_config.credential(c, fast_verifier("pw"), mechs) for c in (bypass, *creds[1:])]
    for path, text in relay_config.relay_files(settings, entries).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    loaded = config_loader.load(tmp_path)
    assert loaded.settings.suppression.expire_after_seconds == 720 * 3600
    assert loaded.settings.suppression.classes == ["InvalidRecipient", "BadDomain"]
    bypassing = {c.username for c in loaded.credentials if c.bypass_suppressions}
    assert bypassing == {bypass.effective_username}


def test_operator_delivery_tls_policy_reaches_the_relay(cluster: Cluster) -> None:
    doc = cluster.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"]["delivery"] = {"mode": "MX", "tlsPolicy": "Dane",
                               "dnssecResolver": {"nameservers": ["127.0.0.1"], "port": 5353}}
    tls = relay_config.relay_settings(Cluster.model_validate(doc), _entries()).delivery.tls
    assert (tls.policy, tls.ca_file) == ("Dane", None)  # the test-only CA setting is never rendered
    assert tls.dnssec_resolver is not None
    assert (tls.dnssec_resolver.nameservers, tls.dnssec_resolver.port) == (["127.0.0.1"], 5353)
    assert relay_config.relay_settings(cluster, _entries()).delivery.tls.policy == "Auto"
