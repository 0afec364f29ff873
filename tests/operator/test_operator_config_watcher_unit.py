"""The config watcher's logic without an API server: digests gate publication, only changed
shards are fetched, and each publication is one atomic ``..data`` swap the relay's loader reads."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from mta_relay.atomic_dir import snapshot
from mta_relay.config_watcher import Bundle, ObjectSource, TablePublisher
from mta_relay.passwords import fast_verifier
from mta_relay.shards import encode_manifest

pytestmark = pytest.mark.unit


def _shard(*users: str) -> str:
    return json.dumps({"version": 1, "credentials": [
        {"username": u, "passwordVerifier": fast_verifier("x" * 32), "domains": {"mode": "AnyDomain"}}
        for u in users]})


def _manifest(shards: dict[str, str]) -> str:
    return encode_manifest("main", shards)[1]


class Store:
    """Secrets by name, as the fetch callback sees them; counts reads."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}
        self.reads: list[str] = []

    def put(self, name: str, key: str, text: str) -> None:
        self.data[f"main-mta-{name}"] = {key: base64.b64encode(text.encode()).decode()}

    def fetch(self, name: str) -> dict[str, str] | None:
        self.reads.append(name)
        return self.data.get(name)


def _usernames(directory: Path) -> set[str]:
    snap = snapshot(directory)
    return {c["username"] for f in snap.glob("*.json") for c in json.loads(f.read_text())["credentials"]}


def test_operator_watcher_publishes_consistent_sets(tmp_path: Path) -> None:
    store = Store()
    shards = {"credentials-000.json": _shard("a", "b"), "credentials-001.json": _shard("c")}
    for name, text in shards.items():
        store.put(name[:-5], name, text)
    source = TablePublisher(tmp_path, store.fetch)
    assert source.apply(_manifest(shards))
    assert _usernames(tmp_path) == {"a", "b", "c"}
    first = snapshot(tmp_path)

    # Only shard 001 changes: only it is fetched; the old snapshot is removed after the swap.
    store.reads.clear()
    shards["credentials-001.json"] = _shard("c", "d")
    store.put("credentials-001", "credentials-001.json", shards["credentials-001.json"])
    assert source.apply(_manifest(shards))
    assert store.reads == ["main-mta-credentials-001"]
    assert _usernames(tmp_path) == {"a", "b", "c", "d"}
    assert not first.exists()

    # The manifest names a digest the shard does not have yet (operator mid-write): nothing published.
    ahead = dict(shards, **{"credentials-000.json": _shard("a")})
    assert not source.apply(_manifest(ahead))
    assert _usernames(tmp_path) == {"a", "b", "c", "d"}
    store.put("credentials-000", "credentials-000.json", ahead["credentials-000.json"])
    assert source.apply(_manifest(ahead))
    assert _usernames(tmp_path) == {"a", "c", "d"}


def test_operator_bundle_waits_for_required_sources_and_publishes_changes(tmp_path: Path) -> None:
    settings, tls = ObjectSource.parse("configmap/s"), ObjectSource.parse("secret/t=tls")
    dkim = ObjectSource.parse("secret/d=dkim?")
    bundle = Bundle(tmp_path, [settings, tls, dkim])
    assert not bundle.update(settings, {"relay.yaml": b"v1"})
    assert not bundle.update(tls, {"tls.crt": b"c"})  # the optional one not seen yet either
    assert bundle.update(dkim, None)
    assert (tmp_path / "relay.yaml").read_bytes() == b"v1"
    assert not bundle.update(tls, {"tls.crt": b"c"})  # unchanged: no new snapshot
    assert bundle.update(dkim, {"x.test.pem": b"k"})
    assert (tmp_path / "dkim" / "x.test.pem").read_bytes() == b"k"
    assert not bundle.update(tls, None)  # a required source went away: the last snapshot stays
    assert (tmp_path / "tls" / "tls.crt").read_bytes() == b"c"


def test_operator_source_arguments_are_checked() -> None:
    expected = ObjectSource("secret", "main-mta-dkim", "dkim", True)
    assert ObjectSource.parse("secret/main-mta-dkim=dkim?") == expected
    for bad in ("pod/x", "secret/", "secret/x=a/b", "secret/x=..data"):
        with pytest.raises(ValueError, match="--source"):
            ObjectSource.parse(bad)
