"""Command line of `kubectl mta` (kubectl runs `kubectl-mta` from PATH with the remaining arguments)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import aiosmtplib
from mta_relay.admin_api import MESSAGES_PATH, TOKEN_HEADER

from mta_operator import naming
from mta_operator.render.relay_config import ADMIN_TOKEN_KEY, HTTP_PORT

from . import credential_patch, credential_view, message_view, queue_command, status_view, zone_records
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
    actions = credential.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="connection details and password of a credential")
    show.add_argument("name", help="SmtpCredential name")
    show.add_argument("--reveal", action="store_true",
                      help="print the password even when stdout is not a terminal")
    rotate = actions.add_parser(
        "rotate", help="a new generated password; the current one keeps working for the grace period",
        description="Sets spec.rotation.requestedAt: the operator makes a new password, puts it in the "
                    "connection Secret once every MTA accepts it, and keeps the current one working until "
                    "the grace period ends (status.passwords shows when).")
    rotate.add_argument("name", help="SmtpCredential name")
    rotate.add_argument("--grace", help="how long the current password keeps working, such as 90m or 24h "
                                        "(sets spec.rotation.gracePeriod; default: as set there, else 24h)")
    retire = actions.add_parser("retire-old", help="stop accepting replaced passwords now",
                                description="Sets spec.rotation.retireRequestedAt: every replaced password "
                                            "still in its grace period is refused from now on.")
    retire.add_argument("name", help="SmtpCredential name")
    for verb, text in (("suspend", "refuse the credential on every MTA, keeping it and its passwords"),
                       ("resume", "accept a suspended credential again")):
        actions.add_parser(verb, help=text).add_argument("name", help="SmtpCredential name")

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

    messages = commands.add_parser(
        "messages", help="what happened to messages: each one's path through the MTAs, in time order",
        description="Asks every MTA of the cluster for the events it holds (through the API server's pod "
                    "proxy: needs get on pods/proxy and on the Cluster's admin token Secret) and merges "
                    "them.")
    messages.add_argument("--cluster", help="the Cluster (default: the only one in the namespace)")
    messages.add_argument("--credential", help="SmtpCredential username")
    messages.add_argument("--recipient", help="recipient address")
    messages.add_argument("--sender", help="envelope sender address")
    messages.add_argument("--message-id", help="Message-ID, with or without <>")
    messages.add_argument("--since", help="a duration back from now (90m, 24h, 7d) or an RFC 3339 time")
    messages.add_argument("--type", action="append", default=[],
                          help="event type (repeat or comma-separate): Reception, Delivery, "
                               "TransientFailure, Bounce, Expiration, Rejection")
    messages.add_argument("--limit", type=int, default=1000, help="most events per MTA (default 1000)")
    messages.add_argument("-o", "--output", choices=["text", "json"], default="text")
    queue_command.add_parser(commands)
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


def _credential_change(kube: KubeconfigReader, args: argparse.Namespace) -> str:
    now = dt.datetime.now(dt.UTC)
    name = args.name
    if args.action == "rotate":
        try:
            patch = credential_patch.rotate(kube.get("SmtpCredential", name), now, args.grace)
        except ValueError as error:
            raise NotFound(str(error)) from None
        said = (f"rotation requested: the new password goes to Secret {naming.connection(name)!r} once every "
                "MTA accepts it; the current one works until the expiry in status.passwords")
    elif args.action == "retire-old":
        patch, said = credential_patch.retire(now), "replaced passwords retired: only the newest works now"
    else:
        suspended = args.action == "suspend"
        patch = credential_patch.suspend(suspended)
        said = "suspended: every MTA refuses it within seconds" if suspended else "resumed"
    kube.patch("SmtpCredential", name, patch)
    return f"smtpcredential/{name} {said}"


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


def _messages(kube: KubeconfigReader, args: argparse.Namespace) -> str:
    if args.cluster:
        cluster = args.cluster
    else:
        names = [c["metadata"]["name"] for c in kube.list("Cluster")]
        if len(names) != 1:
            raise NotFound(f"{len(names)} Clusters in namespace {kube.namespace}: pass --cluster NAME")
        cluster = names[0]
    token = kube.secret_data(naming.admin(cluster)).get(ADMIN_TOKEN_KEY)
    if not token:
        raise NotFound(f"Secret {naming.admin(cluster)!r} has no {ADMIN_TOKEN_KEY}")
    message_id = args.message_id
    if message_id and not message_id.startswith("<"):
        message_id = f"<{message_id}>"
    types = [t for given in args.type for t in given.split(",") if t]
    try:
        params = message_view.query(
            recipient=args.recipient, sender=args.sender, credential=args.credential, message_id=message_id,
            since=message_view.since_seconds(args.since) if args.since else None, types=types,
            limit=args.limit)
    except ValueError as error:
        raise NotFound(str(error)) from None
    answers, failed = [], {}
    pods = kube.pods(naming.pod_selector(cluster))
    if not pods:
        raise NotFound(f"no MTA pods of Cluster {cluster!r} in namespace {kube.namespace}")
    for pod in pods:
        status, body = kube.pod_proxy_get(pod, f"https:{HTTP_PORT}", MESSAGES_PATH.lstrip("/"), params,
                                          {TOKEN_HEADER: token})
        if status == 200:
            answers.append(json.loads(body))
        else:
            failed[pod] = f"HTTP {status}: {_error_text(body)}"
    if not answers:
        raise NotFound("no MTA answered: " + "; ".join(
            f"{pod}: {why}" for pod, why in sorted(failed.items())))
    events = message_view.merge(answers)
    if args.output == "json":
        return json.dumps({"events": events, "unanswered": failed}, indent=2)
    return message_view.render(events, failed)


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error") or body[:200].decode("utf-8", "replace"))
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        kube = KubeconfigReader.connect(args.kubeconfig, args.context, args.namespace,
                            all_namespaces=getattr(args, "all_namespaces", False))
        if args.command == "status":
            print(_status(kube))
        elif args.command == "credential" and args.action == "show":
            conn = _connection(kube, args.name)
            print(credential_view.render(args.name, conn, show_password=args.reveal or sys.stdout.isatty()))
        elif args.command == "credential":
            print(_credential_change(kube, args))
        elif args.command == "dns":
            print(_dns(kube, args.domain))
        elif args.command == "messages":
            print(_messages(kube, args))
        elif args.command == "queue":
            return queue_command.run(kube, args)
        else:
            print(_send(kube, args))
    except NotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (aiosmtplib.SMTPException, OSError) as error:
        print(f"error: the cluster did not take the message: {error}", file=sys.stderr)
        return 1
    return 0
