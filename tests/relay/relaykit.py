"""Helpers for relay tests: kubelet-style config volumes and credential factories."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import yaml
from mta_relay.passwords import fast_verifier


def write_volume(volume: Path, files: dict[str, str]) -> None:
    """Write ``files`` the way kubelet updates a ConfigMap/Secret volume: a new timestamped directory,
    then an atomic swap of the ``..data`` symlink, then the old generation removed."""
    volume.mkdir(parents=True, exist_ok=True)
    generation = volume / f"..{uuid.uuid4().hex}"
    generation.mkdir()
    for name, text in files.items():
        (generation / name).write_text(text)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    tmp_link = volume / "..data_tmp"
    tmp_link.symlink_to(generation.name)
    os.replace(tmp_link, volume / "..data")
    for name in files:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")
    for entry in volume.iterdir():
        if entry.is_symlink() and entry.name not in files and not entry.name.startswith(".."):
            entry.unlink()
    if old:
        shutil.rmtree(volume / old)


def password_credential(username: str, password: str, **extra: Any) -> dict[str, Any]:
    cred: dict[str, Any] = {"username": username, "passwordVerifier": fast_verifier(password),
                            "domains": {"mode": "Specific", "names": ["example.com"]}}
    cred.update(extra)
    return cred


def settings(smtp_ports: list[int], http_port: int, cert: Path, key: Path, spool: Path,
             **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1, "hostname": "mta.test.example",
        "smtpListeners": [{"port": p, "address": "127.0.0.1"} for p in smtp_ports],
        "http": {"enabled": True, "port": http_port, "address": "127.0.0.1"},
        "tls": {"certFile": str(cert), "keyFile": str(key)},
        "queue": {"path": str(spool)},
        "domains": [{"domain": "example.com"}, {"domain": "example.org"}],
    }
    data.update(extra)
    return data


def write_config(config_dir: Path, relay_settings: dict[str, Any], credentials: list[dict[str, Any]]) -> None:
    """The settings volume (relay.yaml) and the credentials volume (one shard), both kubelet-style."""
    write_volume(config_dir, {"relay.yaml": yaml.safe_dump(relay_settings)})
    write_volume(config_dir / "credentials",
                 {"credentials-000.json": json.dumps({"version": 1, "credentials": credentials})})
