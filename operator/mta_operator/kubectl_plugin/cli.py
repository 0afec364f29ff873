"""Command line of `kubectl mta` (kubectl runs `kubectl-mta` from PATH with the remaining arguments)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import aiosmtplib

from mta_operator import naming

from . import credential_view, status_view, zone_records
from .kube import KubeconfigReader, NotFound
from .smtp_send import Submission, send, tls_context


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl mta", description="Inspect and try mta-operator's MTA "
                                     "clusters (current kubeconfig context unless told otherwise).")
    parser.add_argument("-n", "--namespace", help="namespace (default: the context's namespace)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="clusters, domains and credentials in one view")
    status.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")

    credential = commands.add_parser("credential", help="SmtpCredential details")
    show = credential.add_subparsers(dest="action", required=True).add_parser(
        "show", help="connection details and password of a credential")
    show.add_argument("name", help="SmtpCredential name")
    show.add_argument("--reveal", action="store_true",
                      help="print the password even when stdout is not a terminal")

    dns = commands.add_parser("dns", help="DNS records to publish for a domain, as zone-file lines")
    dns.add_argument("domain", help="the domain (or the SendingDomain's name)")

    test = commands.add_parser("send", help="send a test message through the credential's cluster")
    test.add_argument("--credential", required=True, help="SmtpCredential to send with")
    test.add_argument("--to", required=True, help="recipient address")
    test.add_argument("--from", dest="sender",
                      help="sender (default: mta-test@ the credential's first domain)")
    test.add_argument("--server", help="connect to HOST:PORT instead (a NodePort or port-forward); the "
                                       "certificate is still checked against the cluster's hostname")
    test.add_argument("--ca-file", help="CA certificate to trust (default: the operator-managed CA when the "
                                        "cluster uses one, else the system trust store)")
    test.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    return parser


def _status(kube: KubeconfigReader) -> str:
    return status_view.render(kube.list("Cluster"), kube.list("SendingDomain"), kube.list("SmtpCredential"),
                              all_namespaces=kube.namespace is None)


def _connection(kube: KubeconfigReader, name: str) -> credential_view.Connection:
    credential = kube.get("SmtpCredential", name)
    secret_name = (credential.get("status") or {}).get("connectionSecretName") or naming.connection(name)
    own = credential["spec"].get("passwordSecretRef")
    own_password = kube.secret_data(own["name"]).get(own.get("key", "password")) if own else None
    return credential_view.connection(credential, kube.secret_data(secret_name), own_password)


def _dns(kube: KubeconfigReader, domain: str) -> str:
    wanted = domain.rstrip(".").lower()
    match = [d for d in kube.list("SendingDomain")
             if wanted in (d["spec"].get("domain"), d["metadata"]["name"])]
    if not match:
        raise NotFound(f"no SendingDomain for {domain!r} in namespace {kube.namespace}")
    records = (match[0].get("status") or {}).get("dnsRecords") or []
    if not records:
        raise NotFound(f"SendingDomain {match[0]['metadata']['name']!r} has no DNS records in status yet")
    return zone_records.zone_lines(records)


def _cluster_ca(kube: KubeconfigReader, cluster: dict[str, Any]) -> str | None:
    """The operator-managed CA's certificate (ca.crt of the serving Secret) when the cluster uses one."""
    if cluster["spec"].get("tls"):
        return None
    return kube.secret_data(naming.tls(cluster["metadata"]["name"])).get("ca.crt")


def _send(kube: KubeconfigReader, args: argparse.Namespace) -> str:
    credential = kube.get("SmtpCredential", args.credential)
    cluster = kube.get("Cluster", credential["spec"]["clusterRef"]["name"])
    conn = _connection(kube, args.credential)
    names = (credential["spec"].get("domains") or {}).get("names") or []
    sender = args.sender or (f"mta-test@{names[0]}" if names else None)
    if sender is None:
        raise NotFound("the credential names no domain: pass --from ADDRESS")
    host, port = conn.host, conn.port
    if args.server:
        host, _, given_port = args.server.rpartition(":") if ":" in args.server else (args.server, "", "")
        port = int(given_port) if given_port else port
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as ca:
        ca_file = args.ca_file
        if ca_file is None and not args.insecure:
            pem = _cluster_ca(kube, cluster)
            if pem:
                ca.write(pem)
                ca.flush()
                ca_file = ca.name
        submission = Submission(
            host=host, port=port, sender=sender, recipient=args.to,
            username=None if conn.password is None else conn.username, password=conn.password,
            tls_context=tls_context(ca_file, verify=not args.insecure),
            tls_server_name=cluster["spec"]["hostname"])
        reply = send(submission)
    return f"sent from {sender} to {args.to} via {host}:{port} as {conn.username}: {reply}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        kube = KubeconfigReader.connect(args.kubeconfig, args.context, args.namespace,
                            all_namespaces=getattr(args, "all_namespaces", False))
        if args.command == "status":
            print(_status(kube))
        elif args.command == "credential":
            conn = _connection(kube, args.name)
            print(credential_view.render(args.name, conn, show_password=args.reveal or sys.stdout.isatty()))
        elif args.command == "dns":
            print(_dns(kube, args.domain))
        else:
            print(_send(kube, args))
    except NotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (aiosmtplib.SMTPException, OSError) as error:
        print(f"error: the cluster did not take the message: {error}", file=sys.stderr)
        return 1
    return 0
