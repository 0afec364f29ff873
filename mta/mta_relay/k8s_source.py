"""The relay pod's watcher of its credential table: ``python -m mta_relay.k8s_source``.

    python -m mta_relay.k8s_source --namespace NS --manifest CLUSTER-mta-credentials --dir DIR

Kubelet refreshes mounted Secrets only about once a minute; a deleted credential must be refused within
seconds. So this process watches the one manifest Secret the operator writes last (its RBAC allows get,
list and watch on exactly the table's Secrets, by name), fetches the shard Secrets whose digest changed,
checks every digest, and publishes the complete set into DIR as a new snapshot with an atomic swap of
the ``DIR/..data`` symlink, the layout the relay's config loader already reads and reloads. A shard that
does not match its digest (the operator is mid-write) is skipped: the next manifest brings a consistent set.

Logs name Secrets and digests, never contents (they hold password verifiers).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mta_relay import logs

log = logging.getLogger("mta_relay.k8s_source")
DATA = "..data"
WATCH_SECONDS = 300
BACKOFF_MAX = 10.0


@dataclass(frozen=True)
class ShardRef:
    secret: str
    key: str
    sha256: str


def parse_manifest(text: str) -> list[ShardRef]:
    doc = json.loads(text)
    if doc.get("version") != 1:
        raise ValueError(f"unknown manifest version {doc.get('version')!r}")
    return [ShardRef(s["secret"], s["key"], s["sha256"]) for s in doc["shards"]]


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def publish(directory: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` as a new snapshot and swap ``DIR/..data`` to it atomically; remove the old one."""
    directory.mkdir(parents=True, exist_ok=True)
    snapshot = Path(tempfile.mkdtemp(prefix="..snap_", dir=directory))
    for name, content in files.items():
        (snapshot / name).write_bytes(content)
    snapshot.chmod(0o755)
    link = directory / DATA
    old = link.resolve() if link.is_symlink() else None
    tmp = directory / "..data_tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(snapshot.name)
    os.replace(tmp, link)  # rename(2) over the old link: readers see the old or the new set, never a mix
    if old is not None and old != snapshot:
        shutil.rmtree(old, ignore_errors=True)
    return snapshot


class Source:
    """Turns manifests into published snapshots; ``fetch(secret_name) -> data dict or None`` is the API."""

    def __init__(self, directory: Path, fetch: Callable[[str], Mapping[str, str] | None]) -> None:
        self.directory = directory
        self.fetch = fetch
        self.current: dict[str, tuple[str, bytes]] = {}  # file name → (sha256, content)
        self.published_manifest: str | None = None

    def apply(self, manifest_text: str) -> bool:
        """Publish the table the manifest names; False when a shard is not at its digest yet."""
        if manifest_text == self.published_manifest:
            return True
        refs = parse_manifest(manifest_text)
        files: dict[str, tuple[str, bytes]] = {}
        for ref in refs:
            have = self.current.get(ref.key)
            if have and have[0] == ref.sha256:
                files[ref.key] = have
                continue
            data = self.fetch(ref.secret) or {}
            content = base64.b64decode(data.get(ref.key, ""))
            if digest(content) != ref.sha256:
                log.info("shard not at the manifest's digest yet; waiting for the next manifest",
                         extra={"fields": {"secret": ref.secret}})
                return False
            files[ref.key] = (ref.sha256, content)
        publish(self.directory, {name: content for name, (_, content) in files.items()})
        self.current = files
        self.published_manifest = manifest_text
        log.info("credential table published", extra={"fields": {"shards": len(files)}})
        return True


def _manifest_text(secret: Any, key: str = "manifest.json") -> str | None:
    data = (secret.data or {}) if secret is not None else {}
    return base64.b64decode(data[key]).decode() if key in data else None


def run(namespace: str, manifest: str, directory: Path, kubeconfig: str | None) -> None:
    from kubernetes import client, config, watch

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    v1 = client.CoreV1Api()

    def fetch(name: str) -> Mapping[str, str] | None:
        try:
            return v1.read_namespaced_secret(name, namespace).data
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    source = Source(directory, fetch)
    selector = f"metadata.name={manifest}"
    delay = 0.5
    while True:
        try:
            listing = v1.list_namespaced_secret(namespace, field_selector=selector)
            for item in listing.items:
                text = _manifest_text(item)
                if text:
                    source.apply(text)
            version = listing.metadata.resource_version
            for event in watch.Watch().stream(v1.list_namespaced_secret, namespace, field_selector=selector,
                                              resource_version=version, timeout_seconds=WATCH_SECONDS,
                                              allow_watch_bookmarks=True):
                if event["type"] in {"ADDED", "MODIFIED"}:
                    text = _manifest_text(event["object"])
                    if text:
                        source.apply(text)
                delay = 0.5
        except Exception as error:  # API away or watch expired: list again after a short backoff
            log.warning("watch interrupted", extra={"fields": {
                "error": type(error).__name__, "status": getattr(error, "status", None)}})
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mta_relay.k8s_source",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--manifest", required=True, help="name of the table's manifest Secret")
    parser.add_argument("--dir", type=Path, required=True, help="credentials directory of the relay")
    parser.add_argument("--kubeconfig", help="default: the pod's service account")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    run(args.namespace, args.manifest, args.dir, args.kubeconfig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
