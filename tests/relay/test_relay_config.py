"""Config model and loader: versioned, validated, sharded, read through kubelet's atomic swaps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mta_relay import atomic_dir, config_loader
from mta_relay.config import Credential, CredentialShard
from mta_relay.passwords import argon2_verifier, fast_verifier, generate_password
from mta_relay.shards import render_shards
from pydantic import ValidationError
from relaykit import password_credential, settings, write_config, write_volume


def _settings(tmp_path: Path, **extra) -> dict:
    return settings([2525], 8080, tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "spool", **extra)


def test_loads_kubelet_style_volumes(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "cfg"
    write_config(cfg_dir, _settings(tmp_path), [password_credential("app", "pw")])
    cfg = config_loader.load(cfg_dir)
    assert [c.username for c in cfg.credentials] == ["app"]
    assert cfg.settings.smtp_listeners[0].port == 2525
    write_volume(cfg_dir / "credentials", {
        "credentials-000.json": json.dumps({"credentials": [password_credential("a2", "pw")]}),
        "credentials-001.json": json.dumps({"credentials": [password_credential("b2", "pw")]}),
    })
    assert [c.username for c in config_loader.load(cfg_dir).credentials] == ["a2", "b2"]


def test_fingerprint_changes_on_swap(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "cfg"
    write_config(cfg_dir, _settings(tmp_path), [password_credential("app", "pw")])
    cfg = config_loader.load(cfg_dir)
    before = config_loader.fingerprint(cfg_dir, cfg.settings)
    assert before == config_loader.fingerprint(cfg_dir, cfg.settings)
    write_volume(cfg_dir / "credentials", {"credentials-000.json": json.dumps({"credentials": []})})
    assert before != config_loader.fingerprint(cfg_dir, cfg.settings)


def test_the_fingerprint_names_the_settings_generation_it_saw(tmp_path: Path) -> None:
    published = tmp_path / "published"
    first = atomic_dir.publish(published, {"relay.yaml": b"hostname: a\n"})
    seen = config_loader.fingerprint(published, None)
    assert config_loader.snapshot_name(seen) == first.name != ""
    second = atomic_dir.publish(published, {"relay.yaml": b"hostname: b\n"})
    again = config_loader.fingerprint(published, None)
    assert config_loader.snapshot_name(again) == second.name != first.name
    plain = tmp_path / "plain"
    plain.mkdir()
    assert config_loader.snapshot_name(config_loader.fingerprint(plain, None)) == "plain"
    assert config_loader.snapshot_name(("changing",)) == ""


def test_broken_config_names_file_and_field_never_the_secret(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "cfg"
    canary = "CANARY-" + generate_password()
    bad = password_credential("app", "pw", mechanisms=["CRAM-MD5"], cramMd5Secret=canary, quota="lots")
    write_config(cfg_dir, _settings(tmp_path), [bad])
    with pytest.raises(config_loader.ConfigError) as info:
        config_loader.load(cfg_dir)
    assert "credentials-000.json" in str(info.value)
    assert "quota" in str(info.value)
    assert canary not in str(info.value)
    assert canary not in repr(info.value)


def test_unknown_field_and_version_refused(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "cfg"
    write_config(cfg_dir, _settings(tmp_path, futureThing=1), [])
    with pytest.raises(config_loader.ConfigError, match="futureThing"):
        config_loader.load(cfg_dir)
    write_config(cfg_dir, {**_settings(tmp_path), "version": 2}, [])
    with pytest.raises(config_loader.ConfigError, match="version"):
        config_loader.load(cfg_dir)


def test_yaml_error_gives_position_not_content(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "cfg"
    write_volume(cfg_dir, {"relay.yaml": "hostname: [SECRETISH\n"})
    with pytest.raises(config_loader.ConfigError) as info:
        config_loader.load(cfg_dir)
    assert "line" in str(info.value)
    assert "SECRETISH" not in str(info.value)


@pytest.mark.parametrize(("cred", "reason"), [
    ({"username": "ip", "authentication": "SourceIP", "allowedIPs": ["0.0.0.0/0"],
      "domains": {"mode": "AllClusterDomains"}}, "0.0.0.0/0"),
    ({"username": "ip", "authentication": "SourceIP", "allowedIPs": ["::/0"],
      "domains": {"mode": "AllClusterDomains"}}, "0.0.0.0/0"),
    ({"username": "ip", "authentication": "SourceIP", "domains": {"mode": "AllClusterDomains"}},
     "allowedIPs"),
    ({"username": "pw", "domains": {"mode": "AllClusterDomains"}}, "passwordVerifier"),
    ({"username": "bad name", "passwordVerifier": "x", "domains": {"mode": "AnyDomain"}}, "pattern"),
    ({"username": "c", "passwordVerifier": "x", "mechanisms": ["CRAM-MD5"],
      "domains": {"mode": "AnyDomain"}}, "cramMd5Secret"),
    ({"username": "s", "passwordVerifier": "x"}, "domains.names"),
])
def test_credential_rules(cred: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Credential.model_validate(cred)


def test_ten_thousand_credentials_fit_in_secret_sized_shards(tmp_path: Path) -> None:
    creds = [Credential.model_validate(password_credential(
        f"app-{i:05d}@tenant.example", generate_password(),
        domains={"mode": "Specific", "names": ["example.com", "mail.example.org"]},
        allowedIPs=["10.0.0.0/8", "2001:db8::/32"], quota={"messages": 1000, "period": "Hour"}))
        for i in range(10_000)]
    shards = render_shards(creds)
    assert len(shards) > 1
    # a Secret's data is base64 and the whole object is capped at 1 MiB
    assert all(len(text.encode()) * 4 / 3 < 1024 * 1024 - 4096 for text in shards.values())
    cfg_dir = tmp_path / "cfg"
    write_volume(cfg_dir, {"relay.yaml": yaml.safe_dump(_settings(tmp_path))})
    write_volume(cfg_dir / "credentials", shards)
    loaded = config_loader.load(cfg_dir)
    assert sorted(c.username for c in loaded.credentials) == sorted(c.username for c in creds)
    again = render_shards([*creds, Credential.model_validate(password_credential("new-one", "pw"))])
    assert sum(shards.get(name) != text for name, text in again.items()) == 1


def test_duplicate_username_across_shards_refused(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "cfg"
    write_volume(cfg_dir, {"relay.yaml": yaml.safe_dump(_settings(tmp_path))})
    shard = json.dumps(CredentialShard.model_validate(
        {"credentials": [password_credential("dup", "pw")]}).model_dump(mode="json", by_alias=True))
    write_volume(cfg_dir / "credentials", {"credentials-000.json": shard, "credentials-001.json": shard})
    with pytest.raises(config_loader.ConfigError, match="duplicate"):
        config_loader.load(cfg_dir)


def test_verifiers_round_trip() -> None:
    assert Credential.model_validate(password_credential("x", "pw")).password_verifier.startswith("hmac")
    assert argon2_verifier("pw").startswith("$argon2id$")
    assert fast_verifier("pw") != fast_verifier("pw")  # salted
