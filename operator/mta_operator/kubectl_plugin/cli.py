"""Command line of `kubectl mta` (kubectl runs `kubectl-mta` from PATH with the remaining arguments)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import IO, Any

import aiosmtplib
from mta_relay.admin_api import ACTOR_HEADER, MESSAGES_PATH, SUPPRESSIONS_PATH, TOKEN_HEADER
from mta_relay.suppressions import store

from mta_operator import naming
from mta_operator.render.relay_config import ADMIN_TOKEN_KEY, HTTP_PORT

from . import (
    credential_patch,
    credential_view,
    message_view,
    queue_command,
    status_view,
    suppression_view,
    zone_records,
)
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
    _suppressions_parser(commands)
    queue_command.add_parser(commands)
    return parser


def _suppressions_parser(commands: Any) -> None:
    suppressions = commands.add_parser(
        "suppressions", help="the Cluster's suppression list: recipients every MTA refuses",
        description="Reads and changes the Cluster's suppression list through one Ready MTA (the list "
                    "reaches the others within seconds), through the API server's pod proxy: needs get on "
                    "the Cluster's admin token Secret and, on pods/proxy, get (list, export), create (add, "
                    "import) and delete (remove).")
    actions = suppressions.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="entries in force, by address")
    listing.add_argument("--prefix", help="addresses starting with this, such as bob@ or a local part")
    listing.add_argument("--reason", help="only this reason, such as InvalidRecipient or Manual")
    listing.add_argument("--limit", type=int, default=1000, help="most entries shown (default 1000)")
    listing.add_argument("-o", "--output", choices=["text", "json"], default="text")
    add = actions.add_parser("add", help="put addresses on the list")
    add.add_argument("addresses", nargs="+", metavar="ADDRESS")
    add.add_argument("--reason", default=store.MANUAL_REASON,
                     help="a word such as Complaint (default Manual)")
    add.add_argument("--detail", default="", help="a note kept with each entry")
    add.add_argument("--expires-in", help="how long the entries stay, such as 30d or 12h (default: until "
                                          "removed)")
    remove = actions.add_parser("remove", help="take addresses off the list (on every MTA within seconds)")
    remove.add_argument("addresses", nargs="+", metavar="ADDRESS")
    imports = actions.add_parser(
        "import", help="add the entries of a file: JSON lines (an export) or CSV / plain text",
        description="Each line: a JSON object as export writes it, or CSV / plain text whose first field is "
                    "the address (a first line 'email' or 'address' is a header; blank lines and # comments "
                    "are skipped). Every line is checked first: a bad one is named and nothing is sent.")
    imports.add_argument("file", metavar="FILE", help="the file, or - for standard input")
    imports.add_argument("--reason", default=store.MANUAL_REASON,
                         help="reason of the CSV / plain-text lines (JSON lines carry their own; "
                              "default Manual)")
    export = actions.add_parser("export", help="every entry in force, as JSON lines (import reads them back)")
    export.add_argument("file", metavar="FILE", nargs="?", help="write here (default: standard output)")
    for sub in (listing, add, remove, imports, export):
        sub.add_argument("--cluster", help="the Cluster (default: the only one in the namespace)")


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


def _cluster_name(kube: KubeconfigReader, given: str | None) -> str:
    if given:
        return given
    names = [str(c["metadata"]["name"]) for c in kube.list("Cluster")]
    if len(names) != 1:
        raise NotFound(f"{len(names)} Clusters in namespace {kube.namespace}: pass --cluster NAME")
    return names[0]


def _admin_token(kube: KubeconfigReader, cluster: str) -> str:
    token = kube.secret_data(naming.admin(cluster)).get(ADMIN_TOKEN_KEY)
    if not token:
        raise NotFound(f"Secret {naming.admin(cluster)!r} has no {ADMIN_TOKEN_KEY}")
    return token


def _messages(kube: KubeconfigReader, args: argparse.Namespace) -> str:
    cluster = _cluster_name(kube, args.cluster)
    token = _admin_token(kube, cluster)
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
        status, body = kube.pod_proxy("GET", pod, f"https:{HTTP_PORT}", MESSAGES_PATH.lstrip("/"), params,
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


# Answers that say the MTA (or the way to it) is gone, not that it refused: the next Ready MTA is asked.
# Every suppression request may be repeated (an add merges by address, a removal of a removed one is a no-op).
_UNREACHABLE = frozenset({0, 500, 502, 503, 504})


class _Mta:
    """The admin API of one Ready MTA of a Cluster, through the pod proxy; the next Ready one when it
    stops answering (any MTA serves the whole list)."""

    def __init__(self, kube: KubeconfigReader, cluster: str) -> None:
        self.kube, self.cluster = kube, cluster
        self.pods = kube.ready_pods(naming.pod_selector(cluster))
        if not self.pods:
            raise NotFound(f"no Ready MTA pod of Cluster {cluster!r} in namespace {kube.namespace}")
        self.headers = {TOKEN_HEADER: _admin_token(kube, cluster)}
        actor = "".join(c for c in kube.user if " " <= c <= "~")[:store.MAX_BY]  # a header is ASCII
        if actor:
            self.headers[ACTOR_HEADER] = actor
        self.failed: dict[str, str] = {}

    @property
    def pod(self) -> str:
        return self.pods[0]

    def call(self, method: str, query: list[tuple[str, str]], body: object = None) -> dict[str, Any]:
        while self.pods:
            pod = self.pods[0]
            status, raw = self.kube.pod_proxy(method, pod, f"https:{HTTP_PORT}",
                                              SUPPRESSIONS_PATH.lstrip("/"), query, self.headers, body,
                                              timeout=60)
            if status in _UNREACHABLE:
                self.failed[pod] = f"HTTP {status}: {_error_text(raw)}" if status else _error_text(raw)
                self.pods.pop(0)
                continue
            if status != 200:
                raise NotFound(f"{pod} refused: HTTP {status}: {_error_text(raw)}")
            answer: dict[str, Any] = json.loads(raw)
            return answer
        raise NotFound("no Ready MTA answered: " + "; ".join(
            f"{pod}: {why}" for pod, why in sorted(self.failed.items())))


def _suppression_list(mta: _Mta, args: argparse.Namespace) -> str:
    entries: list[dict[str, Any]] = []
    after, total = None, None
    while len(entries) < args.limit:
        page = mta.call("GET", suppression_view.list_query(
            prefix=args.prefix, reason=args.reason, after=after,
            limit=min(args.limit - len(entries), suppression_view.EXPORT_PAGE)))
        entries += page.get("entries") or []
        after = page.get("next")
        if total is None:  # the first page carries the list's total
            total = page.get("total")
        if not after:
            break
    # A full last page names a cursor whether or not anything follows it: one entry more says.
    more = bool(after) and bool(mta.call("GET", suppression_view.list_query(
        prefix=args.prefix, reason=args.reason, after=after, limit=1)).get("entries"))
    if args.output == "json":
        return json.dumps({"mta": mta.pod, "total": total, "entries": entries, "more": more}, indent=2)
    return suppression_view.render(entries, total=total, now=time.time(), more=more)


def _post(mta: _Mta, source: str, entries: list[dict[str, Any]]) -> tuple[int, int]:
    """(received, changed) over the batches; an error says how much went before it."""
    received = changed = 0
    for batch in suppression_view.batches(entries):
        try:
            answer = mta.call("POST", [], suppression_view.add_body(batch, source))
        except NotFound as error:
            sent = f"{received} entries were sent before it" if received else "nothing was sent"
            raise NotFound(f"{error} ({sent}; sending again is safe)") from None
        received += int(answer.get("received") or 0)
        changed += int(answer.get("changed") or 0)
    return received, changed


def _read_lines(name: str) -> list[str]:
    try:
        if name == "-":
            return sys.stdin.read().splitlines()
        with open(name, encoding="utf-8") as text:
            return text.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise NotFound(f"{name}: {getattr(error, 'strerror', None) or error}") from None


def _export(mta: _Mta, out: IO[str]) -> int:
    count, after = 0, None
    while True:
        page = mta.call("GET", suppression_view.list_query(prefix=None, reason=None, after=after,
                                                           limit=suppression_view.EXPORT_PAGE))
        for entry in page.get("entries") or []:
            out.write(suppression_view.export_line(entry) + "\n")
            count += 1
        after = page.get("next")
        if not after:
            return count


def _suppressions(kube: KubeconfigReader, args: argparse.Namespace) -> str | None:
    """What to print, or None when the output went to standard output already (export)."""
    now = time.time()
    # Input first: a bad address or line is named before the cluster is asked anything.
    if args.action == "list" and args.limit < 1:
        raise suppression_view.BadInput(f"--limit {args.limit}: at least 1")
    if args.action == "add":
        entries = suppression_view.manual_entries(args.addresses, reason=args.reason, detail=args.detail,
                                                  expires_in=args.expires_in, now=now)
    elif args.action == "remove":
        try:
            addresses = list(dict.fromkeys(store.normalize(a) for a in args.addresses))
        except store.BadEntry as error:
            raise suppression_view.BadInput(str(error)) from None
    elif args.action == "import":
        parsed = suppression_view.parse_import(_read_lines(args.file), reason=args.reason, now=now)
        left_out = [f"{n} {what}" for n, what in ((parsed.expired, "expired"),
                                                   (parsed.duplicates, "duplicate lines")) if n]
        if not parsed.entries:
            return "nothing to import" + (f" ({', '.join(left_out)} left out)" if left_out else "")
    mta = _Mta(kube, _cluster_name(kube, args.cluster))
    if args.action == "list":
        return _suppression_list(mta, args)
    if args.action == "add":
        received, changed = _post(mta, "Manual", entries)
        return (f"{received} added through {mta.pod} ({changed} new or changed); every MTA refuses them "
                "within seconds")
    if args.action == "remove":
        lines = []
        for address in addresses:
            answer = mta.call("DELETE", [("address", address)])
            lines.append(f"{address} removed" if answer.get("removed") else f"{address} was not on the list")
        return "\n".join(lines)
    if args.action == "import":
        received, changed = _post(mta, "Import", parsed.entries)
        return (f"{received} received through {mta.pod}, {changed} new or changed"
                + (f"; left out: {', '.join(left_out)}" if left_out else ""))
    if args.file:
        try:
            with open(args.file, "w", encoding="utf-8") as out:
                count = _export(mta, out)
        except OSError as error:
            raise NotFound(f"{args.file}: {error.strerror or error}") from None
        return f"{count} entries written to {args.file} (from {mta.pod})"
    try:
        _export(mta, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (| head): not an error; stdout goes to /dev/null so exit's flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return None


def _error_text(body: bytes) -> str:
    """The MTA's ``error``, or the API server's Status ``message`` (RBAC refusals say what is missing)."""
    try:
        found = json.loads(body)
        return str(found.get("error") or found.get("message") or body[:200].decode("utf-8", "replace"))
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
        elif args.command == "suppressions":
            said = _suppressions(kube, args)
            if said is not None:
                print(said)
        elif args.command == "queue":
            return queue_command.run(kube, args)
        else:
            print(_send(kube, args))
    except (NotFound, suppression_view.BadInput) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (aiosmtplib.SMTPException, OSError) as error:
        print(f"error: the cluster did not take the message: {error}", file=sys.stderr)
        return 1
    return 0
