"""``mta-operator``: the operator's command line.

    mta-operator run [--kubeconfig PATH] [--namespace NS] [--relay-image IMAGE] ...

``run`` starts the kopf operator: one namespace, several (``--namespace`` repeated) or all; with
``--leader-election-namespace`` several replicas may run and one leads (``leader``). ``local -f DIR`` serves
manifests from a directory on loopback without Kubernetes (``local/manifests.py`` renders, the relay serves).
Rendering CRs into relay config needs no API access (``render.relay_config.relay_files``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import socket
from pathlib import Path

import kopf
from kubernetes import config

from .controller.controller import Controller
from .controller.leader import LEASE_NAME, LeaderElector
from .handlers import register
from .kube.client import KubeClient
from .metrics import OperatorMetrics
from .options import Options


def _api_client(kubeconfig: str | None, workers: int):  # type: ignore[no-untyped-def]
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it too
        client = config.new_client_from_config(config_file=kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        from kubernetes import client as k8s

        client = k8s.ApiClient()
    client.rest_client.pool_manager.connection_pool_kw["maxsize"] = workers + 4
    return client


def _run(args: argparse.Namespace) -> int:
    namespaces = tuple(dict.fromkeys(args.namespace))
    options = Options(relay_image=args.relay_image, image_pull_policy=args.image_pull_policy,
                      namespaces=namespaces, workers=args.workers, table_debounce=args.table_debounce,
                      resync_seconds=args.resync_seconds, dns_nameserver=args.dns_nameserver,
                      dns_check_seconds=args.dns_check_seconds)
    kopf.configure(debug=args.log_level == "DEBUG", verbose=args.log_level in {"DEBUG", "INFO"},
                   log_format=kopf.LogFormat.JSON)
    logging.getLogger().setLevel(args.log_level)
    if args.log_level != "DEBUG":  # one line per handled event is noise at 10,000 objects
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kube = KubeClient(_api_client(args.kubeconfig, args.workers))
    controller = Controller(kube, options)
    elector = None
    if args.leader_election_namespace:
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{secrets.token_hex(4)}"
        elector = LeaderElector(kube, args.leader_election_namespace, identity, args.leader_election_name)
    if args.metrics_port is not None:
        metrics = OperatorMetrics(lambda: elector is None or elector.leading)
        metrics.serve(args.metrics_port, args.metrics_address)
    registry = kopf.OperatorRegistry()
    register(registry, controller, elector)
    # standalone: kopf's own peering stays off; the Lease decides who works (see controller/leader.py).
    asyncio.run(kopf.operator(registry=registry, standalone=True, clusterwide=not namespaces,
                              namespaces=list(namespaces), liveness_endpoint=args.liveness))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mta-operator", description=__doc__.splitlines()[0].strip("`: "))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against a cluster")
    run.add_argument("--kubeconfig", help="default: in-cluster, else $KUBECONFIG / ~/.kube/config")
    run.add_argument("--namespace", action="append", default=[],
                     help="watch this namespace (repeat for several; default: all namespaces)")
    run.add_argument("--leader-election-namespace",
                     help="run as one of several replicas: the one holding the Lease mta-operator in this "
                          "namespace reconciles, the others stand by (default: no election, run alone)")
    run.add_argument("--leader-election-name", default=LEASE_NAME, help="name of that Lease")
    run.add_argument("--relay-image", default=Options.relay_image)
    run.add_argument("--image-pull-policy", default=Options.image_pull_policy)
    run.add_argument("--workers", type=int, default=Options.workers)
    run.add_argument("--table-debounce", type=float, default=Options.table_debounce,
                     help="seconds to coalesce credential changes into one table write")
    run.add_argument("--resync-seconds", type=float, default=Options.resync_seconds)
    run.add_argument("--dns-nameserver", help="host[:port] for DNS record checks (default: system resolver)")
    run.add_argument("--dns-check-seconds", type=float, default=Options.dns_check_seconds)
    run.add_argument("--liveness", help="e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (plain HTTP, "
                                                       "/metrics; default: not served)")
    # every interface by default: in a pod, Prometheus scrapes from another pod's address
    run.add_argument("--metrics-address", default="0.0.0.0", help="address for --metrics-port")  # noqa: S104
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    loc = sub.add_parser("local", help="serve Cluster/SendingDomain/SmtpCredential manifests from a "
                                        "directory on loopback, without Kubernetes")
    loc.add_argument("-f", "--filename", dest="directory", type=Path, required=True,
                     help="directory of manifests (Cluster, SendingDomain, SmtpCredential, Secret)")
    loc.add_argument("--cluster", help="which Cluster, when the directory has several")
    loc.add_argument("--namespace", default="default", help="for manifests without one")
    loc.add_argument("--state-dir", type=Path, default=None,
                     help="passwords, keys, certificate, spool (default ~/.local/state/mta-operator/local)")
    loc.add_argument("--port", action="append", default=[], metavar="PUBLIC=LOCAL",
                     help="listen on LOCAL for the Cluster's SMTP port PUBLIC (default PUBLIC+10000)")
    loc.add_argument("--http-port", type=int, default=None)
    loc.add_argument("--render-only", action="store_true", help="write the config and exit")
    loc.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.command == "local":
        from .local.cli import run_local

        return run_local(args)
    return _run(args)
