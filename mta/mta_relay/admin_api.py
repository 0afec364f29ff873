"""The MTA's admin API: ``GET /admin/v1/messages``, the events this MTA holds about messages (its local
store, ``events.store``), for ``kubectl mta messages``; ``/admin/v1/suppressions``, the Cluster's
suppression list (this MTA's copy, which reaches the others within seconds), for
``kubectl mta suppressions``; ``/admin/v1/queue...``, this MTA's queue: summary, one entry, retry, bounce,
suspend and resume (``queue_admin`` owns the paths and shapes), for ``kubectl mta queue``. The queue lives
in the delivery process: these handlers pass each request over the channel and await its answer.

People reach it through the Kubernetes API (the pods' proxy subresource), with their own RBAC: they
need ``pods/proxy`` on the MTA pods and ``get`` on the Cluster's admin token Secret, whose token goes in
the ``X-MTA-Admin-Token`` header (the API server consumes ``Authorization``). Never an SMTP credential:
a credential's password opens submission only, and the admin token opens only this API. Answers hold
addresses, usernames and reply lines, never a message body — except the one entry's message that
``GET /admin/v1/queue/messages/<id>?body=true`` asks for, which is logged (who, which entry; never the
content).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from mta_relay import config_loader, queue_admin
from mta_relay.config import RelaySettings
from mta_relay.delivery.process import DeliveryProcess
from mta_relay.events import from_config as events_config
from mta_relay.events.record import EventType
from mta_relay.events.store import EventStore
from mta_relay.spool import CorruptEntry
from mta_relay.suppressions import store
from mta_relay.suppressions.store import SuppressionStore

TOKEN_HEADER = "X-MTA-Admin-Token"  # noqa: S105 - a header name
MESSAGES_PATH = "/admin/v1/messages"
SUPPRESSIONS_PATH = "/admin/v1/suppressions"
ACTOR_HEADER = "X-MTA-Actor"
MAX_ADD_BYTES = 8 << 20  # MAX_LIMIT entries of up to ~800 bytes
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
_TEXT_FILTERS = ("recipient", "sender", "credential", "message_id", "queue_id")
_MAX_FILTER_LENGTH = 998
log = logging.getLogger("mta_relay.admin")


class Admin:
    """What the admin API needs from the relay: the token in force and the event store."""

    def __init__(self, config_dir: Path, settings: Callable[[], RelaySettings], pod_name: str | None,
                 store: Callable[[], EventStore],
                 suppressions: Callable[[], SuppressionStore | None] = lambda: None,
                 delivery: Callable[[], DeliveryProcess | None] = lambda: None) -> None:
        self.config_dir, self._settings, self.pod_name, self.store = config_dir, settings, pod_name, store
        self.suppressions = suppressions
        self.delivery = delivery  # the front door's handle on the delivery process, which holds the queue
        self.token: bytes | None = None
        self.reload()

    def reload(self) -> None:
        self.token = read_token(self.config_dir, self._settings())

    @property
    def store_path(self) -> Path:
        return events_config.store_path(self.config_dir, self._settings())


ADMIN_KEY = web.AppKey("admin", Admin)


def read_token(config_dir: Path, settings: RelaySettings) -> bytes | None:
    """The admin token; None without ``adminTokenFile`` or a readable, non-empty file."""
    return config_loader.read_token(config_dir, settings.admin_token_file)


def token_ok(presented: str | None, token: bytes | None) -> bool:
    if token is None or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8", "replace"), token)


class BadQuery(ValueError):
    """A query parameter the API cannot use; the message names it."""


def parse_query(query: dict[str, str]) -> dict[str, Any]:
    """The store query from the request's parameters: ``recipient``, ``sender``, ``credential``,
    ``message_id``, ``queue_id`` (exact), ``since`` (Unix seconds), ``type`` (comma-separated event
    types), ``limit`` (1-10000)."""
    unknown = sorted(set(query) - {*_TEXT_FILTERS, "since", "type", "limit"})
    if unknown:
        raise BadQuery(f"unknown parameter {unknown[0]!r}")
    found: dict[str, Any] = {}
    for name in _TEXT_FILTERS:
        value = query.get(name)
        if value is not None:
            if not value or len(value) > _MAX_FILTER_LENGTH:
                raise BadQuery(f"{name}: empty or longer than {_MAX_FILTER_LENGTH} characters")
            found[name] = value
    if "since" in query:
        try:
            since = float(query["since"])
        except ValueError:
            raise BadQuery("since: Unix seconds expected, such as 1767225600") from None
        if not math.isfinite(since) or since < 0:
            raise BadQuery("since: Unix seconds expected, such as 1767225600")
        found["since"] = since
    if "type" in query:
        names = [t for t in query["type"].split(",") if t]
        known = {str(t) for t in EventType}
        bad = [t for t in names if t not in known]
        if bad or not names:
            raise BadQuery(f"type: unknown event type {bad[0] if bad else ''!r}; one of {sorted(known)}")
        found["types"] = frozenset(names)
    limit = query.get("limit", str(DEFAULT_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise BadQuery(f"limit: a whole number from 1 to {MAX_LIMIT}")
    found["limit"] = int(limit)
    return found


def _unauthorized(request: web.Request) -> web.Response | None:
    """404 without an admin token on this MTA, 401 without the right one; None: go on."""
    admin = request.app[ADMIN_KEY]
    if admin.token is None:
        return web.json_response({"error": "the admin API is not configured on this MTA"}, status=404)
    if not token_ok(request.headers.get(TOKEN_HEADER), admin.token):
        return web.json_response({"error": f"{TOKEN_HEADER}: missing or wrong"}, status=401)
    return None


async def messages(request: web.Request) -> web.Response:
    admin = request.app[ADMIN_KEY]
    refused = _unauthorized(request)
    if refused is not None:
        return refused
    try:
        criteria = parse_query(dict(request.query))
    except BadQuery as error:
        return web.json_response({"error": str(error)}, status=400)
    path = admin.store_path
    if not path.exists():
        return web.json_response({"mta": admin.pod_name or "", "events": []})
    events = await asyncio.to_thread(_query, admin.store, criteria)
    return web.json_response({"mta": admin.pod_name or "", "events": events})


def _query(store: Callable[[], EventStore], criteria: dict[str, Any]) -> list[dict[str, Any]]:
    return [event.to_json() for event in store().query(**criteria)]


def _refused(request: web.Request) -> web.Response | None:
    refused = _unauthorized(request)
    if refused is not None:
        return refused
    if request.app[ADMIN_KEY].suppressions() is None:
        return web.json_response({"error": "no suppression list on this MTA"}, status=404)
    return None


def _actor(request: web.Request) -> str:
    """Who asks, as the client says (``kubectl mta`` sends the kubeconfig user; the API server's audit
    log has the authenticated one)."""
    return request.headers.get(ACTOR_HEADER, "").strip()[:store.MAX_BY] or "admin API"


async def list_suppressions(request: web.Request) -> web.Response:
    """``?address=`` one entry; else a page by address: ``prefix``, ``reason``, ``after`` (the last address
    of the previous page), ``limit`` (1-10000). ``next`` is the cursor of the following page, or null."""
    refused = _refused(request)
    if refused is not None:
        return refused
    suppressions = request.app[ADMIN_KEY].suppressions()
    assert suppressions is not None
    query = dict(request.query)
    unknown = sorted(set(query) - {"address", "prefix", "reason", "after", "limit"})
    if unknown:
        return web.json_response({"error": f"unknown parameter {unknown[0]!r}"}, status=400)
    mta = request.app[ADMIN_KEY].pod_name or ""
    if "address" in query:
        found = await asyncio.to_thread(suppressions.lookup, query["address"])
        return web.json_response({"mta": mta, "entries": [found.to_json()] if found else [], "next": None})
    limit = query.get("limit", str(DEFAULT_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        return web.json_response({"error": f"limit: a whole number from 1 to {MAX_LIMIT}"}, status=400)
    page = await asyncio.to_thread(suppressions.query, prefix=query.get("prefix", "").lower(),
                                   reason=query.get("reason", ""), after=query.get("after", ""),
                                   limit=int(limit))
    # The total on the first page only: counting a million rows on each page of an export is waste.
    total = None if query.get("after") else await asyncio.to_thread(suppressions.count)
    return web.json_response({"mta": mta, "total": total, "entries": [e.to_json() for e in page],
                              "next": page[-1].address if len(page) == int(limit) else None})


async def add_suppressions(request: web.Request) -> web.Response:
    """Body: ``{"source": "Manual"|"Import", "entries": [{"address", "reason"?, "detail"?, "expires"?}]}``
    (at most ``MAX_LIMIT`` entries per request). All or nothing: one bad entry refuses the request, 400
    naming it (``entries[3].address``)."""
    refused = _refused(request)
    if refused is not None:
        return refused
    suppressions = request.app[ADMIN_KEY].suppressions()
    assert suppressions is not None
    body = bytearray()
    # Read here, not with request.read(): the app's body cap is the message size limit, made for mail.
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > MAX_ADD_BYTES:
            return web.json_response({"error": f"body: at most {MAX_ADD_BYTES} bytes per request"},
                                     status=413)
    try:
        entries = parse_entries(bytes(body), _actor(request))
    except BadQuery as error:
        return web.json_response({"error": str(error)}, status=400)
    changed = await asyncio.to_thread(suppressions.put, entries)
    log.info("suppressions added", extra={"fields": {"event": "suppressions_added", "entries": len(entries),
                                                      "changed": changed, "by": _actor(request)}})
    return web.json_response({"mta": request.app[ADMIN_KEY].pod_name or "", "received": len(entries),
                              "changed": changed})


async def remove_suppression(request: web.Request) -> web.Response:
    """``?address=``: lifted on every MTA within seconds (a removal travels as an entry does)."""
    refused = _refused(request)
    if refused is not None:
        return refused
    suppressions = request.app[ADMIN_KEY].suppressions()
    assert suppressions is not None
    try:
        gone = store.tombstone(request.query.get("address", ""), added_by=_actor(request))
    except store.BadEntry as error:
        return web.json_response({"error": str(error)}, status=400)
    present = await asyncio.to_thread(suppressions.lookup, gone.address)
    await asyncio.to_thread(suppressions.put, [gone])
    log.info("suppression removed", extra={"fields": {
        "event": "suppression_removed", "recipient": gone.address, "by": gone.added_by}})
    return web.json_response({"mta": request.app[ADMIN_KEY].pod_name or "", "address": gone.address,
                              "removed": present is not None})


def parse_entries(body: bytes, actor: str, now: float | None = None) -> list[store.Entry]:
    """The entries of an add request, each checked; BadQuery names the first bad field."""
    try:
        raw = json.loads(body)
    except ValueError:
        raise BadQuery("body: a JSON object expected") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise BadQuery("entries: a list expected")
    source = raw.get("source", "Manual")
    if source not in ("Manual", "Import"):
        raise BadQuery("source: Manual or Import")
    if len(raw["entries"]) > MAX_LIMIT:
        raise BadQuery(f"entries: at most {MAX_LIMIT} per request")
    now = time.time() if now is None else now
    found = []
    for i, item in enumerate(raw["entries"]):
        if not isinstance(item, dict) or not isinstance(item.get("address"), str):
            raise BadQuery(f"entries[{i}].address: a string expected")
        expires = item.get("expires")
        if expires is not None and (not isinstance(expires, int | float) or not math.isfinite(expires)):
            raise BadQuery(f"entries[{i}].expires: Unix seconds or null")
        try:
            found.append(store.entry(item["address"], reason=str(item.get("reason") or store.MANUAL_REASON),
                                     source=source, added_by=actor, detail=str(item.get("detail") or ""),
                                     now=now, expires=None if expires is None else float(expires)))
        except store.BadEntry as error:
            raise BadQuery(f"entries[{i}].{error}") from None
    return found


# --- the queue ------------------------------------------------------------------------------------
def _queue_refused(request: web.Request) -> web.Response | None:
    refused = _unauthorized(request)
    if refused is not None:
        return refused
    if request.app[ADMIN_KEY].delivery() is None:
        return web.json_response({"error": "delivery is not running on this MTA"}, status=503)
    return None


async def _ask(request: web.Request, op: dict[str, Any]) -> tuple[int, dict[str, object]]:
    delivery = request.app[ADMIN_KEY].delivery()
    assert delivery is not None
    return await delivery.queue_admin(op)


async def queue_list(request: web.Request) -> web.Response:
    """``GET /admin/v1/queue``: messages by destination, state and age; the suspensions in force."""
    refused = _queue_refused(request)
    if refused is not None:
        return refused
    try:
        op = queue_admin.list_request(dict(request.query))
    except queue_admin.BadParameter as error:
        return web.json_response({"error": str(error)}, status=400)
    status, body = await _ask(request, op)
    return web.json_response(body, status=status)


async def queue_show(request: web.Request) -> web.Response:
    """``GET /admin/v1/queue/messages/<id>``: envelope and each recipient's state; ``?body=true`` adds
    the message (``body_base64``), read from this process's spool: it never crosses the channel."""
    refused = _queue_refused(request)
    if refused is not None:
        return refused
    queue_id = request.match_info["queue_id"]
    try:
        op, with_body = queue_admin.show_request(queue_id, dict(request.query))
    except queue_admin.BadParameter as error:
        return web.json_response({"error": str(error)}, status=400)
    status, body = await _ask(request, op)
    if status == 200 and with_body:
        delivery = request.app[ADMIN_KEY].delivery()
        assert delivery is not None
        try:
            entry = await asyncio.to_thread(delivery.spool.read, queue_id)
        except FileNotFoundError:
            return web.json_response({"error": f"queue id {queue_id} left the queue meanwhile"}, status=404)
        except CorruptEntry:
            return web.json_response({"error": f"queue id {queue_id}: the entry is corrupt (it will be "
                                               "quarantined at its next attempt)"}, status=409)
        body["body_base64"] = base64.b64encode(entry.message).decode()
        log.info("queued message shown", extra={"fields": {
            "event": "queue_show_body", "queue_id": queue_id, "by": _actor(request)}})
    return web.json_response(body, status=status)


async def queue_action(request: web.Request) -> web.Response:
    """``POST /admin/v1/queue/{retry,bounce,suspend,resume}`` with a JSON body (see ``queue_admin``)."""
    refused = _queue_refused(request)
    if refused is not None:
        return refused
    if request.match_info["action"] not in queue_admin.ACTIONS:
        return web.json_response({"error": f"no such action: one of {', '.join(queue_admin.ACTIONS)}"},
                                 status=404)
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 14):
        body += chunk
        if len(body) > queue_admin.MAX_BODY:
            return web.json_response({"error": f"body: at most {queue_admin.MAX_BODY} bytes"}, status=413)
    try:
        try:
            raw = json.loads(body) if body else {}
        except ValueError:
            raise queue_admin.BadParameter("body", "a JSON object expected") from None
        op = queue_admin.action_request(request.match_info["action"], raw, _actor(request))
    except queue_admin.BadParameter as error:
        return web.json_response({"error": str(error)}, status=400)
    status, answer = await _ask(request, op)
    return web.json_response(answer, status=status)


def add_routes(app: web.Application, admin: Admin) -> None:
    app[ADMIN_KEY] = admin
    app.router.add_get(MESSAGES_PATH, messages)
    app.router.add_get(SUPPRESSIONS_PATH, list_suppressions)
    app.router.add_post(SUPPRESSIONS_PATH, add_suppressions)
    app.router.add_delete(SUPPRESSIONS_PATH, remove_suppression)
    app.router.add_get(queue_admin.QUEUE_PATH, queue_list)
    app.router.add_get(queue_admin.MESSAGES_PATH + "/{queue_id}", queue_show)
    app.router.add_post(queue_admin.QUEUE_PATH + "/{action}", queue_action)
