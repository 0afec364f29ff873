"""``mta-operator local``: render the manifests (``manifests``), print what a person needs once, then hand
the config directory to the relay's own serving loop (``mta_relay.cli.serve``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from mta_relay import logs
from mta_relay.cli import serve

from .manifests import LISTEN_ADDRESS, ManifestError, default_state_dir, pick_cluster, read_manifests, render


def _ports(pairs: list[str]) -> dict[int, int]:
    ports = {}
    for pair in pairs:
        public, _, local = pair.partition("=")
        if not (public.isdigit() and local.isdigit()):
            raise ManifestError(f"--port {pair!r}: expected PUBLIC=LOCAL, e.g. 587=2587")
        ports[int(public)] = int(local)
    return ports


def run_local(args: argparse.Namespace) -> int:
    state = args.state_dir or default_state_dir()
    try:
        found = read_manifests(args.directory, args.namespace)
        for warning in found.warnings:  # as kubectl apply warns: the object is still used, the field not
            print(f"Warning: {warning}", file=sys.stderr)
        cluster = pick_cluster(found, args.cluster)
        ports = _ports(args.port)
        done = render(found, cluster, state, ports, args.http_port)
    except (ManifestError, OSError) as exc:
        print(f"mta-operator local: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    print(f"Cluster {cluster.metadata.name} ({cluster.spec.hostname}) on {LISTEN_ADDRESS}:", file=out)
    for line in done.endpoints:
        print(f"  {line}", file=out)
    print(f"  CA certificate: {state / 'tls' / 'ca.crt'} (the certificate names {cluster.spec.hostname})",
          file=out)
    for line in done.skipped:
        print(f"  not served: {line}", file=out)
    for line in done.notes:
        print(f"  note: {line}", file=out)
    if done.new_passwords:
        print("Generated passwords (shown once; kept in the state directory, mode 0600):", file=out)
        for user, password in sorted(done.new_passwords.items()):
            print(f"  {user}: {password}", file=out)
    if done.dns:
        print("DNS records to publish:", file=out)
        for line in done.dns:
            print(f"  {line}", file=out)
    out.flush()
    if args.render_only:
        return 0
    print("Serving; Ctrl-C stops.", file=out)
    out.flush()
    logs.setup(args.log_level)
    return asyncio.run(serve(done.config_dir, LISTEN_ADDRESS))
