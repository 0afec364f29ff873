"""The relay pod's config watcher: ``python -m mta_relay.config_watcher``.

    python -m mta_relay.config_watcher --namespace NS \\
        --manifest CLUSTER-mta-credentials --dir CREDENTIALS_DIR \\
        --config-dir CONFIG_DIR --source configmap/CLUSTER-mta-settings \\
        --source secret/CLUSTER-mta-tls=tls --source secret/CLUSTER-mta-dkim=dkim ...

Kubelet refreshes mounted ConfigMaps and Secrets only about once a minute; a deleted credential must be
refused within seconds, and a new DKIM key, rate limit or certificate must reach every MTA as fast,
without a restart. So this process watches exactly the objects the relay needs, each by name (its RBAC
allows get, list and watch on those names only), and publishes them with kubelet's layout: a new
snapshot directory, then an atomic swap of the ``DIR/..data`` symlink (``atomic_dir``), which the relay's
config loader reads and reloads. Two directories are published:

- the credential table (``--manifest``/``--dir``): the manifest Secret the operator writes last names
  the shard Secrets with their digests; shards whose digest changed are fetched and checked, and a shard
  that does not match (the operator is mid-write) is skipped: the next manifest brings a consistent set;
- the config bundle (``--config-dir``/``--source``): the settings ConfigMap and the Secrets the settings
  name (TLS, DKIM keys, the peer token, smarthost credentials), each under its own subdirectory, in one
  snapshot. It is published once every required source exists, and again whenever one changes.

Logs name objects and digests, never contents (they hold keys and password verifiers).
"""

from __future__ import annotations

import argparse
import base64
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mta_relay import logs
from mta_relay.atomic_dir import publish
from mta_relay.shards import MANIFEST_KEY, decode_manifest, digest

log = logging.getLogger("mta_relay.config_watcher")
WATCH_SECONDS = 300
BACKOFF_MAX = 10.0


@dataclass(frozen=True)
class ObjectSource:
    """One ConfigMap or Secret of the config bundle; its keys become files under ``subdir``."""

    kind: str  # "configmap" or "secret"
    name: str
    subdir: str = ""
    optional: bool = False

    @classmethod
    def parse(cls, text: str) -> ObjectSource:
        """``secret/NAME=SUBDIR``; a trailing ``?`` marks a source the bundle may go without."""
        optional = text.endswith("?")
        ref, _, subdir = text.rstrip("?").partition("=")
        kind, _, name = ref.partition("/")
        if kind not in {"configmap", "secret"} or not name or "/" in subdir or subdir.startswith("."):
            raise ValueError(f"--source {text!r}: expected configmap/NAME or secret/NAME[=SUBDIR][?]")
        return cls(kind, name, subdir, optional)


class TablePublisher:
    """Turns manifests into published snapshots; ``fetch(secret_name) -> data dict or None`` is the API
    (values in base64, as str or bytes: the kubernetes client's Secret model admits both)."""

    def __init__(self, directory: Path, fetch: Callable[[str], Mapping[str, bytes | str] | None]) -> None:
        self.directory = directory
        self.fetch = fetch
        self.current: dict[str, tuple[str, bytes]] = {}  # file name → (sha256, content)
        self.published_manifest: str | None = None

    def apply(self, manifest_text: str) -> bool:
        """Publish the table the manifest names; False when a shard is not at its digest yet."""
        if manifest_text == self.published_manifest:
            return True
        refs = decode_manifest(manifest_text)
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


class Bundle:
    """The config bundle: the latest content of each source object, published as one snapshot whenever
    it changes and every required source exists. Fed from several watch threads."""

    def __init__(self, directory: Path, sources: list[ObjectSource]) -> None:
        self.directory = directory
        self.sources = sources
        self._data: dict[ObjectSource, dict[str, bytes] | None] = {}
        self._published: dict[str, bytes] | None = None
        self._lock = threading.Lock()

    def update(self, source: ObjectSource, data: Mapping[str, bytes] | None) -> bool:
        """Record a source's content (None: it does not exist); True when a snapshot was published."""
        with self._lock:
            self._data[source] = dict(data) if data is not None else None
            files = self._files()
            if files is None or files == self._published:
                return False
            publish(self.directory, files)
            self._published = files
        log.info("config published", extra={"fields": {"files": len(files)}})
        return True

    def _files(self) -> dict[str, bytes] | None:
        files: dict[str, bytes] = {}
        for source in self.sources:
            data = self._data.get(source)
            if data is None:
                if not source.optional or source not in self._data:
                    return None  # not seen yet, or a required one is missing: keep what is published
                continue
            prefix = f"{source.subdir}/" if source.subdir else ""
            files.update({f"{prefix}{key}": value for key, value in data.items()})
        return files


def object_files(kind: str, obj: Any) -> dict[str, bytes] | None:
    """Keys and decoded values of a ConfigMap or Secret as the client returns it (None: no object)."""
    if obj is None:
        return None
    if kind == "configmap":
        return {**{k: v.encode() for k, v in (obj.data or {}).items()},
                **{k: base64.b64decode(v) for k, v in (obj.binary_data or {}).items()}}
    return {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}


def _follow(lister: Callable[..., Any], namespace: str, name: str, on_change: Callable[[Any], object],
            stop: threading.Event) -> None:
    """List then watch one object by name, for ever; ``on_change(obj or None)`` on every state seen."""
    from kubernetes import watch

    selector = f"metadata.name={name}"
    delay = 0.5
    while not stop.is_set():
        try:
            listing = lister(namespace, field_selector=selector)
            on_change(listing.items[0] if listing.items else None)
            version = listing.metadata.resource_version
            for event in watch.Watch().stream(lister, namespace, field_selector=selector,
                                              resource_version=version, timeout_seconds=WATCH_SECONDS,
                                              allow_watch_bookmarks=True):
                if event["type"] in {"ADDED", "MODIFIED"}:
                    on_change(event["object"])
                elif event["type"] == "DELETED":
                    on_change(None)
                delay = 0.5
        except Exception as error:  # API away or watch expired: list again after a short backoff
            log.warning("watch interrupted", extra={"fields": {
                "object": name, "error": type(error).__name__, "status": getattr(error, "status", None)}})
            stop.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX)


def run(namespace: str, kubeconfig: str | None, manifest: str | None, directory: Path | None,
        config_dir: Path | None, sources: list[ObjectSource]) -> None:
    from kubernetes import client, config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    v1 = client.CoreV1Api()
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        threads.append(thread)

    if config_dir is not None and sources:
        bundle = Bundle(config_dir, sources)
        listers = {"configmap": v1.list_namespaced_config_map, "secret": v1.list_namespaced_secret}

        def follow_source(source: ObjectSource) -> None:
            _follow(listers[source.kind], namespace, source.name,
                    lambda obj: bundle.update(source, object_files(source.kind, obj)), stop)

        for source in sources:
            start(functools.partial(follow_source, source), f"watch-{source.name}")
    if manifest and directory is not None:
        def fetch(name: str) -> Mapping[str, bytes | str] | None:
            try:
                return v1.read_namespaced_secret(name, namespace).data
            except client.ApiException as error:
                if error.status == 404:
                    return None
                raise

        table = TablePublisher(directory, fetch)

        def on_manifest(obj: Any) -> None:
            data = (obj.data or {}) if obj is not None else {}
            if MANIFEST_KEY in data:
                table.apply(base64.b64decode(data[MANIFEST_KEY]).decode())

        start(lambda: _follow(v1.list_namespaced_secret, namespace, manifest, on_manifest, stop),
              "watch-manifest")
    while all(t.is_alive() for t in threads):
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mta_relay.config_watcher",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--manifest", help="name of the credential table's manifest Secret")
    parser.add_argument("--dir", type=Path, help="credentials directory of the relay")
    parser.add_argument("--config-dir", type=Path, help="where the config bundle is published")
    parser.add_argument("--source", action="append", default=[], type=ObjectSource.parse,
                        help="configmap/NAME or secret/NAME[=SUBDIR][?] (repeatable; ? = optional)")
    parser.add_argument("--kubeconfig", help="default: the pod's service account")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if bool(args.manifest) != bool(args.dir):
        parser.error("--manifest and --dir go together")
    if bool(args.config_dir) != bool(args.source):
        parser.error("--config-dir and --source go together")
    if not args.manifest and not args.config_dir:
        parser.error("nothing to watch: give --manifest/--dir, --config-dir/--source, or both")
    logs.setup(args.log_level)
    # In its container this process is PID 1, for which the kernel drops a signal whose action is the
    # default: without a handler, kubelet's SIGTERM would be ignored and every pod deletion would wait out
    # the grace period for the SIGKILL. Nothing here needs finishing: a snapshot is published atomically.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit)
    run(args.namespace, args.kubeconfig, args.manifest, args.dir, args.config_dir, args.source)
    return 0


def _exit(signum: int, _frame: object) -> None:
    log.info("stopping", extra={"fields": {"event": "watcher_stopping",
                                           "signal": signal.Signals(signum).name}})
    raise SystemExit(0)


if __name__ == "__main__":
    raise SystemExit(main())
