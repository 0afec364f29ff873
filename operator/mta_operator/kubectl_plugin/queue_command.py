"""`kubectl mta queue ls|show|retry|bounce|suspend|resume`: asks every MTA of a Cluster through the API
server's pod proxy (the user's own RBAC: ``get`` on ``pods/proxy`` to look, ``create`` to act, and ``get``
on the Cluster's admin token Secret) and merges the answers (``queue_view``). The kubeconfig user goes in
the ``X-MTA-Actor`` header: every action is logged on the MTAs with it."""

from __future__ import annotations

import argparse
import base64
import json
import time
from typing import Any

from mta_relay.admin_api import ACTOR_HEADER, TOKEN_HEADER
from mta_relay.queue_admin import MESSAGES_PATH, QUEUE_PATH

from mta_operator import naming
from mta_operator.render.relay_config import ADMIN_TOKEN_KEY, HTTP_PORT

from . import queue_view
from .kube import KubeconfigReader, NotFound

ACTION_TIMEOUT = 75  # seconds: an MTA gives its delivery process 60 s to answer (a large bounce)


def add_parser(commands: Any) -> None:
    queue = commands.add_parser(
        "queue", help="the MTAs' queues: what waits, and retry, return, suspend or resume it",
        description="Asks every MTA of the Cluster through the API server's pod proxy and merges the "
                    "answers. Needs get on the Cluster's admin token Secret, and on pods/proxy get (ls, "
                    "show) or create (retry, bounce, suspend, resume). Every action is logged on the MTAs "
                    "with your kubeconfig user.")
    actions = queue.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("ls", help="messages by destination (recipient domain), state and age")
    show = actions.add_parser("show", help="one message: envelope and each recipient's state")
    show.add_argument("id", metavar="ID", help="queue id (kubectl mta messages shows it)")
    show.add_argument("--body", action="store_true", help="also print the message itself (logged on the MTA)")
    retry = actions.add_parser("retry", help="try queued mail now")
    retry.add_argument("id", metavar="ID", nargs="?", help="queue id")
    retry.add_argument("--domain", help="every message with a recipient in this domain")
    retry.add_argument("--all", action="store_true", help="every message")
    bounce = actions.add_parser(
        "bounce", help="return queued mail to its sender: a DSN (never to the null sender), AdminBounce "
                       "events",
        description="Returns the recipients still to be delivered (with --domain: those in that domain) to "
                    "the sender with a DSN that quotes --reason; mail from the null sender (<>) is dropped "
                    "without a DSN. Recipients are not added to the suppression list.")
    bounce.add_argument("id", metavar="ID", nargs="?", help="queue id")
    bounce.add_argument("--domain", help="the recipients in this domain, in every message")
    bounce.add_argument("--sender", help="every message from this envelope sender (<> for the null sender)")
    bounce.add_argument("--reason", required=True, help="why: one line, quoted in the DSN and the events")
    holds = [actions.add_parser(verb, help=text) for verb, text in (
        ("suspend", "hold mail to a domain, or from a credential: it stays queued, never bounced for it, "
                    "across restarts"),
        ("resume", "deliver suspended mail again"))]
    for sub in holds:
        sub.add_argument("--domain", help="recipient domain")
        sub.add_argument("--credential", help="SmtpCredential username")
    for sub in (ls, show, retry, bounce, *holds):
        sub.add_argument("--cluster", help="the Cluster (default: the only one in the namespace)")
        sub.add_argument("-o", "--output", choices=["text", "json"], default="text")


def run(kube: KubeconfigReader, args: argparse.Namespace) -> int:
    """Prints the merged answer; 1 when an MTA did not answer an action (it may hold what was meant)."""
    try:
        request = _request(args)
    except ValueError as error:
        raise NotFound(str(error)) from None
    cluster = _cluster(kube, args.cluster)
    token = kube.secret_data(naming.admin(cluster)).get(ADMIN_TOKEN_KEY)
    if not token:
        raise NotFound(f"Secret {naming.admin(cluster)!r} has no {ADMIN_TOKEN_KEY}")
    headers = {TOKEN_HEADER: token}
    actor = "".join(c for c in kube.user if " " <= c <= "~")[:200]
    if actor:  # a header is ASCII; the API server's audit log has who authenticated
        headers[ACTOR_HEADER] = actor
    pods = kube.pods(naming.pod_selector(cluster))
    if not pods:
        raise NotFound(f"no MTA pods of Cluster {cluster!r} in namespace {kube.namespace}")
    method, path, query, body = request
    answers: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    absent = 0  # MTAs that answered 404 for a queue id: it is on another one
    for pod in pods:
        status, raw = kube.pod_proxy(method, pod, f"https:{HTTP_PORT}", path.lstrip("/"), query, headers,
                                     body, timeout=ACTION_TIMEOUT if method == "POST" else 15)
        if status == 200:
            answers[pod] = json.loads(raw)
        elif status == 404 and _by_id(args) and _error(raw).startswith("queue id"):
            absent += 1
        elif 400 <= status < 500 and status not in (401, 403, 404):  # the request itself: every MTA says so
            raise NotFound(f"{pod}: HTTP {status}: {_error(raw)}")
        else:
            failed[pod] = f"HTTP {status}: {_error(raw)}"
    if not answers:
        if absent and not failed:
            raise NotFound(f"queue id {args.id} is not queued on any MTA of Cluster {cluster!r} "
                           "(delivered, returned, or never accepted)")
        raise NotFound("no MTA answered: " + "; ".join(f"{pod}: {why}"
                                                       for pod, why in sorted(failed.items())))
    print(_render(args, answers, failed))
    return 1 if failed and args.action not in ("ls", "show") else 0


def _request(args: argparse.Namespace) -> tuple[str, str, list[tuple[str, str]], object]:
    """(method, path, query, JSON body) for the action; ValueError names a bad option before any call."""
    if args.action == "ls":
        return "GET", QUEUE_PATH, [], None
    if args.action == "show":
        queue_view.selector(("id",), queue_id=args.id)  # checks the id
        return "GET", f"{MESSAGES_PATH}/{args.id}", [("body", "true")] if args.body else [], None
    if args.action == "retry":
        body: dict[str, Any] = queue_view.selector(("id", "domain", "all"), queue_id=args.id,
                                                   domain=args.domain, everything=args.all)
    elif args.action == "bounce":
        body = {**queue_view.selector(("id", "domain", "sender"), queue_id=args.id, domain=args.domain,
                                      sender=args.sender), "reason": queue_view.reason(args.reason)}
    else:
        body = queue_view.target(domain=args.domain, credential=args.credential)
    return "POST", f"{QUEUE_PATH}/{args.action}", [], body


def _by_id(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "id", None))


def _render(args: argparse.Namespace, answers: dict[str, dict[str, Any]], failed: dict[str, str]) -> str:
    now = time.time()
    if args.action == "show":
        (_pod, answer), *_ = sorted(answers.items())  # a queue id is on one MTA
        encoded = answer.get("body_base64")
        if args.output == "json":
            return json.dumps(answer, indent=2)
        return queue_view.render_show(answer, now, base64.b64decode(encoded) if encoded is not None else None)
    if args.output == "json":
        merged = queue_view.merged_ls(answers) if args.action == "ls" else {"answers": answers}
        return json.dumps({**merged, "unanswered": failed}, indent=2)
    if args.action == "ls":
        return queue_view.render_ls(answers, failed, now)
    return queue_view.render_action(args.action, answers, failed)


def _cluster(kube: KubeconfigReader, given: str | None) -> str:
    if given:
        return given
    names = [c["metadata"]["name"] for c in kube.list("Cluster")]
    if len(names) != 1:
        raise NotFound(f"{len(names)} Clusters in namespace {kube.namespace}: pass --cluster NAME")
    return str(names[0])


def _error(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error") or body[:200].decode("utf-8", "replace"))
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
