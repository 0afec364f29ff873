"""`mta-operator local` reading manifests as the API server would: unknown fields are warned of (file and
field path, as `kubectl apply` warns) and pruned, the object still used; and every endpoint it serves is
printed with its scheme."""

from __future__ import annotations

from pathlib import Path

from localkit import NAMESPACE, cluster, credential, domain, free_port, local, write_manifests
from mta_operator.api import Cluster, crd
from mta_operator.local.manifests import read_manifests, unknown_fields
from mta_relay.config_loader import load as load_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_examples_have_no_unknown_fields() -> None:
    found = read_manifests(ROOT / "examples")
    assert found.clusters  # the walk saw them
    assert found.warnings == []


def test_unknown_fields_are_warned_of_with_file_and_path_and_the_object_is_still_used(tmp_path: Path) -> None:
    typo = cluster(smtp={"ports": [587], "maxMesageSize": 1024}, colour="blue",
                   service={"annotations": {"any.key/is-fine": "yes"}},
                   pod={"tolerations": [{"operator": "Exists", "efect": "NoSchedule"}]})
    typo["metadata"]["lables"] = {"a": "b"}
    cred = credential("app", domains={"mode": "Specific", "names": ["example.com"], "nmes": ["x.org"]})
    manifests = write_manifests(tmp_path / "m", typo, domain(), cred, name="typos.yaml")
    run = local("-f", str(manifests), "--state-dir", str(tmp_path / "state"), "--render-only")
    warned = [line for line in run.stderr.splitlines() if line.startswith("Warning:")]
    assert sorted(warned) == [
        'Warning: typos.yaml: Cluster \'main\': unknown field "metadata.lables"',
        'Warning: typos.yaml: Cluster \'main\': unknown field "spec.colour"',
        'Warning: typos.yaml: Cluster \'main\': unknown field "spec.pod.tolerations[0].efect"',
        'Warning: typos.yaml: Cluster \'main\': unknown field "spec.smtp.maxMesageSize"',
        'Warning: typos.yaml: SmtpCredential \'app\': unknown field "spec.domains.nmes"',
    ]
    assert run.returncode == 0
    config = load_config(tmp_path / "state" / "config")  # rendered all the same, defaults in place
    assert config.settings.limits.max_message_size == 26214400
    assert [c.username for c in config.credentials] == ["app"]


def test_unknown_fields_reads_maps_lists_and_nesting_from_the_crd_schema() -> None:
    schema = crd.root_schema(Cluster)
    doc = {"apiVersion": "x", "kind": "Cluster", "metadata": {"name": "a", "namespace": NAMESPACE},
           "spec": {"hostname": "h.example.com", "pod": {"nodeSelector": {"zone": "a"},
                                                          "resources": {"limits": {"memory": "1Gi"}}},
                    "delivery": {"smarthost": {"host": "x.example.com", "tsl": "Required"}}},
           "status": {"mtas": {"ready": 1, "extra": 2}}}
    assert unknown_fields(schema, doc) == ["spec.delivery.smarthost.tsl", "status.mtas.extra"]


def test_every_endpoint_is_printed_with_its_scheme(tmp_path: Path) -> None:
    smtp, http = free_port(), free_port()
    manifests = write_manifests(tmp_path / "m", cluster(smtp={"ports": [25, 587]}), domain(),
                                credential("app"))
    run = local("-f", str(manifests), "--state-dir", str(tmp_path / "state"), "--render-only",
                "--port", f"587={smtp}", "--http-port", str(http))
    assert f"smtp://127.0.0.1:{smtp}  SMTP (public port 587), STARTTLS required" in run.stdout
    assert "smtp://127.0.0.1:10025  SMTP (public port 25), STARTTLS required" in run.stdout
    assert f"https://127.0.0.1:{http}/api/inject/v1  HTTP submission" in run.stdout
    assert f"https://127.0.0.1:{http}/healthz" in run.stdout

    off = write_manifests(tmp_path / "off", cluster(http={"enabled": False}), domain(), credential("app"))
    run = local("-f", str(off), "--state-dir", str(tmp_path / "state-off"), "--render-only",
                "--http-port", str(http))
    assert f"https://127.0.0.1:{http}/api/inject/v1  HTTP submission off" in run.stdout
